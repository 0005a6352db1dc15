"""`ingest metrics` through the real MetricsClient against the loopback getBatch server."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fakes.loganalytics_server import FakeCredential, FakeLogAnalytics, metric_series

from egresslens import ingest, store
from egresslens.sources.metrics import METRICS, MetricsError, MetricsSource

RID = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/hub/providers/"
       "Microsoft.Network/azureFirewalls/fw-hub")
START = datetime(2025, 7, 1)


def ingest_metrics(con, credential, resource_ids, **kw) -> dict:
    source = MetricsSource(credential, resource_ids, **kw)
    return source.summary(ingest.run(con, source))


@pytest.fixture
def fake():
    with FakeLogAnalytics("unused", metrics=metric_series(RID, START, 60)) as f:
        yield f


def test_metrics_land_in_table_and_rerun_replaces(fake):
    con = store.connect_memory()
    out = ingest_metrics(con, FakeCredential(), [RID], endpoint=fake.endpoint, start=START,
                         end=START + timedelta(hours=1))
    assert set(out["metrics"]) == set(METRICS)
    rows = con.execute("SELECT metric, count(*) FROM metrics GROUP BY 1").fetchall()
    counts = dict(rows)
    assert counts["SNATPortUtilization"] == 120  # 60 minutes x TCP/UDP
    assert counts["Throughput"] == 60
    peak = con.execute("SELECT max(maximum) FROM metrics WHERE metric = 'SNATPortUtilization' "
                       "AND dimension = 'Protocol=TCP'").fetchall()[0][0]
    assert peak == 100.0
    assert con.execute("SELECT min(average) FROM metrics WHERE metric = 'FirewallHealth'").fetchall()[0][0] == 50.0
    assert con.execute("SELECT DISTINCT firewall FROM metrics").fetchall() == [(RID.lower(),)]
    reqs = [r for r in fake.requests if r.template == "metrics:getBatch"]
    assert reqs and all(r.authorized for r in reqs) and "/subscriptions/" in reqs[0].path
    assert any("Protocol eq '*'" in (r.params.get("$filter") or r.params.get("filter") or [""])[0] for r in reqs)
    total = con.execute("SELECT count(*) FROM metrics").fetchall()[0][0]
    ingest_metrics(con, FakeCredential(), [RID], endpoint=fake.endpoint, start=START, end=START + timedelta(hours=1))
    assert con.execute("SELECT count(*) FROM metrics").fetchall()[0][0] == total


def test_metrics_errors_are_one_sentence(fake):
    con = store.connect_memory()
    with pytest.raises(MetricsError, match="rejected the credential"):
        ingest_metrics(con, FakeCredential("bad"), [RID], endpoint=fake.endpoint, start=START,
                       end=START + timedelta(hours=1))
    with pytest.raises(MetricsError, match="not found"):
        ingest_metrics(con, FakeCredential(), [RID.replace("fw-hub", "nope")], endpoint=fake.endpoint,
                       start=START, end=START + timedelta(hours=1))
