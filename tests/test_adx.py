"""`ingest adx` against a loopback Azure Data Explorer cluster (Kusto v2 frames), through the real KustoClient.

The same guarantees as `ingest loganalytics` (tests/test_loganalytics.py): every record stored once, a run
killed mid-way resumes exactly, late records are picked up once, throttling and transient failures are
retried, a result over the service's limits is split until whole and never stored as complete, and every
permanent failure is one sentence.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from fakes.adx_server import AdxFault, FakeAdx
from fakes.loganalytics_server import FakeCredential, FakeLogAnalytics, fixture_tables, legacy_fixture

from egresslens import ingest, store
from egresslens.sources.adx import AdxError, AdxSource, AdxTarget, KustoQuerier, default_settings, parse_mapping
from egresslens.sources.loganalytics import LogAnalyticsSource, Target

DB = "FirewallLogs"
START = datetime(2025, 7, 1)
END = START + timedelta(hours=2)
NOW = START + timedelta(hours=3)
LAG = default_settings().ingestion_lag
# the estate's names for the Log Analytics tables (one left unmapped: it keeps its name)
MAPPING = {"AZFWApplicationRule": "FirewallApplication", "AZFWNetworkRule": "fw-network.v2", "AZFWDnsQuery": "Firewall DNS"}
FLOW_TABLES = ("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule", "AZFWDnsQuery")


@pytest.fixture(scope="module")
def tables():
    return fixture_tables(hours=2, events_per_hour=1_000, start=START, tables=FLOW_TABLES)


@pytest.fixture
def fake(tables):
    with FakeAdx(DB, tables=dict(tables), mapping=dict(MAPPING)) as f:
        yield f


@pytest.fixture
def con():
    c = store.connect_memory()
    yield c
    c.close()


def settings(**kw):
    return default_settings(**{"backoff_base": 0.001, "window": timedelta(minutes=30), **kw})


def source(fake, *, credential=None, database=DB, mapping=MAPPING, st=None, now=NOW, start=START, end=END,
           firewall="", **kw) -> AdxSource:
    return AdxSource(credential or FakeCredential(), AdxTarget(fake.endpoint, database, firewall=firewall),
                     tables_map=mapping, start=start, end=end, now=now, settings=st or settings(), **kw)


def run(con, fake, **kw):
    src = source(fake, **kw)
    return src.summary(ingest.run(con, src))


def total(tables, names=FLOW_TABLES, ingest_before=NOW - LAG) -> int:
    return sum(tables[t].filter((pl.col("TimeGenerated") >= START) & (pl.col("TimeGenerated") < END)
                                & (pl.col("_Ingest") < ingest_before)).height for t in names)


def stored(con) -> int:
    return sum(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("flows", "dns_queries"))


# -- the wire format, read by the real client ---------------------------------------------------------

def test_the_loopback_cluster_speaks_v2_frames_the_sdk_reads(fake):
    import requests
    from azure.kusto.data import KustoClient, KustoConnectionStringBuilder
    from azure.kusto.data.exceptions import KustoMultiApiError

    from egresslens.sources import kql

    q = kql.load("raw_AZFWNatRule").render(time_start=START, time_end=END, ingest_start=START, ingest_end=NOW,
                                          firewall="")
    body = requests.post(f"{fake.endpoint}/v2/rest/query", json={"db": DB, "csl": q},
                         headers={"Authorization": "Bearer loopback-test-token"}, timeout=10).json()
    assert [f["FrameType"] for f in body] == ["DataSetHeader", "DataTable", "DataTable", "DataTable", "DataSetCompletion"]
    assert [f.get("TableKind") for f in body[1:4]] == ["QueryProperties", "PrimaryResult", "QueryCompletionInformation"]
    assert body[-1] == {"FrameType": "DataSetCompletion", "HasErrors": False, "Cancelled": False}
    names = [c["ColumnName"] for c in body[2]["Columns"]]
    assert body[2]["Rows"] and body[2]["Rows"][0][names.index("TimeGenerated")].endswith("0Z")  # 7 fractional digits
    client = KustoClient(KustoConnectionStringBuilder.with_azure_token_credential(fake.endpoint, FakeCredential()))
    res = client.execute_query(DB, q)
    assert res.errors_count == 0 and len(res.primary_results[0]) == len(body[2]["Rows"])
    fake.row_cap = 3  # over the limit: rows, then the error object in the table; the SDK raises
    with pytest.raises(KustoMultiApiError, match="E_QUERY_RESULT_SET_TOO_LARGE"):
        client.execute_query(DB, q)
    capped = requests.post(f"{fake.endpoint}/v2/rest/query", json={"db": DB, "csl": q},
                           headers={"Authorization": "Bearer loopback-test-token"}, timeout=10).json()
    assert len(capped[2]["Rows"]) == 4 and "OneApiErrors" in capped[2]["Rows"][-1]
    assert capped[3]["Rows"][-1][5] == 2 and capped[-1]["HasErrors"] is True  # an Error row; the final frame
    client.close()


# -- volume: windows, limits, parallelism -------------------------------------------------------------

def test_every_record_stored_once_through_the_table_mapping(con, fake, tables):
    cred = FakeCredential()
    stats = run(con, fake, credential=cred)
    assert set(stats.tables) == set(FLOW_TABLES)
    assert stats.rows == total(tables) == stored(con) and stats.counts.duplicates == stats.counts.quarantined == 0
    assert stats.bytes > 0 and fake.max_in_flight <= 5
    sent = {r.template: r.query for r in fake.requests}
    assert '["fw-network.v2"]' in sent["raw_AZFWNetworkRule"] and '["Firewall DNS"]' in sent["raw_AZFWDnsQuery"]
    assert "\nAZFWNatRule\n" in sent["raw_AZFWNatRule"]  # unmapped: its own name
    assert {s for (s,) in cred.scopes} == {"https://kusto.kusto.windows.net/.default"}  # the cluster's audience
    for table in FLOW_TABLES:  # half-open ingestion windows tile the range
        spans = sorted((r.params["ingest_start"], r.params["ingest_end"]) for r in fake.query_requests(f"raw_{table}"))
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_the_same_records_as_from_log_analytics(con, tables):
    """One estate's logs, in a workspace and exported to ADX: the same events stored."""
    with FakeLogAnalytics("11111111-2222-3333-4444-555555555555", tables=dict(tables)) as la:
        src = LogAnalyticsSource(FakeCredential(), Target(workspace_id=la.workspace_id), start=START, end=END, now=NOW,
                                 endpoint=la.endpoint, settings=settings())
        ingest.run(con, src)
    other = store.connect_memory()
    with FakeAdx(DB, tables=dict(tables), mapping=dict(MAPPING)) as fake:
        run(other, fake)
    for t in ("flows", "dns_queries"):
        sql = f"SELECT * EXCLUDE (ingest_run_id) FROM {t} ORDER BY event_id"
        a, b = con.execute(sql).fetchall(), other.execute(sql).fetchall()
        assert a and a == b, t


