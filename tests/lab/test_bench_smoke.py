"""`chem-persistence bench` on a tiny configuration: it runs every scenario, writes its JSON,
Markdown and PNG with a row for each, judges every target, and leaves neither its database nor
its Redis keys behind.

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

from lab.bench import PIPELINE_FLOWS, QUICK, SCALE_ENV, run_bench
from lab.bench.codec import KEYS as CODEC_KEYS

TINY_SCALE = "0.03"
CEILING_KEYS = {
    "a.copy.events",
    "a.copy",
    "a.insert.executemany",
    "a.insert.multirow",
    "a.insert.json",
    "a.insert.multirow.events",
}


def expected_keys() -> set[str]:
    pipeline = {f"d.{mode}.f{f}" for mode in ("backlog", "sustained") for f in PIPELINE_FLOWS}
    return CEILING_KEYS | {"b.sync", "c.naive", "replay", *CODEC_KEYS} | pipeline


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
    assert (tmp_path / "bench-quick.png").stat().st_size > 0
    rows = {s["key"]: s for s in report["scenarios"]}
    assert set(rows) == expected_keys()
    for key, row in rows.items():
        assert len(row["runs"]) == report["meta"]["runs_per_scenario"], key
        assert all(rate > 0 for rate in row["runs"]), key
        assert row["ping_us"] > 0, key

    trickle = report["trickle"]
    for mode in ("pipeline", "sync"):
        by_rate = {r["rate"] for r in trickle["rates"][mode]}
        assert set(map(float, QUICK.trickle_rates)) <= by_rate, mode
        for rate in trickle["rates"][mode]:
            assert rate["emitted"] > 0 and 0 <= rate["durable_share"] <= 1
            assert rate["p99_ms"] >= rate["p50_ms"] > 0 and rate["cost_us"] > 0
    assert {"emit", "encode", "raw_evalsha", "ping"} <= set(report["producer"])
    memory = report["redis_memory"]
    assert memory["flows"] == max(PIPELINE_FLOWS) and memory["used_memory_filled"] > 0

    names = [t["target"] for t in report["targets"]]
    assert any(n.startswith("trickle: highest rate") for n in names)
    assert any(n.startswith("trickle: emit→durable p99") for n in names)
    assert any(n.startswith("emit vs one raw EVALSHA") for n in names)
    assert any(n.startswith("Redis memory") for n in names)
    soak = next(t for t in report["targets"] if "RSS" in t["target"])
    assert soak["met"] is None  # the soak was not asked for

    markdown = (tmp_path / "bench-quick.md").read_text()
    captured = capsys.readouterr()
    printed = captured.out
    assert printed == markdown
    for row in rows.values():
        assert f"| {row['config']} |" in markdown
    for target in report["targets"]:
        verdict = {True: "| met |", False: "| **NOT met** |", None: "| - |"}[target["met"]]
        assert f"| {target['target']} |" in markdown and verdict in markdown

    # nothing left behind: this run's database is dropped (other runs on the same server may
    # have theirs meanwhile), the run's keys and queues are gone
    created = re.findall(r"dropped (chem_bench_[0-9a-f]+)", captured.err)
    assert len(created) == 1, captured.err
    assert created[0] not in bench_databases(admin_url)
    assert not [k for k in redis_conn.scan_iter(match="*bench*")]
