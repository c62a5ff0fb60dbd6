-- Every SQL statement the application runs, each under a "-- name: <key>" header.
-- The schema itself lives only in migrations/.

-- name: lock_flow
-- Serializes appenders of one flow until COMMIT; the first key is this project's namespace.
SELECT pg_advisory_xact_lock(%(namespace)s, hashtext(%(flow_id)s::text))

-- name: next_position
SELECT coalesce(max(flow_seq) + 1, 0) FROM event_log WHERE flow_id = %(flow_id)s

-- name: events_in_range
SELECT seq, flow_seq, ts, payload
FROM event_log
WHERE flow_id = %(flow_id)s AND flow_seq >= %(first)s AND flow_seq <= %(last)s
ORDER BY flow_seq

-- name: insert_event
INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)
VALUES (%s, %s, %s, %s, %s::jsonb)
RETURNING seq

-- name: insert_artifact
-- First producer wins: an artifact already stored keeps its body and producer.
INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, produced_in_seq)
VALUES (%s, %s, %s::jsonb, %s::jsonb, %s)
ON CONFLICT (artifact_hash) DO NOTHING

-- name: list_flow
SELECT seq, flow_seq, ts, payload FROM event_log WHERE flow_id = %(flow_id)s ORDER BY flow_seq

-- name: get_artifact
SELECT kind, payload, metadata, produced_in_seq
FROM workflow_step_artifacts
WHERE artifact_hash = %(artifact_hash)s

-- name: flow_ids
SELECT DISTINCT flow_id FROM event_log

-- name: count_events
SELECT count(*) FROM event_log

-- name: count_artifacts
SELECT count(*) FROM workflow_step_artifacts

-- name: count_flows_events
SELECT count(*) FROM event_log WHERE flow_id = ANY(%(flow_ids)s)

-- name: count_flows_artifacts
SELECT count(*)
FROM workflow_step_artifacts a
JOIN event_log e ON e.seq = a.produced_in_seq
WHERE e.flow_id = ANY(%(flow_ids)s)

-- name: count_artifacts_by_hash
SELECT count(*) FROM workflow_step_artifacts WHERE artifact_hash = ANY(%(hashes)s)