def test_results_over_the_record_limit_are_split_until_whole(con, fake, tables):
    fake.row_cap = 150
    st = settings(row_cap=150, window=timedelta(hours=2), max_concurrency=3)
    stats = run(con, fake, st=st, tables="AZFWApplicationRule,AZFWDnsQuery")
    assert [r for r in fake.requests if r.rows == 150], "the limit was never hit"
    assert stats.splits > 0
    assert stats.rows == total(tables, ("AZFWApplicationRule", "AZFWDnsQuery")) == stored(con)


def test_results_over_the_size_limit_are_split_until_whole(con, fake, tables):
    fake.byte_cap = 40_000  # the service's 64 MB, scaled to the fixture
    stats = run(con, fake, st=settings(window=timedelta(hours=2)), tables="AZFWApplicationRule")
    assert stats.splits > 0
    assert stats.rows == total(tables, ("AZFWApplicationRule",)) == stored(con)


def test_a_window_that_cannot_be_split_further_is_refused(con, fake):
    fake.row_cap = 0
    with pytest.raises(AdxError, match="cannot split further"):
        run(con, fake, st=settings(min_window=timedelta(minutes=20)), tables="AZFWNetworkRule")


def test_throttling_5xx_and_dropped_connections_are_retried(con, fake, tables):
    delays = []
    fake.adx_faults += [AdxFault(status=429, retry_after="0.25"), AdxFault(status=503), AdxFault(kind="reset"),
                        AdxFault(status=500), AdxFault(status=429, retry_after="0"), AdxFault(status=504)]
    st = settings(window=timedelta(hours=1), max_concurrency=2, sleep=delays.append)
    stats = run(con, fake, st=st, tables="AZFWNetworkRule,AZFWNatRule")
    assert stats.retries == 6 and 0.25 in delays  # the service's Retry-After, honoured
    assert stats.rows == total(tables, ("AZFWNetworkRule", "AZFWNatRule")) == stored(con)


