"""(a) ceilings: COPY and batched INSERTs at 1,000 events per transaction, writing the rows
the pipeline writes (events + the StepFinished artifact rows), and events-only variants."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from lab.bench.config import CEILING_BATCH
from lab.bench.core import Bench
from lab.bench.data import Dataset
from lab.bench.measure import Stopwatch, chunks
from lab.bench.servers import check_stored

# The ceilings' statements: the classic row-at-a-time INSERTs (run by executemany in pipeline
# mode), and the one-statement form of the store (a JSON array, one parse, one round trip).
CEILING_INSERT_EVENT = (
    "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload) "
    "VALUES (%s, %s, %s, %s, %s::jsonb) RETURNING seq"
)
CEILING_INSERT_ARTIFACT = (
    "INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, "
    "produced_in_seq) VALUES (%s, %s, %s::jsonb, %s::jsonb, %s) "
    "ON CONFLICT (artifact_hash) DO NOTHING"
)
CEILING_INSERT_JSON = """
WITH inserted AS (
    INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload)
    SELECT (e->>0)::uuid, (e->>1)::int, (e->>2)::timestamptz, e->>3, e->4
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS b(e, n) ORDER BY n
    RETURNING seq, event_type, payload
)
INSERT INTO workflow_step_artifacts (artifact_hash, kind, payload, metadata, produced_in_seq)
SELECT o.hash, 'unknown', 'null'::jsonb, NULL, i.seq
FROM inserted i
CROSS JOIN LATERAL jsonb_array_elements_text(i.payload->'StepFinished'->'outputs') AS o(hash)
WHERE i.event_type = 'stepfinished'
ORDER BY i.seq
ON CONFLICT (artifact_hash) DO NOTHING
"""


def run_ceilings(bench: Bench) -> None:
    data = bench.ceiling_data()
    variants: list[tuple[str, str, str, Callable[[Dataset], None]]] = [
        ("a.copy.events", "COPY", "events only", partial(_copy_events, bench)),
        ("a.copy", "COPY", "events + artifact rows", partial(_copy_all, bench)),
        (
            "a.insert.executemany",
            "batched INSERT, executemany (pipeline mode)",
            "events + artifact rows",
            partial(_insert_executemany, bench),
        ),
        (
            "a.insert.multirow",
            "batched INSERT, one multi-row statement",
            "events + artifact rows",
            partial(_insert_multirow, bench),
        ),
        (
            "a.insert.json",
            "batched INSERT, one statement (JSON array, as the store)",
            "events + artifact rows",
            partial(_insert_json, bench),
        ),
        (
            "a.insert.multirow.events",
            "batched INSERT, one multi-row statement",
            "events only",
            partial(_insert_multirow_events, bench),
        ),
    ]
    for key, scenario, what, write in variants:
        row = bench.new_row(key, "a", scenario, f"{what}, {CEILING_BATCH:,}/txn")

        def once(
            watch: Stopwatch, write: Callable[[Dataset], None] = write, what: str = what
        ) -> None:
            bench.reset()
            watch.start()
            write(data)
            watch.stop(len(data.events))
            if what.startswith("events +"):
                check_stored(bench.conn, data, "ceiling")

        bench.repeat(row, once)


def _copy_events(bench: Bench, data: Dataset) -> None:
    statement = "COPY event_log (flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
    with bench.conn.cursor() as cur:
        for chunk in chunks(data.rows, CEILING_BATCH):
            with cur.copy(statement) as copy:
                for row in chunk:
                    copy.write_row(row)
            bench.conn.commit()


def _copy_all(bench: Bench, data: Dataset) -> None:
    events_copy = "COPY event_log (seq, flow_id, flow_seq, ts, event_type, payload) FROM STDIN"
    artifacts_copy = (
        "COPY workflow_step_artifacts (artifact_hash, kind, payload, metadata, "
        "produced_in_seq) FROM STDIN"
    )
    with bench.conn.cursor() as cur:
        for start in range(0, len(data.rows), CEILING_BATCH):
            rows = data.rows[start : start + CEILING_BATCH]
            cur.execute(
                "SELECT nextval('event_log_seq_seq') FROM generate_series(1, %s)", (len(rows),)
            )
            seqs = [int(r[0]) for r in cur.fetchall()]
            with cur.copy(events_copy) as copy:
                for seq, row in zip(seqs, rows, strict=True):
                    copy.write_row((seq, *row))
            with cur.copy(artifacts_copy) as copy:
                for seq, hashes in zip(
                    seqs, data.outputs[start : start + CEILING_BATCH], strict=True
                ):
                    for h in hashes:
                        copy.write_row((h, "unknown", "null", None, seq))
            bench.conn.commit()


def _insert_executemany(bench: Bench, data: Dataset) -> None:
    with bench.conn.cursor() as cur:
        for start in range(0, len(data.rows), CEILING_BATCH):
            rows = data.rows[start : start + CEILING_BATCH]
            cur.executemany(CEILING_INSERT_EVENT, rows, returning=True)
            seqs = []
            while True:
                fetched = cur.fetchone()
                assert fetched is not None
                seqs.append(fetched[0])
                if not cur.nextset():
                    break
            artifacts = [
                (h, "unknown", "null", None, seq)
                for seq, hashes in zip(
                    seqs, data.outputs[start : start + CEILING_BATCH], strict=True
                )
                for h in hashes
            ]
            if artifacts:
                cur.executemany(CEILING_INSERT_ARTIFACT, artifacts)
            bench.conn.commit()


def _values(n: int, row: str) -> str:
    return ",".join([row] * n)


def _insert_multirow(bench: Bench, data: Dataset) -> None:
    with bench.conn.cursor() as cur:
        for start in range(0, len(data.rows), CEILING_BATCH):
            rows = data.rows[start : start + CEILING_BATCH]
            statement = (
                "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload) VALUES "
                + _values(len(rows), "(%s,%s,%s,%s,%s::jsonb)")
                + " RETURNING seq"
            )
            cur.execute(statement.encode(), [v for r in rows for v in r])
            seqs = [r[0] for r in cur.fetchall()]
            artifacts = [
                v
                for seq, hashes in zip(
                    seqs, data.outputs[start : start + CEILING_BATCH], strict=True
                )
                for h in hashes
                for v in (h, seq)
            ]
            if artifacts:
                statement = (
                    "INSERT INTO workflow_step_artifacts "
                    "(artifact_hash, kind, payload, metadata, produced_in_seq) VALUES "
                    + _values(len(artifacts) // 2, "(%s,'unknown','null'::jsonb,NULL,%s)")
                    + " ON CONFLICT (artifact_hash) DO NOTHING"
                )
                cur.execute(statement.encode(), artifacts)
            bench.conn.commit()


def _insert_json(bench: Bench, data: Dataset) -> None:
    with bench.conn.cursor() as cur:
        for start in range(0, len(data.rows), CEILING_BATCH):
            rows = data.rows[start : start + CEILING_BATCH]
            text = (
                "["
                + ",".join(
                    f'["{flow}",{seq},"{ts.isoformat()}","{kind}",{payload}]'
                    for flow, seq, ts, kind, payload in rows
                )
                + "]"
            )
            cur.execute(CEILING_INSERT_JSON, (text,))
            bench.conn.commit()


def _insert_multirow_events(bench: Bench, data: Dataset) -> None:
    with bench.conn.cursor() as cur:
        for start in range(0, len(data.rows), CEILING_BATCH):
            rows = data.rows[start : start + CEILING_BATCH]
            statement = (
                "INSERT INTO event_log (flow_id, flow_seq, ts, event_type, payload) VALUES "
                + _values(len(rows), "(%s,%s,%s,%s,%s::jsonb)")
            )
            cur.execute(statement.encode(), [v for r in rows for v in r])
            bench.conn.commit()
