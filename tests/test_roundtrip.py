"""Legacy text and structured records of the same simulated events give identical canonical rows."""

from __future__ import annotations

from datetime import datetime

import pytest

from egresslens import store
from egresslens.ingest import store_canonical_frames
from egresslens.canonical import canonical_columns
from egresslens.schema import DNS_QUERIES, FLOWS, THREATS
from egresslens.simulate import generate, write
from egresslens.ingest import ingest_files

START = datetime(2026, 3, 2, 0, 0)
TABLES = (FLOWS, DNS_QUERIES, THREATS)


@pytest.fixture(scope="module")
def scenario():
    return generate(hours=2, events_per_hour=3_000, seed=11, start=START)


def _load(tmp_path, scenario, fmt: str, layout: str):
    out = tmp_path / f"{fmt}-{layout}"
    write(scenario, out, fmt=fmt, layout=layout)
    con = store.connect(tmp_path / f"{fmt}-{layout}.duckdb")
    logs = [p for p in out.iterdir() if p.name not in ("truth.json", "policy.json")]
    counts, _, _ = ingest_files(con, logs)
    return con, counts


def _canonical(con, table) -> set[tuple]:
    cols = ", ".join(["event_id", *canonical_columns(table)])
    return set(con.execute(f"SELECT {cols} FROM {table.name}").fetchall())


@pytest.mark.parametrize("layout", ["storage", "eventhub", "csv"])
def test_legacy_and_structured_renderings_give_identical_rows(tmp_path, scenario, layout):
    expected = store.connect_memory()
    store_canonical_frames(expected, flows=scenario.flows, dns_queries=scenario.dns_queries, threats=scenario.threats)
    legacy, legacy_counts = _load(tmp_path, scenario, "legacy", layout)
    structured, structured_counts = _load(tmp_path, scenario, "structured", layout)
    assert legacy_counts.quarantined == 0 and structured_counts.quarantined == 0
    for table in TABLES:
        want = _canonical(expected, table)
        assert _canonical(structured, table) == want, f"structured {table.name} differs from the simulated events"
        assert _canonical(legacy, table) == want, f"legacy {table.name} differs from the simulated events"
    formats = legacy.execute("SELECT DISTINCT log_format FROM flows").fetchall()
    assert formats == [("legacy",)]


def test_both_renderings_in_one_store_are_stored_once(tmp_path, scenario):
    con, counts = _load(tmp_path, scenario, "both", "storage")
    events = scenario.flows.height + scenario.dns_queries.height + scenario.threats.height
    assert counts.read == 2 * events
    assert counts.stored == events and counts.duplicates == events and counts.quarantined == 0
