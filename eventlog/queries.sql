-- Every SQL statement the application runs, each under a "-- name: <key>" header.
-- The schema itself lives only in migrations/.

-- name: lock_flow
-- Serializes appenders of one flow until COMMIT; the first key is this project's namespace.
SELECT pg_advisory_xact_lock(%(namespace)s, hashtext(%(flow_id)s::text))

-- name: lock_flows
-- The same per-flow locks for many flows, taken in one fixed order (by key) so that two
-- transactions locking overlapping sets of flows cannot deadlock.
SELECT pg_advisory_xact_lock(%(namespace)s, k)
FROM (SELECT DISTINCT hashtext(f::text) AS k FROM unnest(%(flow_ids)s::uuid[]) AS f ORDER BY k) AS keys

-- name: next_positions
-- Each flow's next free position, read under its lock (the unique index answers each max).
SELECT f, coalesce((SELECT max(e.flow_seq) + 1 FROM event_log e WHERE e.flow_id = f), 0)
FROM unnest(%(flow_ids)s::uuid[]) AS f

-- name: stored_in_ranges
-- The stored events at positions first..last of each flow: what a re-append is compared with.
SELECT e.flow_id, e.seq, e.flow_seq, e.ts, e.payload
FROM unnest(%(flow_ids)s::uuid[], %(firsts)s::int[], %(lasts)s::int[]) AS r(flow_id, first, last)
JOIN event_log e ON e.flow_id = r.flow_id AND e.flow_seq BETWEEN r.first AND r.last
ORDER BY e.flow_id, e.flow_seq

-- name: next_position
SELECT coalesce(max(flow_seq) + 1, 0) FROM event_log WHERE flow_id = %(flow_id)s

-- name: events_in_range
SELECT seq, flow_seq, ts, payload
FROM event_log
WHERE flow_id = %(flow_id)s AND flow_seq >= %(first)s AND flow_seq <= %(last)s
ORDER BY flow_seq

-- name: insert_events
-- The new events of one or many flows in ONE statement (one round trip, one parse), inserted
-- in the order given (so seq grows with flow_seq), then, when %(artifacts)s, a row per output
-- hash of each StepFinished, the lowest seq first. First producer wins, inside the statement
-- as across statements: an artifact already stored, or produced by an earlier event of this
-- statement, keeps its row (ON CONFLICT DO NOTHING skips the later ones).
-- %(events)s: JSON array of [flow_id, flow_seq, ts, event_type, payload, bodies], where bodies
-- is {hash: [kind, payload, metadata]} of the bodies that event carries; an output without one
-- is kind %(unknown_kind)s, payload JSON null; null metadata is SQL NULL.
-- Returns the new rows' (seq, flow_id, flow_seq), in the order given.
WITH batch AS (
    SELECT (e->>0)::uuid AS flow_id, (e->>1)::int AS flow_seq, (e->>2)::timestamptz AS ts,
           e->>3 AS event_type, e->4 AS payload, e->5 AS bodies, n
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS b(e, n)
), inserted AS (
    INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)
    SELECT flow_id, flow_seq, ts, event_type, payload FROM batch ORDER BY n
    RETURNING seq, flow_id, flow_seq, event_type, payload
), artifacts AS (
    INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, produced_in_seq)
    SELECT o.hash, coalesce(b.bodies->o.hash->>0, %(unknown_kind)s),
           coalesce(b.bodies->o.hash->1, 'null'::jsonb),
           nullif(b.bodies->o.hash->2, 'null'::jsonb),
           i.seq
    FROM inserted i
    JOIN batch b ON b.flow_id = i.flow_id AND b.flow_seq = i.flow_seq
    CROSS JOIN LATERAL jsonb_array_elements_text(i.payload->'StepFinished'->'outputs') AS o(hash)
    WHERE %(artifacts)s AND i.event_type = 'stepfinished'
    ORDER BY i.seq
    ON CONFLICT (artifact_hash) DO NOTHING
)
SELECT seq, flow_id, flow_seq FROM inserted ORDER BY seq

-- name: list_flow
SELECT seq, flow_seq, ts, payload FROM event_log WHERE flow_id = %(flow_id)s ORDER BY flow_seq

-- name: get_artifact
SELECT kind, payload, metadata, produced_in_seq
FROM workflow_step_artifacts
WHERE artifact_hash = %(artifact_hash)s

-- name: flow_ids
SELECT DISTINCT flow_id FROM event_log

-- name: count_flows_events
SELECT count(*) FROM event_log WHERE flow_id = ANY(%(flow_ids)s)

-- name: count_flows_artifacts
SELECT count(*)
FROM workflow_step_artifacts a
JOIN event_log e ON e.seq = a.produced_in_seq
WHERE e.flow_id = ANY(%(flow_ids)s)

-- name: count_artifacts_by_hash
SELECT count(*) FROM workflow_step_artifacts WHERE artifact_hash = ANY(%(hashes)s)