@pytest.mark.parametrize("kind", ["partial", "cancelled", "completion"])
def test_an_incomplete_result_is_read_again_never_stored_as_complete(con, fake, tables, kind):
    """Rows cut short by an error in the table, a cancelled query, or an error only the final DataSetCompletion
    frame reports: the window is queried again."""
    fake.adx_faults += [AdxFault(kind=kind, template="raw_AZFWApplicationRule")] * 3
    stats = run(con, fake, tables="AZFWApplicationRule")
    assert stats.retries == 3
    assert stats.rows == total(tables, ("AZFWApplicationRule",)) == stored(con)
    fake.adx_faults += [AdxFault(kind=kind)] * 3
    with pytest.raises(AdxError, match="kept refusing or failing") as exc:
        run(store.connect_memory(), fake, st=settings(max_attempts=3, max_concurrency=1), tables="AZFWApplicationRule")
    assert "\n" not in str(exc.value)


def test_a_warning_is_not_an_incomplete_result(con, fake, tables):
    fake.adx_faults += [AdxFault(kind="warning")] * 4
    stats = run(con, fake, tables="AZFWApplicationRule")
    assert stats.retries == 0 and not fake.adx_faults
    assert stats.rows == total(tables, ("AZFWApplicationRule",)) == stored(con)


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
    assert con.execute("SELECT status FROM ingest_runs ORDER BY run_id").fetchall()[-1][0] == "interrupted"
    before = len(fake.requests)
    stats = run(con, fake)
    resumed = len(fake.requests) - before
    assert stored(con) == total(tables) and stats.counts.stored == total(tables) - partial
    again = run(con, fake)  # nothing new: the watermark is at the end
    assert again.counts.stored == 0 and stored(con) == total(tables)
    before = len(fake.requests)
    run(store.connect_memory(), fake)
    assert resumed <= len(fake.requests) - before - 7  # the 7 finished windows were not read again


def test_late_records_are_picked_up_once(con, fake, tables):
    run(con, fake)
    first = stored(con)
    late = tables["AZFWNetworkRule"].filter(pl.col("Protocol") != "ICMP").head(25).with_columns(
        SourcePort=pl.int_range(60001, 60026), _Ingest=pl.lit(NOW + timedelta(minutes=30)))
    fake.add_rows("AZFWNetworkRule", late)
    later = NOW + timedelta(hours=1)
    before = len(fake.requests)
    stats = run(con, fake, now=later)
    assert stats.counts.stored == 25 + (total(tables, ingest_before=later - LAG) - first)
    starts = [r.params["ingest_start"] for r in fake.requests[before:] if r.template == "raw_AZFWNetworkRule"]
    assert starts and min(starts) == NOW - LAG  # from the watermark, not from the start again
    assert run(con, fake, now=later).counts.stored == 0


# -- permanent errors: one sentence each, completed windows kept -----------------------------------

def test_wrong_database_missing_table_and_refused_credential(con, fake):
    with pytest.raises(AdxError, match=r"Database Nope was not found .*--database") as exc:
        run(con, fake, database="Nope")
    assert "\n" not in str(exc.value)
    with pytest.raises(AdxError, match=r"Table AZFWNetworkRule does not exist in database FirewallLogs: .*--table"):
        run(con, fake, mapping={}, tables="AZFWNetworkRule")
    with pytest.raises(AdxError, match="rejected the credential"):
        run(con, fake, credential=FakeCredential("wrong"))
    fake.adx_faults.append(AdxFault(status=403))
    with pytest.raises(AdxError, match="Database Viewer"):
        run(con, fake)


