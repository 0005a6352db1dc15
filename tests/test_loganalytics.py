"""`ingest loganalytics` against a loopback Log Analytics server, through the real LogsQueryClient."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest
from fakes.loganalytics_server import FakeCredential, FakeLogAnalytics, Fault, fixture_tables

from egresslens import store
from egresslens.sources import kql
from egresslens.sources.loganalytics import LogAnalyticsError, Run, Settings, Target

WS = "11111111-2222-3333-4444-555555555555"
START = datetime(2025, 7, 1)
END = START + timedelta(hours=2)
NOW = START + timedelta(hours=3)
HOSTILE = [
    'x" | union AZFWNetworkRule | where "1"=="1',
    "x'; .drop table AZFWNetworkRule",
    "a\\\" or true //",
    "line\nbreak | take 1000000",
    ");\ndeclare query_parameters(time_start:datetime = datetime(1990-01-01T00:00:00.0000000Z));",
    "ünïcödé \u00e9 \\ \t",
]


@pytest.fixture(scope="module")
def tables():
    return fixture_tables(hours=2, events_per_hour=1_000, start=START,
                          tables=("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule", "AZFWDnsQuery"))


@pytest.fixture
def fake(tables):
    with FakeLogAnalytics(WS, tables=dict(tables)) as f:
        yield f


@pytest.fixture
def con():
    c = store.connect_memory()
    yield c
    c.close()


def run(con, fake, *, settings=None, now=NOW, start=START, end=END, **kw):
    st = settings or Settings(backoff_base=0.001, window=timedelta(minutes=30))
    r = Run(con, FakeCredential(), kw.pop("target", Target(workspace_id=WS)), start=start, end=end, now=now,
            endpoint=fake.endpoint, settings=st, **kw)
    return r.run()


def total(tables, **filters) -> int:
    n = 0
    for df in tables.values():
        n += df.filter((pl.col("TimeGenerated") >= START) & (pl.col("TimeGenerated") < END)
                       & (pl.col("_Ingest") < filters.get("ingest_before", NOW - timedelta(minutes=2)))).height
    return n


def stored(con) -> int:
    return sum(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("flows", "dns_queries"))


# -- parameters are typed literals ------------------------------------------------------------------

@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_string_is_one_literal(value):
    t = kql.load("raw_AZFWNetworkRule")
    q = t.render(time_start=START, time_end=END, ingest_start=START, ingest_end=END, firewall=value)
    name, params, skeleton = kql.parse_rendered(q)
    assert name == "raw_AZFWNetworkRule"
    assert params["firewall"] == value and params["time_start"] == START
    assert skeleton == kql.skeleton(t)  # nothing outside the declaration changed
    assert len(q.splitlines()) == len(t.text.splitlines())  # no line injected


def test_unsafe_values_are_refused():
    t = kql.load("summary_dns")
    with pytest.raises(kql.KqlError):
        t.render(time_start=START, time_end=END, firewall="nul\x00byte")
    with pytest.raises(kql.KqlError):
        t.render(time_start="2025-01-01", time_end=END, firewall="")  # a string is not a datetime
    with pytest.raises(kql.KqlError):
        kql.load("../../etc/passwd")


def test_hostile_values_reach_the_server_as_data(con, fake):
    for value in HOSTILE[:3]:
        stats = run(con, fake, tables="AZFWNetworkRule", target=Target(workspace_id=WS, firewall=value))
        assert stats.rows == 0  # the filter matched nothing; the query was not altered
    reqs = fake.query_requests("raw_")
    assert reqs and all(r.status == 200 for r in reqs)
    assert {r.params["firewall"] for r in reqs} == set(HOSTILE[:3])
    with pytest.raises(LogAnalyticsError, match="Unknown table"):
        run(con, fake, tables="AZFWNetworkRule | take 1")


def test_templates_ship_in_the_package():
    names = kql.template_names()
    assert {"detect", "summary_flows", "summary_dns", "raw_AzureDiagnostics", "raw_AZFWNetworkRule"} <= set(names)


# -- volume: windows, caps, parallelism -----------------------------------------------------------

def test_auto_tables_all_rows_once(con, fake, tables):
    stats = run(con, fake)
    assert set(stats.tables) == set(tables)
    assert stats.rows == total(tables) == stored(con)
    assert stats.counts.duplicates == 0 and stats.counts.quarantined == 0
    assert fake.max_in_flight <= 5
    # half-open windows: every request's ingestion windows tile the range without overlap
    for table in tables:
        spans = sorted((r.params["ingest_start"], r.params["ingest_end"]) for r in fake.query_requests(f"raw_{table}"))
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_row_cap_splits_windows_until_complete(con, fake, tables):
    fake.row_cap = 150
    st = Settings(row_cap=150, backoff_base=0.001, window=timedelta(hours=2), max_concurrency=3)
    stats = run(con, fake, settings=st, tables="AZFWApplicationRule,AZFWDnsQuery")
    partial = [r for r in fake.requests if r.rows == 150]
    assert partial, "the cap was never hit"
    assert stats.splits >= len(partial)
    want = sum(tables[t].filter((pl.col("TimeGenerated") < END) & (pl.col("_Ingest") < NOW - timedelta(minutes=2))).height
               for t in ("AZFWApplicationRule", "AZFWDnsQuery"))
    assert stats.rows == want == stored(con)
    assert fake.max_in_flight <= 3


def test_throttling_5xx_slow_and_204_are_retried(con, fake, tables):
    fake.faults += [Fault(status=429, retry_after="0"), Fault(status=503), Fault(status=500),
                    Fault(status=429, retry_after="0.01"), Fault(delay=1.5), Fault(status=504)]
    st = Settings(backoff_base=0.001, window=timedelta(hours=1), read_timeout=0.5, max_concurrency=2)
    stats = run(con, fake, settings=st, tables="AZFWNetworkRule,AZFWNatRule")
    assert stats.retries == 6
    want = sum(tables[t].filter((pl.col("TimeGenerated") < END) & (pl.col("_Ingest") < NOW - timedelta(minutes=2))).height
               for t in ("AZFWNetworkRule", "AZFWNatRule"))
    assert stats.rows == want == stored(con)


def test_204_empty_body_is_an_empty_window(con, fake):
    fake.tables = {}
    fake.faults.append(Fault(status=204))
    stats = run(con, fake)  # auto detection answers 204: nothing to read
    assert stats.tables == [] and stats.rows == 0


def test_kill_mid_run_then_resume_exact(con, fake, tables):
    seen = {"windows": 0}

    def on_progress(event, table, info):
        if event == "window":
            seen["windows"] += 1
            if seen["windows"] == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(con, fake, on_progress=on_progress)
    partial = stored(con)
    assert 0 < partial < total(tables)
    status = con.execute("SELECT status FROM ingest_runs ORDER BY run_id").fetchall()
    assert status[-1][0] == "interrupted"
    before = len(fake.requests)
    stats = run(con, fake)
    resumed_requests = len(fake.requests) - before
    assert stored(con) == total(tables)
    assert stats.counts.stored == total(tables) - partial
    again = run(con, fake)  # nothing new: watermark at the end
    assert again.counts.stored == 0 and stored(con) == total(tables)
    fresh = store.connect_memory()
    before = len(fake.requests)
    run(fresh, fake)
    assert resumed_requests <= len(fake.requests) - before - 7  # the 7 finished windows were not read again


def test_late_records_are_picked_up_once(con, fake, tables):
    run(con, fake)
    first = stored(con)
    assert first == total(tables)
    # records generated in the first hour that reach the workspace only after the first run
    late = tables["AZFWNetworkRule"].filter(pl.col("Protocol") != "ICMP").head(25).with_columns(
        SourcePort=pl.int_range(60001, 60026), _Ingest=pl.lit(NOW + timedelta(minutes=30)))
    fake.add_rows("AZFWNetworkRule", late)
    later = NOW + timedelta(hours=1)
    before = len(fake.requests)
    stats = run(con, fake, now=later)
    assert stats.counts.stored == 25 + (total(tables, ingest_before=later - timedelta(minutes=2)) - first)
    # the second run started at the watermark: it did not re-read the first run's windows
    starts = [r.params["ingest_start"] for r in fake.requests[before:] if r.template == "raw_AZFWNetworkRule"]
    assert starts and min(starts) == NOW - timedelta(minutes=2)
    assert run(con, fake, now=later).counts.stored == 0


# -- permanent errors ------------------------------------------------------------------------------

def test_wrong_workspace_is_one_sentence(con, fake):
    r = Run(con, FakeCredential(), Target(workspace_id="99999999-2222-3333-4444-555555555555"), start=START, end=END,
            now=NOW, endpoint=fake.endpoint, settings=Settings(backoff_base=0.001))
    with pytest.raises(LogAnalyticsError, match=r"not found .*workspace ID") as exc:
        r.run()
    assert "\n" not in str(exc.value)


def test_missing_table_and_bad_credential(con, fake):
    with pytest.raises(LogAnalyticsError, match="Table AZFWFatFlow does not exist"):
        run(con, fake, tables="AZFWFatFlow")
    r = Run(con, FakeCredential("wrong"), Target(workspace_id=WS), start=START, end=END, now=NOW,
            endpoint=fake.endpoint)
    with pytest.raises(LogAnalyticsError, match="rejected the credential"):
        r.run()


def test_permanent_error_keeps_completed_windows(con, fake, tables):
    fake.faults.append(Fault(status=403, template="raw_AZFWDnsQuery"))
    st = Settings(backoff_base=0.001, window=timedelta(minutes=30), max_concurrency=1)
    with pytest.raises(LogAnalyticsError, match="Log Analytics Reader"):
        run(con, fake, settings=st, tables="AZFWNetworkRule,AZFWDnsQuery")
    kept = stored(con)
    assert kept >= tables["AZFWNetworkRule"].filter(pl.col("_Ingest") < NOW - timedelta(minutes=2)).height
    failed = con.execute("SELECT status, message FROM ingest_runs ORDER BY run_id DESC LIMIT 1").fetchall()[0]
    assert failed[0] == "failed" and "Log Analytics Reader" in failed[1]
    stats = run(con, fake, settings=st, tables="AZFWNetworkRule,AZFWDnsQuery")
    assert stats.counts.duplicates == 0 or stats.windows_skipped > 0


def test_resource_centric_query(con, fake, tables):
    rid = tables["AZFWNetworkRule"]["_ResourceId"][0]
    stats = run(con, fake, tables="AZFWNetworkRule", target=Target(resource_id=rid))
    assert stats.rows > 0
    assert all(r.path.startswith("/v1/subscriptions/") for r in fake.query_requests("raw_"))


# -- summary mode ----------------------------------------------------------------------------------

def test_summary_mode_rollups_match_raw_and_move_fewer_bytes(con, fake, tables):
    raw = run(con, fake, now=END + timedelta(hours=2))
    summ = run(con, fake, mode="summary", now=END + timedelta(hours=2))
    assert summ.rollups > 0
    hits = con.execute("SELECT sum(hits) FROM flow_rollups").fetchall()[0][0]
    assert hits == con.execute("SELECT count(*) FROM flows").fetchall()[0][0]
    queries = con.execute("SELECT sum(queries) FROM dns_rollups").fetchall()[0][0]
    assert queries == con.execute("SELECT count(*) FROM dns_queries").fetchall()[0][0]
    # the same hour/destination in both models
    top = con.execute("""SELECT hour, destination_fqdn, sum(hits) FROM flow_rollups WHERE kind = 'application'
                         GROUP BY ALL ORDER BY 3 DESC LIMIT 1""").fetchall()[0]
    assert con.execute("SELECT count(*) FROM flows WHERE kind = 'application' AND date_trunc('hour', time) = ? "
                       "AND destination_fqdn = ?", [top[0], top[1]]).fetchall()[0][0] == top[2]
    assert summ.bytes * 3 < raw.bytes
    # re-running the window replaces rollups, never doubles them
    n = con.execute("SELECT count(*), sum(hits) FROM flow_rollups").fetchall()[0]
    fake.row_cap = 300  # and a capped summary is split and merged to the same result
    again = run(con, fake, mode="summary", now=END + timedelta(hours=2),
                settings=Settings(row_cap=300, backoff_base=0.001))
    assert again.splits > 0
    assert con.execute("SELECT count(*), sum(hits) FROM flow_rollups").fetchall()[0] == n
    assert con.execute("SELECT count(*) FROM (SELECT rollup_id FROM flow_rollups GROUP BY 1 HAVING count(*) > 1)"
                       ).fetchall()[0][0] == 0


# -- the command line ------------------------------------------------------------------------------

def test_cli_loganalytics_json_summary(tmp_path, fake, tables, monkeypatch):
    import json

    from typer.testing import CliRunner

    from egresslens.cli import app
    from egresslens.commands import ingest_azure

    monkeypatch.setattr(ingest_azure, "default_credential", lambda: FakeCredential())
    db = tmp_path / "s.duckdb"
    args = ["ingest", "loganalytics", "--workspace-id", WS, "--start", START.isoformat() + "Z",
            "--end", END.isoformat() + "Z", "--endpoint", fake.endpoint, "--db", str(db), "--json",
            "--tables", "AZFWNetworkRule"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows"] == out["stored"] > 0 and out["windows"] > 0 and out["bytes"] > 0
    bad = CliRunner().invoke(app, args[:3] + ["not-a-guid"] + args[4:])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(app, args[:-1] + ["AZFWFatFlow"])
    assert missing.exit_code == 4 and "does not exist" in missing.output


def test_summary_wire_carries_any_key_text_exactly():
    """Front-coded summaries decode to exactly the groups sent, whatever the log text in their keys."""
    import json as _json

    import pyarrow as pa
    from fakes.loganalytics_server import wire_form
    from hostile import TEXTS

    from egresslens.sources import summary_wire

    texts = ["", *TEXTS.values(), *HOSTILE]
    n = len(texts)
    hour = pl.Series([START + timedelta(hours=i % 3) for i in range(n)], dtype=pl.Datetime("us"))
    wide = pl.DataFrame({
        "Hour": hour, "Firewall": ["fw"] * n, "Kind": ["application"] * n, "Policy": texts,
        "RuleCollectionGroup": texts[::-1], "RuleCollection": ["rc"] * n, "Rule": texts, "Action": ["Allow"] * n,
        "ActionReason": [""] * n, "Protocol": ["HTTPS"] * n, "DestinationFqdn": texts[::-1], "DestinationIp": [""] * n,
        "DestinationPort": [None if i % 4 == 0 else 443 for i in range(n)], "SourceIp": texts,
        "Hits": list(range(1, n + 1)), "FirstSeen": hour + timedelta(microseconds=7),
        "LastSeen": hour + timedelta(minutes=59, microseconds=999_999)})
    coded = wire_form(wide, summary_wire.FLOWS)
    assert coded["P"].max() > 0  # rows share their leading key columns
    con = store.connect_memory()
    got = pl.from_arrow(summary_wire.decode(con, coded.to_arrow(), summary_wire.FLOWS))
    want = wide.with_columns(
        pl.col("Hour").dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"), pl.col("FirstSeen").dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"),
        pl.col("LastSeen").dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"), pl.col("DestinationPort").cast(pl.Utf8))
    key = list(summary_wire.FLOWS.key)
    assert got.select(want.columns).sort(key, nulls_last=True).equals(want.sort(key, nulls_last=True))
    # a result that is not in the wire form is refused with one sentence, never stored half-read
    bad = coded.to_arrow().set_column(0, "P", pa.array([0] + [99] * (n - 1), pa.int64()))
    with pytest.raises(summary_wire.WireError, match="not in the wire form"):
        summary_wire.decode(con, bad, summary_wire.FLOWS)
    assert _json.loads(coded["K"][0])[0] == "fw"


def test_summary_templates_end_with_the_wire_tail():
    from egresslens.sources import summary_wire
    from egresslens.sources.loganalytics import SUMMARY_TEMPLATES

    for template, kind in SUMMARY_TEMPLATES.values():
        assert kql.load(template).text.endswith(summary_wire.kql_tail(summary_wire.WIRES[kind])), template
