"""`chem-persistence bench` on a tiny configuration: it runs every scenario, writes its JSON and
Markdown with a row for each, and leaves neither its database nor its Redis keys behind.

A smoke test of the harness, not a benchmark: no timing is asserted (CHEM_BENCH_SCALE shrinks
every event count and duration).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
import redis

from worker.bench import BATCH_SIZES, SCALE_ENV, WORKER_COUNTS, run_bench

TINY_SCALE = "0.02"
CEILING_KEYS = {
    "a.copy.events",
    "a.copy",
    "a.insert.executemany",
    "a.insert.multirow",
    "a.insert.json",
    "a.insert.multirow.events",
}


def expected_keys() -> set[str]:
    pipeline = {
        f"d.{mode}.w{w}.b{b}"
        for mode in ("backlog", "sustained")
        for w in WORKER_COUNTS
        for b in BATCH_SIZES
    }
    return CEILING_KEYS | {"b.sync", "c.naive", "replay"} | pipeline


def bench_databases(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'chem_bench_%'")
        return {str(r[0]) for r in rows.fetchall()}


def test_bench_writes_every_scenario_and_cleans_up(
    admin_url: str,
    redis_url: str,
    redis_conn: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(SCALE_ENV, TINY_SCALE)
    monkeypatch.setenv("CHEM_BENCH_ADMIN_URL", admin_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert run_bench(quick=True, soak=False, output_dir=tmp_path, as_json=False) == 0

    report = json.loads((tmp_path / "bench-quick.json").read_text())
    rows = {s["key"]: s for s in report["scenarios"]}
    assert set(rows) == expected_keys()
    for key, row in rows.items():
        assert len(row["runs"]) == report["meta"]["runs_per_scenario"] >= 3, key
        assert all(rate > 0 for rate in row["runs"]), key
        assert row["ping_us"] > 0, key
    assert {(c["workers"], c["batch_size"]) for c in report["pipeline"]} == {
        (w, b) for w in WORKER_COUNTS for b in BATCH_SIZES
    }
    for config in report["pipeline"]:
        latency = config["latency"]
        assert latency["events"] > 0 and latency["p99_ms"] >= latency["p50_ms"] > 0
        assert config["peak_rss_kib"] > 0
    assert {"emit", "encode", "send", "emit_many", "send_many", "raw_rpush"} <= set(
        report["producer"]
    )
    assert [t["met"] for t in report["targets"]][-1] is None  # the soak was not asked for

    markdown = (tmp_path / "bench-quick.md").read_text()
    captured = capsys.readouterr()
    printed = captured.out
    assert printed == markdown
    for row in rows.values():
        assert f"| {row['config']} |" in markdown
    assert markdown.count("| (d) pipeline: backlog drain |") == len(WORKER_COUNTS) * len(
        BATCH_SIZES
    )
    assert markdown.count("| (d) pipeline: sustained") == len(WORKER_COUNTS) * len(BATCH_SIZES)

    # nothing left behind: this run's database is dropped (other runs on the same server may
    # have theirs meanwhile), the run's keys and queues are gone
    created = re.findall(r"dropped (chem_bench_[0-9a-f]+)", captured.err)
    assert len(created) == 1, captured.err
    assert created[0] not in bench_databases(admin_url)
    assert not [k for k in redis_conn.scan_iter(match="*bench*")]