def test_no_credential_is_one_sentence(con, fake):
    from azure.core.exceptions import ClientAuthenticationError

    class NoCredential(FakeCredential):
        def get_token(self, *scopes, **kw):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                            "credentials.\nAttempted credentials:\n\tEnvironmentCredential: ...")

    with pytest.raises(AdxError, match=r"No usable Azure credential: sign in with `az login`") as exc:
        run(con, fake, credential=NoCredential())
    assert "\n" not in str(exc.value)


def test_permanent_error_keeps_completed_windows(con, fake, tables):
    fake.adx_faults.append(AdxFault(status=403, template="raw_AZFWDnsQuery"))
    st = settings(max_concurrency=1)
    with pytest.raises(AdxError, match="Database Viewer"):
        run(con, fake, st=st, tables="AZFWNetworkRule,AZFWDnsQuery")
    assert stored(con) >= total(tables, ("AZFWNetworkRule",))
    failed = con.execute("SELECT status, message FROM ingest_runs ORDER BY run_id DESC LIMIT 1").fetchall()[0]
    assert failed[0] == "failed" and "Database Viewer" in failed[1]
    stats = run(con, fake, st=st, tables="AZFWNetworkRule,AZFWDnsQuery")
    assert stored(con) == total(tables, ("AZFWNetworkRule", "AZFWDnsQuery")) and stats.counts.duplicates == 0


def test_hostile_firewall_filter_reaches_the_cluster_as_data(con, fake):
    from test_loganalytics import HOSTILE

    for value in HOSTILE[:3]:
        assert run(con, fake, tables="AZFWNetworkRule", firewall=value).rows == 0
    reqs = fake.query_requests("raw_")
    assert reqs and all(r.status == 200 for r in reqs)  # the text matched the template: nothing injected
    assert {r.params["firewall"] for r in reqs} == set(HOSTILE[:3])


# -- summary mode and legacy tables ------------------------------------------------------------------

def test_summary_mode_rollups_match_raw_and_move_fewer_bytes(con, fake):
    later = END + timedelta(hours=2)
    raw = run(con, fake, now=later)
    summ = run(con, fake, mode="summary", now=later)
    assert summ.rollups > 0 and summ.bytes * 3 < raw.bytes
    assert con.execute("SELECT sum(hits) FROM flow_rollups").fetchall()[0][0] == \
        con.execute("SELECT count(*) FROM flows").fetchall()[0][0]
    assert con.execute("SELECT sum(queries) FROM dns_rollups").fetchall()[0][0] == \
        con.execute("SELECT count(*) FROM dns_queries").fetchall()[0][0]
    n = con.execute("SELECT count(*), sum(hits) FROM flow_rollups").fetchall()[0]
    fake.row_cap = 300  # a capped summary is split and merged to the same result, never doubled
    again = run(con, fake, mode="summary", now=later, st=settings(row_cap=300))
    assert again.splits > 0
    assert con.execute("SELECT count(*), sum(hits) FROM flow_rollups").fetchall()[0] == n


def test_legacy_azurediagnostics_table_raw_and_summary(con):
    legacy = legacy_fixture(hours=2, events_per_hour=500, start=START)
    mapping = {"AzureDiagnostics": "FirewallDiagnostics"}
    later = END + timedelta(hours=2)
    with FakeAdx(DB, tables=legacy, mapping=mapping) as fake:
        raw = run(con, fake, mapping=mapping, now=later)
        assert raw.tables == ["AzureDiagnostics"] and raw.counts.stored > 0 and raw.counts.balanced
        run(con, fake, mapping=mapping, now=later, mode="summary")
    assert con.execute("SELECT sum(hits) FROM flow_rollups").fetchall()[0][0] == \
        con.execute("SELECT count(*) FROM flows").fetchall()[0][0]


# -- the mapping and the command line ----------------------------------------------------------------

def test_table_mapping_is_checked():
    assert parse_mapping(["AZFWNetworkRule=Net"], {"tables": {"AZFWNetworkRule": "Old", "AZFWNatRule": "Nat"}}) == \
        {"AZFWNetworkRule": "Net", "AZFWNatRule": "Nat"}
    for bad in (["AZFWNetworkRule"], ["Nope=X"], ['AZFWNetworkRule=a"]; .drop table T'], ["AZFWNetworkRule="]):
        with pytest.raises(ValueError):
            parse_mapping(bad)


