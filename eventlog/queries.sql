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

-- name: insert_events
-- A batch of one flow in ONE statement (one round trip, one parse): its events, inserted in
-- position order (so seq grows with flow_seq), then, when %(artifacts)s, a row per output hash
-- of each StepFinished, the lowest seq first. First producer wins: an artifact already stored,
-- or produced earlier in the batch, keeps its row (ON CONFLICT DO NOTHING).
-- %(events)s: JSON array of [flow_seq, ts, event_type, payload], in position order.
-- %(bodies)s: JSON object {hash: [kind, payload, metadata]} of the bodies the batch carries;
-- an output without one is kind %(unknown_kind)s, payload JSON null; null metadata is SQL NULL.
-- Returns the new rows' seq, in position order.
WITH batch AS (
    SELECT (e->>0)::int AS flow_seq, (e->>1)::timestamptz AS ts, e->>2 AS event_type,
           e->3 AS payload, n
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS b(e, n)
), inserted AS (
    INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)
    SELECT %(flow_id)s, flow_seq, ts, event_type, payload FROM batch ORDER BY n
    RETURNING seq, flow_seq, event_type, payload
), bodies AS MATERIALIZED (
    SELECT %(bodies)s::jsonb AS b
), artifacts AS (
    INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, produced_in_seq)
    SELECT o.hash, coalesce(bodies.b->o.hash->>0, %(unknown_kind)s),
           coalesce(bodies.b->o.hash->1, 'null'::jsonb), nullif(bodies.b->o.hash->2, 'null'::jsonb),
           i.seq
    FROM inserted i
    CROSS JOIN LATERAL jsonb_array_elements_text(i.payload->'StepFinished'->'outputs') AS o(hash)
    CROSS JOIN bodies
    WHERE %(artifacts)s AND i.event_type = 'stepfinished'
    ORDER BY i.seq
    ON CONFLICT (artifact_hash) DO NOTHING
)
SELECT seq FROM inserted ORDER BY flow_seq

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
