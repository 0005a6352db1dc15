"""DNS-proxy analytics: hand-made queries (noise, failures, resolve-then-deny) and simulated done-when checks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import lru_cache

import polars as pl
import typer
from typer.testing import CliRunner

from egresslens import dns
from egresslens.analyse import Window, resolve_window
from egresslens.commands import dns as dns_cmd
from egresslens.ingest import store_canonical_frames
from egresslens.simulate import generate
from egresslens.store import connect, connect_memory

T0 = datetime(2025, 7, 1, 0, 0)
FW = "fw1"
WINDOW = Window(T0, T0 + timedelta(hours=12))


def _q(rows: list[tuple]) -> pl.DataFrame:
    """rows: (seconds after T0, source_ip, name, type, rcode, duration_s, error_message)."""
    return pl.DataFrame([(T0 + timedelta(seconds=s), FW, src, name, typ, rc, dur, err)
                         for s, src, name, typ, rc, dur, err in rows],
                        schema={"time": pl.Datetime("us"), "firewall": pl.String, "source_ip": pl.String,
                                "query_name": pl.String, "query_type": pl.String, "response_code": pl.String,
                                "duration_s": pl.Float64, "error_message": pl.String}, orient="row")


def _load(con, queries: pl.DataFrame | None = None, flows: pl.DataFrame | None = None) -> None:
    for table, df in (("dns_queries", queries), ("flows", flows)):
        if df is None:
            continue
        con.register("f", df.to_arrow())
        con.execute(f"INSERT INTO {table} BY NAME SELECT *, md5(random()::VARCHAR) AS event_id, 'structured' AS log_format FROM f").fetchall()
        con.unregister("f")


def test_registrable_domain_and_noise():
    assert dns.registrable_domain("abc.t.exfil-example.net") == "exfil-example.net"
    assert dns.registrable_domain("x.blob.core.windows.net") == "x.blob.core.windows.net"
    assert dns.strip_noise("time.windows.com.reddog.microsoft.com") == "time.windows.com"


def test_noise_failures_latency_and_resolved_then_denied():
    rows = []
    for i in range(100):
        rows.append((i * 60, "10.244.1.5", "api.example.com", "A", "NOERROR", 0.001 * (i + 1), None))
        rows.append((i * 60 + 1, "10.244.1.5", "api.example.com.svc.cluster.local", "A", "NXDOMAIN", 0.001, None))
    rows += [(10, "10.241.0.4", "wpad.corp.example", "A", "NXDOMAIN", 0.001, None),
             (20, "10.241.0.4", "missing.example.org", "A", "NXDOMAIN", 0.002, None),
             (21, "10.241.0.4", "broken.example.org", "A", "SERVFAIL", 0.5, None),
             (30, None, "time.windows.com.reddog.microsoft.com", "A", None, 0.0, "i/o timeout"),
             (40, "10.241.0.4", "blocked.example.net", "A", "NOERROR", 0.002, None),
             (50, "10.241.0.4", "db.example.net", "A", "NOERROR", 0.002, None)]
    flows = pl.DataFrame([
        (T0 + timedelta(seconds=41), FW, "application", "HTTPS", "10.241.0.4", None, "blocked.example.net", 443, "Deny", "Default Action"),
        (T0 + timedelta(seconds=51), FW, "network", "TCP", "10.241.0.4", "203.0.113.9", None, 5432, "Deny", "Default Action"),
        (T0 + timedelta(seconds=900), FW, "network", "TCP", "10.241.0.4", "203.0.113.10", None, 5432, "Deny", "Default Action"),
    ], schema={"time": pl.Datetime("us"), "firewall": pl.String, "kind": pl.String, "protocol": pl.String,
               "source_ip": pl.String, "destination_ip": pl.String, "destination_fqdn": pl.String,
               "destination_port": pl.Int32, "action": pl.String, "action_reason": pl.String}, orient="row")
    con = connect_memory()
    _load(con, _q(rows), flows)
    r = dns.analyse_dns(con, WINDOW, dns.DnsConfig(groups={"checkout": ["10.244.1.0/24"]}))
    g = {x["source_group"]: x for x in r.by_group.iter_rows(named=True)}
    assert g["checkout"]["queries"] == 200 and g["checkout"]["noise_queries"] == 100
    assert g["checkout"]["nxdomain_rate"] == 0.5
    assert g["checkout"]["p50_latency_s"] < 0.01 < 0.09 < g["checkout"]["p95_latency_s"] <= g["checkout"]["p99_latency_s"]
    assert g["(firewall upstream)"]["upstream_errors"] == 1
    assert set(r.failures["query_name"]) == {"missing.example.org", "broken.example.org"}
    kinds = dict(zip(r.noise["intended_name"], r.noise["noise_kind"]))
    assert kinds["api.example.com"] == "search suffix .svc.cluster.local"
    assert kinds["time.windows.com"] == "search suffix .reddog.microsoft.com" and kinds["wpad.corp.example"] == "wpad"
    assert r.upstream_errors["query_name"].to_list() == ["time.windows.com.reddog.microsoft.com"]
    rtd = {(x["layer"], x["query_name"]): x for x in r.resolved_then_denied.iter_rows(named=True)}
    assert rtd[("application", "blocked.example.net")]["denials"] == 1
    net = rtd[("network (inferred)", "db.example.net")]
    assert net["denials"] == 1 and net["denied_destinations"] == ["203.0.113.9:5432"]  # the one 850 s later is not linked
    assert r.totals["real_failures"] == 2


@lru_cache(maxsize=None)
def _sim():
    s = generate(hours=8, events_per_hour=50_000, seed=11, hot_share=0.0)
    con = connect_memory()
    store_canonical_frames(con, flows=s.flows, dns_queries=s.dns_queries, threats=s.threats)
    return con, s.truth


def test_simulated_tunnel_flagged_benign_names_not():
    con, truth = _sim()
    window = resolve_window(con, since="24h")
    sus = dns.suspicious_domains(con, window)
    never = sus.filter(pl.col("never_allow"))
    tunnel = sus.filter(pl.col("reason") == "tunnelling")
    assert tunnel["zone"].to_list() == [truth["malicious"]["tunnel_domain"]]
    assert truth["malicious"]["compromised_source"] in tunnel["sources"][0]
    # benign high-volume names: telemetry shards, CDNs, the busy API, Microsoft, cluster noise
    flagged = set(never["domain"])
    for name in ("eu-1.telemetry.example-saas.io", "production.cloudflare.docker.com", "mcr.microsoft.com",
                 "api.payments-example.com", "westeurope.data.mcr.microsoft.com", "azure.archive.ubuntu.com"):
        assert dns.registrable_domain(name) not in flagged, name
    assert not any(d.endswith(("cluster.local", "reddog.microsoft.com")) for d in sus["domain"])
    # threat-intel names are never-allow too
    assert {dns.registrable_domain(f) for f in truth["malicious"]["threat_intel_fqdns"]} <= flagged
    r = dns.analyse_dns(con, window)
    assert r.has_findings and r.totals["noise_queries"] > 0
    noise = set(r.by_name.filter(pl.col("noise_kind").is_not_null())["query_name"])
    present = set(r.by_name["query_name"]) & set(truth["noise_names"])
    assert present and present <= noise
    assert not (noise & set(r.failures["query_name"]))


def test_newly_seen_against_history():
    con = connect_memory()
    rows = [(h * 3600, "10.244.1.5", "old.example.com", "A", "NOERROR", 0.001, None) for h in range(12)]
    rows.append((11 * 3600, "10.244.1.5", "brand-new.example.org", "A", "NOERROR", 0.001, None))
    _load(con, _q(rows))
    sus = dns.suspicious_domains(con, Window(T0 + timedelta(hours=6), T0 + timedelta(hours=12)))
    assert sus["domain"].to_list() == ["example.org"]
    row = sus.row(0, named=True)
    assert row["reason"] == "newly_seen" and row["never_allow"] is False


def test_cli(tmp_path):
    db = tmp_path / "d.duckdb"
    con = connect(db)
    con_mem, _ = _sim()
    s = generate(hours=3, events_per_hour=20_000, seed=11, hot_share=0.0)
    store_canonical_frames(con, flows=s.flows, dns_queries=s.dns_queries, threats=s.threats)
    con.close()
    app = typer.Typer()
    app.callback()(lambda: None)
    dns_cmd.register(app)
    runner = CliRunner()
    r = runner.invoke(app, ["dns", "--db", str(db), "--json"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert any(x["reason"] == "tunnelling" for x in out["suspicious"])
    r = runner.invoke(app, ["dns", "--db", str(db)])
    assert r.exit_code == 1 and "Suspicious domains" in r.stdout and "Per source group" in r.stdout
    assert runner.invoke(app, ["dns", "--db", str(tmp_path / "none.duckdb")]).exit_code == 3


def test_latency_percentiles_from_log_buckets_within_one_percent():
    """The histogram percentiles match exact nearest-rank percentiles within ~1 % (half a 2 % bucket)."""
    import numpy as np

    rng = np.random.default_rng(3)
    d = rng.lognormal(mean=-5, sigma=1.2, size=20_000)
    rows = [(int(i // 2), "10.244.9.7", f"n{i % 7}.example.com", "A", "NOERROR", float(x), None) for i, x in enumerate(d)]
    con = connect_memory()
    _load(con, _q(rows))
    r = dns.analyse_dns(con, WINDOW)
    g = r.by_group.row(0, named=True)
    s = np.sort(d)
    for q in (50, 95, 99):
        exact = s[int(np.ceil(q / 100 * len(s))) - 1]
        assert abs(g[f"p{q}_latency_s"] / exact - 1) < 0.011, q
    assert g["latency_basis"] == "raw" and not any("rollups" in n for n in r.notes)


def test_newly_seen_history_from_rollups_and_cli_marks_approximate_latency(tmp_path):
    """History held only as rollups still counts as the baseline; rollup latency is marked `~`."""
    db = tmp_path / "r.duckdb"
    con = connect(db)
    rows = [(T0 + timedelta(hours=h), FW, "10.244.1.5", name, "A", "NOERROR", 10, 0, 0.02, 0.004,
             T0 + timedelta(hours=h), T0 + timedelta(hours=h, minutes=59))
            for h in range(12) for name in ["old.example.com"] + (["brand-new.example.org"] if h == 11 else [])]
    df = pl.DataFrame(rows, schema={"hour": pl.Datetime("us"), "firewall": pl.String, "source_ip": pl.String,
                                    "query_name": pl.String, "query_type": pl.String, "response_code": pl.String,
                                    "queries": pl.Int64, "errors": pl.Int64, "total_duration_s": pl.Float64,
                                    "max_duration_s": pl.Float64, "first_seen": pl.Datetime("us"),
                                    "last_seen": pl.Datetime("us")}, orient="row")
    con.register("r", df.to_arrow())
    con.execute("INSERT INTO dns_rollups BY NAME SELECT *, md5(random()::VARCHAR) AS rollup_id FROM r").fetchall()
    con.unregister("r")
    sus = dns.suspicious_domains(con, Window(T0 + timedelta(hours=6), T0 + timedelta(hours=12)))
    assert sus["domain"].to_list() == ["example.org"] and sus.row(0, named=True)["reason"] == "newly_seen"
    r = dns.analyse_dns(con, WINDOW)
    g = r.by_group.row(0, named=True)
    assert g["latency_basis"] == "rollup-mean" and abs(g["p50_latency_s"] / 0.002 - 1) < 0.011
    con.close()
    app = typer.Typer()
    app.callback()(lambda: None)
    dns_cmd.register(app)
    out = CliRunner().invoke(app, ["dns", "--db", str(db), "--start", T0.isoformat(), "--end",
                                   (T0 + timedelta(hours=12)).isoformat()])
    assert out.exit_code == 0, out.output
    assert "~2.0" in out.stdout and "approximated from hourly rollups" in out.stdout


def _fleet_queries() -> pl.DataFrame:
    """Two firewalls: fw-weu's upstream resolver fails a third of its pods' queries (SERVFAIL, slow), fw-neu is
    healthy and four times busier; one pod behind fw-neu tunnels through a TXT zone."""
    rows = []
    for i in range(600):
        rows.append(("fw-neu", i * 30, "10.221.1.5", f"api{i % 20}.partner-example.com", "A", "NOERROR", 0.004))
        rows.append(("fw-neu", i * 30 + 1, "10.221.1.6", "db.partner-example.com", "A", "NOERROR", 0.004))
    for i in range(300):
        broken = i % 3 == 0
        rows.append(("fw-weu", i * 60, "10.220.1.5", "api.partner-example.com", "A",
                     "SERVFAIL" if broken else "NOERROR", 1.5 if broken else 0.004))
    rows += [("fw-neu", 5000 + i, "10.221.1.66", f"{'%032x' % (i * 7919)}.t.exfil-example.net", "TXT", "NXDOMAIN", 0.01)
             for i in range(120)]
    return pl.DataFrame([(T0 + timedelta(seconds=s), fw, src, name, typ, rc, dur, None)
                         for fw, s, src, name, typ, rc, dur in rows],
                        schema={"time": pl.Datetime("us"), "firewall": pl.String, "source_ip": pl.String,
                                "query_name": pl.String, "query_type": pl.String, "response_code": pl.String,
                                "duration_s": pl.Float64, "error_message": pl.String}, orient="row")


def test_each_firewall_dns_proxy_is_judged_on_its_own_and_suspicion_once_for_the_fleet():
    from egresslens import fleet

    con = connect_memory()
    _load(con, _fleet_queries())
    r = dns.analyse_dns(con, WINDOW)
    health = {row["firewall"]: row for row in r.health.iter_rows(named=True)}
    assert sorted(health) == ["fw-neu", "fw-weu"] and [p.firewall for p in r.parts] == ["fw-neu", "fw-weu"]
    # pooled, fw-weu's broken resolver is lost in fw-neu's volume; on its own it fails a third of its queries
    assert health["fw-weu"]["servfail_rate"] == 100 / 300 and health["fw-weu"]["p95_latency_s"] > 1
    assert health["fw-neu"]["servfail_rate"] == 0 and health["fw-neu"]["p95_latency_s"] < 0.02
    # each part is exactly what `--firewall` gives
    for part in r.parts:
        with fleet.scoped(con, part.firewall):
            alone = dns.analyse_dns(con, WINDOW)
        assert alone.totals == part.totals and alone.by_group.equals(part.by_group)
        assert alone.health.equals(part.health)
    # every row names its firewall; the same name behind both firewalls is two rows; names are counted once
    assert set(r.by_group["firewall"]) == {"fw-neu", "fw-weu"}
    assert r.by_name.filter(pl.col("query_name") == "api.partner-example.com")["firewall"].to_list() == ["fw-weu"]
    assert r.totals["queries"] == sum(p.totals["queries"] for p in r.parts)
    assert r.totals["names"] == len(set(_fleet_queries()["query_name"]))
    # one assessment of the fleet: the tunnelling pod behind fw-neu, once, whoever asks
    assert r.suspicion.compromised == ["10.221.1.66"]
    assert r.suspicious.filter(pl.col("reason") == "tunnelling")["domain"].to_list() == ["exfil-example.net"]
    assert all(p.suspicion is r.suspicion for p in r.parts)
    doc = r.to_dict()
    assert [f["name"] for f in doc["firewalls"]] == ["fw-neu", "fw-weu"]
    assert doc["firewalls"][1]["health"]["servfail_rate"] == 100 / 300
    assert all("firewall" in row for row in doc["by_group"] + doc["by_name"] + doc["failures"])


def test_dns_command_shows_a_table_of_the_firewalls_then_a_section_each(tmp_path):
    db = tmp_path / "s.duckdb"
    con = connect(db)
    _load(con, _fleet_queries())
    con.close()
    from egresslens.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["dns", "--db", str(db), "--since", "12h"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert out.exit_code == 1, out.output  # the tunnelling pod
    text = out.output
    assert "Per firewall (each judged on its own queries)" in text
    assert text.index("Firewall fw-neu:") < text.index("Firewall fw-weu:")
    weu = next(line for line in text.splitlines() if line.lstrip().startswith("fw-weu"))
    assert "33.3%" in weu  # its SERVFAIL rate, on its own
    assert text.count("Suspicious domains") == 1 and text.count("Compromised sources") == 1
    one = runner.invoke(app, ["dns", "--db", str(db), "--since", "12h", "--firewall", "fw-weu", "--json"])
    doc = json.loads(one.stdout)
    assert [f["name"] for f in doc["firewalls"]] == ["fw-weu"] and doc["totals"]["queries"] == 300


def test_a_firewall_whose_dns_proxy_logged_nothing_says_so_instead_of_zeros(tmp_path):
    """fw-sea has traffic in the window but no DNS-proxy query (DNS proxy off, or its category not ingested)."""
    from types import SimpleNamespace

    from egresslens.report.estate import firewall_section

    flows = pl.DataFrame([(T0 + timedelta(seconds=41), "fw-sea", "network", "TCP", "10.230.0.4", "203.0.113.9", None,
                           5432, "Deny", "Default Action")],
                         schema={"time": pl.Datetime("us"), "firewall": pl.String, "kind": pl.String,
                                 "protocol": pl.String, "source_ip": pl.String, "destination_ip": pl.String,
                                 "destination_fqdn": pl.String, "destination_port": pl.Int32, "action": pl.String,
                                 "action_reason": pl.String}, orient="row")
    db = tmp_path / "s.duckdb"
    con = connect(db)
    _load(con, _fleet_queries(), flows)
    r = dns.analyse_dns(con, WINDOW)
    con.close()
    # the fleet's table has a row for it: no query, no rate (not a 0% failure rate)
    sea = r.health.filter(pl.col("firewall") == "fw-sea").row(0, named=True)
    assert r.health["firewall"].to_list() == ["fw-neu", "fw-sea", "fw-weu"]
    assert sea["queries"] == 0 and sea["real_failure_rate"] is None and sea["p95_latency_s"] is None
    # the report's section of the firewall says so
    recs = SimpleNamespace(firewalls=[], items=[])
    snat = SimpleNamespace(findings=pl.DataFrame())
    facts = firewall_section(None, "fw-sea", recs, snat, r).facts
    assert any(f.startswith("DNS proxy: no query in the window") for f in facts), facts
    assert any(f.startswith("DNS proxy: 300 queries") for f in firewall_section(None, "fw-weu", recs, snat, r).facts)
    from egresslens.cli import app

    out = CliRunner().invoke(app, ["dns", "--db", str(db), "--start", WINDOW.start.isoformat(), "--end",
                                   WINDOW.end.isoformat()], env={"COLUMNS": "100", "NO_COLOR": "1"})
    text = out.output
    assert out.exit_code == 1, text  # the tunnelling pod behind fw-neu
    assert "Firewall fw-sea: no DNS proxy query in the window" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("fw-sea"))
    assert row.split()[1] == "0" and "%" not in row
    # its section holds no empty tables: the next section follows its one line
    after = text[text.index("Firewall fw-sea:"):text.index("Firewall fw-weu:")]
    assert "Per source group" not in after and "Top 10 names" not in after