def test_the_client_refuses_plain_http_beyond_this_machine():
    from egresslens.sources.adx import check_cluster

    assert check_cluster("https://fw.westeurope.kusto.windows.net/") == "https://fw.westeurope.kusto.windows.net"
    for bad in ("http://fw.westeurope.kusto.windows.net", "fw.kusto.windows.net", "https://u:p@fw.kusto.windows.net"):
        with pytest.raises(ValueError):
            check_cluster(bad)
    with pytest.raises(ValueError):
        KustoQuerier(FakeCredential(), AdxTarget("ftp://x", DB), settings=settings())


def test_cli_adx_json_summary_mapping_file_and_exit_codes(tmp_path, fake, tables, monkeypatch):
    from typer.testing import CliRunner

    from egresslens.cli import app
    from egresslens.commands import ingest_azure

    monkeypatch.setattr(ingest_azure, "default_credential", lambda: FakeCredential())
    mapfile = tmp_path / "tables.json"
    mapfile.write_text(json.dumps({"tables": {"AZFWNetworkRule": "fw-network.v2"}}))
    args = ["ingest", "adx", "--cluster", fake.endpoint, "--database", DB, "--start", START.isoformat() + "Z",
            "--end", END.isoformat() + "Z", "--db", str(tmp_path / "s.duckdb"), "--json"]
    res = CliRunner().invoke(app, [*args, "--table-map", str(mapfile), "--tables", "AZFWNetworkRule"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows"] == out["stored"] > 0 and out["windows"] > 0 and out["bytes"] > 0
    missing = CliRunner().invoke(app, [*args, "--tables", "AZFWApplicationRule"])  # not mapped: not found
    assert missing.exit_code == 4 and "does not exist" in missing.output
    res = CliRunner().invoke(app, [*args, "--table", "AZFWApplicationRule=FirewallApplication", "--tables",
                                   "AZFWApplicationRule", "--mode", "summary"])
    assert res.exit_code == 4 and "Summary mode reads the tables" in res.output
    for bad in (["--cluster", "not a url"], ["--table", "AZFWNetworkRule"], ["--table-map", str(tmp_path / "none.json")],
                ["--mode", "fast"], ["--since", "1d", "--start", "2025-07-01"]):
        res = CliRunner().invoke(app, [*args, *bad])
        assert res.exit_code == 2 and "Traceback" not in res.output, (bad, res.output)
    mapfile.write_text("{not json")
    res = CliRunner().invoke(app, [*args, "--table-map", str(mapfile)])
    assert res.exit_code == 2 and "not valid JSON" in res.output


def test_nightly_ingests_from_adx_before_its_report(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from egresslens.cli import app

    now = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    recent = fixture_tables(hours=3, events_per_hour=300, start=now - timedelta(hours=4), tables=("AZFWNetworkRule",))
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", lambda: FakeCredential())
    mapfile = tmp_path / "tables.toml"
    mapfile.write_text('[tables]\nAZFWNetworkRule = "fw-network.v2"\n')
    db = tmp_path / "s.duckdb"
    with FakeAdx(DB, tables=recent, mapping={"AZFWNetworkRule": "fw-network.v2"}) as fake:
        args = ["nightly", "--out", str(tmp_path / "out"), "--db", str(db), "--since", "24h", "--compare-to", "",
                "--adx-cluster", fake.endpoint, "--adx-database", DB, "--adx-table-map", str(mapfile)]
        res = CliRunner().invoke(app, args)
        assert "ingest adx: " in res.output and res.exit_code in (0, 1, 7), res.output
        assert any(r.template == "raw_AZFWNetworkRule" and '["fw-network.v2"]' in r.query for r in fake.requests)
        bad = CliRunner().invoke(app, args[:-4])  # a cluster without its database
        assert bad.exit_code == 2 and "--adx-database" in bad.output
    con = store.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM flows").fetchall()[0][0] == recent["AZFWNetworkRule"].height
    con.close()
