"""Shared helpers: an in-memory store and a way to push raw records through the real ingest path."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from egresslens import store
from egresslens import ingest
from egresslens.sources.batch import Batch, Lines, Unit, line_schema

FIREWALL_ID = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000001/RESOURCEGROUPS/HUB/PROVIDERS/MICROSOFT.NETWORK/AZUREFIREWALLS/FW-HUB"


@pytest.fixture
def con():
    c = store.connect_memory()
    yield c
    c.close()


def legacy_record(msg: str, *, time: str = "2025-11-26T14:16:47.1397390Z", category: str = "AzureFirewallNetworkRule") -> str:
    return json.dumps({"category": category, "operationName": "AzureFirewallNetworkRuleLog",
                       "properties": {"msg": msg}, "resourceId": FIREWALL_ID, "time": time})


class RecordsSource:
    """A source that holds its records in memory: the smallest reader, one batch of lines."""

    kind = "test"

    def __init__(self, raws: list[str], source: str = "test"):
        self.raws, self.description = raws, source

    def discover(self, ctx):
        return [Unit(self.description)]

    def read(self, unit, ctx):
        raws = self.raws
        yield Batch(unit.key, Lines(pa.table({"source": [unit.key] * len(raws), "position": list(range(1, len(raws) + 1)),
                                              "record_index": pa.nulls(len(raws), pa.int32()), "raw": raws},
                                             schema=line_schema())))


def ingest_raw(con, raws: list[str], source: str = "test"):
    """Run raw record texts through the real ingest path; return the run's counts."""
    return ingest.run(con, RecordsSource(raws, source)).counts


def count_rows(db, table: str) -> int:
    """Rows in a table of the store file at `db`, read through a read-only connection."""
    con = store.connect(db, read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    finally:
        con.close()


def rows(con, sql: str, params=None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def run_loganalytics(con, credential, target, **kw):
    """`egresslens ingest loganalytics` as the library runs it: the source's statistics, with the run's counts."""
    from egresslens.sources.loganalytics import LogAnalyticsSource

    source = LogAnalyticsSource(credential, target, **kw)
    return source.summary(ingest.run(con, source))
