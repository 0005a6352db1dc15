"""SNAT capacity model: hand-made flows with known per-minute rates, config, rollup fallback, metric."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from egresslens import snat
from egresslens.analyse import Window
from egresslens.store import connect_memory

T0 = datetime(2025, 7, 1, 0, 0)
FW = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/azurefirewalls/fw1"


def _flows(spec: list[tuple[str, str | None, str | None, int, str, int, int]], minutes: int = 60) -> pl.DataFrame:
    """spec rows: (kind, destination_ip, destination_fqdn, port, protocol, conns_per_minute, first_minute).
    Each row contributes `conns_per_minute` allowed flows every minute from first_minute to the end."""
    rows = []
    for kind, ip, fqdn, port, proto, rate, first in spec:
        for m in range(first, minutes):
            for i in range(rate):
                rows.append((T0 + timedelta(minutes=m, seconds=(i * 59) // max(rate, 1)), kind, proto, ip, fqdn, port,
                             f"10.240.0.{(i % 7) + 4}"))
    return pl.DataFrame(rows, schema={"time": pl.Datetime("us"), "kind": pl.String, "protocol": pl.String,
                                      "destination_ip": pl.String, "destination_fqdn": pl.String,
                                      "destination_port": pl.Int32, "source_ip": pl.String}, orient="row")


def _load(con, df: pl.DataFrame, action: str = "Allow") -> None:
    df = df.with_columns(pl.lit(FW).alias("firewall"), pl.lit(action).alias("action"))
    con.register("f", df.to_arrow())
    con.execute("""INSERT INTO flows BY NAME SELECT *, md5(concat_ws('|', time, source_ip, destination_ip,
                   destination_fqdn, random())) AS event_id, 'structured' AS log_format FROM f""")
    con.unregister("f")


WINDOW = Window(T0, T0 + timedelta(hours=1))
# 1 IP x 2,496 x 2 instances = 4,992 ports; 4-minute hold: 1,000/min -> 4,000 ports = 80.1 %
CFG = snat.SnatConfig(public_ips=1, instances=2)


def test_capacity_rules():
    assert snat.SnatConfig(public_ips=10).capacity() == 2496 * 10 * 2
    assert snat.SnatConfig(public_ips=10, port_rule="first-five").capacity() == 2496 * 5 * 2
    assert snat.SnatConfig(nat_gateway_ips=2).capacity() == 64512 * 2
    assert "first five" in snat.SnatConfig(public_ips=10, port_rule="first-five").describe()
    with pytest.raises(ValueError):
        snat.SnatConfig(instances=1)
    with pytest.raises(ValueError):
        snat.SnatConfig(public_ips=251)


def test_ips_needed_brings_peak_under_target():
    cfg = snat.SnatConfig(public_ips=1)
    for peak in (100, 4000, 4992, 39936, 200_000, 900_000):
        n = snat.ips_needed(peak, cfg)
        assert n is not None and snat.utilisation(peak, cfg, public_ips=n) < cfg.effective_target
        if n > 1:
            assert snat.utilisation(peak, cfg, public_ips=n - 1) >= cfg.effective_target
    assert snat.ips_needed(2_000_000, cfg) is None  # beyond 250 IPs
    assert snat.ips_needed(30_000, snat.SnatConfig(port_rule="first-five")) is None
    assert snat.nat_gateway_ips_needed(200_000, cfg) == 4


def test_hot_destination_flagged_critical_with_fix():
    con = connect_memory()
    _load(con, _flows([
        ("network", "20.60.1.10", None, 443, "TCP", 1300, 20),  # 5,200 ports at full hold -> 104 %
        ("network", "52.1.1.1", None, 443, "TCP", 200, 0),  # 800 ports, 16 %
        ("network", "10.1.2.3", None, 443, "TCP", 5000, 0),  # RFC 1918: never SNAT-ed
        ("application", None, "mystore.blob.core.windows.net", 443, "HTTPS", 1050, 30),  # 84 % warning
    ]))
    res = snat.analyse_snat(con, WINDOW, CFG)
    f = res.findings
    assert set(f["destination"]) == {"20.60.1.10", "mystore.blob.core.windows.net"}
    hot = f.filter(pl.col("destination") == "20.60.1.10").row(0, named=True)
    assert hot["severity"] == "critical"
    assert hot["peak_ports"] == pytest.approx(5200)
    assert hot["peak_minute"] == T0 + timedelta(minutes=23)
    assert hot["minutes_to_exhaustion"] is not None and hot["minutes_to_exhaustion"] < 2
    assert hot["ips_needed"] == 2 and hot["utilisation_after_fix"] < 0.8
    assert "use 2 public IPs" in hot["fix"] and "NAT Gateway with 1" in hot["fix"]
    assert hot["top_sources"] and hot["top_sources"][0].startswith("10.240.0.")
    app = f.filter(pl.col("destination") == "mystore.blob.core.windows.net").row(0, named=True)
    assert app["severity"] == "warning" and app["private_endpoint"] == "Azure Storage"
    assert "private endpoint" in app["fix"]
    assert res.has_critical and res.rate_basis == "per-minute"
    assert res.minutes.filter(pl.col("destination") == "20.60.1.10")["minute"].min() == T0 + timedelta(minutes=23)
    # a second run with the recommended IP count finds nothing for it
    res2 = snat.analyse_snat(con, WINDOW, snat.SnatConfig(public_ips=2))
    assert "20.60.1.10" not in set(res2.findings["destination"])
    # denied flows take no ports
    con2 = connect_memory()
    _load(con2, _flows([("network", "20.60.1.10", None, 443, "TCP", 1300, 20)]), action="Deny")
    assert snat.analyse_snat(con2, WINDOW, CFG).findings.height == 0


def test_quiet_firewall_reports_nothing():
    con = connect_memory()
    _load(con, _flows([("network", "20.60.1.10", None, 443, "TCP", 100, 0),
                       ("application", None, "api.example.com", 443, "HTTPS", 300, 0)]))
    res = snat.analyse_snat(con, WINDOW, CFG)
    assert res.findings.height == 0 and not res.has_critical
    assert res.timeline.height > 0 and res.timeline["estimate"].max() == pytest.approx(1200 / 4992)


def _hot_rollup():
    """A store holding one hour, as a rollup only, of 1,300 connections a minute from 10.240.0.4."""
    con = connect_memory()
    con.execute("""INSERT INTO flow_rollups (rollup_id, hour, firewall, kind, protocol, source_ip, destination_ip,
                   destination_port, action, hits, first_seen, last_seen)
                   VALUES ('r1', $h, $fw, 'network', 'TCP', '10.240.0.4', '20.60.1.10', 443, 'Allow', 60 * 1300, $h, $h)""",
                {"h": T0, "fw": FW})
    return con


def test_rollups_spread_evenly_and_flagged():
    con = _hot_rollup()
    res = snat.analyse_snat(con, WINDOW, CFG)
    assert res.rate_basis == "hourly-spread" and any("spread evenly" in n for n in res.notes)
    row = res.findings.row(0, named=True)
    assert row["destination"] == "20.60.1.10" and row["severity"] == "critical"
    assert row["peak_ports"] == pytest.approx(5200)
    assert row["top_sources"] == ["10.240.0.4 (78000)"]


def test_a_rollup_hour_counts_only_its_minutes_inside_the_window():
    con = _hot_rollup()
    last_minute = snat.analyse_snat(con, Window(T0 + timedelta(minutes=59), T0 + timedelta(hours=2)), CFG)
    assert last_minute.rate_basis == "hourly-spread"
    assert last_minute.timeline["minute"].to_list() == [T0 + timedelta(minutes=59)]
    assert last_minute.timeline["ports"].to_list() == [pytest.approx(1300)]
    # a window opening after the hour's last minute has started holds none of its minutes
    none = snat.analyse_snat(con, Window(T0 + timedelta(minutes=59, seconds=30), T0 + timedelta(hours=2)), CFG)
    assert none.rate_basis == "none" and none.timeline.height == 0 and none.findings.height == 0


def test_hold_time_fraction_and_config(tmp_path):
    p = tmp_path / "snat.toml"
    p.write_text('[snat]\npublic_ips = 2\nhold_time = "90s"\nport_rule = "first_five"\n'
                 '[snat.thresholds]\nwarning = 70\ncritical = 90\n')
    cfg = snat.load_config(p, instances=3)
    assert (cfg.public_ips, cfg.instances, cfg.hold_time_s, cfg.port_rule) == (2, 3, 90.0, "first-five")
    assert (cfg.warning, cfg.critical, cfg.effective_target) == (0.7, 0.9, 0.7)
    con = connect_memory()
    _load(con, _flows([("network", "20.60.1.10", None, 443, "TCP", 1000, 0)], minutes=10))
    cfg = snat.SnatConfig(hold_time_s=90, warning=0.2, critical=0.9)
    res = snat.analyse_snat(con, Window(T0, T0 + timedelta(minutes=10)), cfg)
    assert res.findings["peak_ports"][0] == pytest.approx(1500)


def test_metric_beside_estimate():
    con = connect_memory()
    _load(con, _flows([("network", "20.60.1.10", None, 443, "TCP", 500, 0)], minutes=30))
    con.execute("CREATE TABLE IF NOT EXISTS metrics (time TIMESTAMP, firewall VARCHAR, metric VARCHAR, average DOUBLE, maximum DOUBLE)")
    con.execute("""INSERT INTO metrics BY NAME SELECT $t + to_minutes(i.range) AS time, 'fw1' AS firewall,
                   'SNATPortUtilization' AS metric, 10.0 AS average, 20.0 AS maximum FROM range(30) i""", {"t": T0}).fetchall()
    res = snat.analyse_snat(con, Window(T0, T0 + timedelta(minutes=30)), CFG)
    fit = res.metric_fit.row(0, named=True)
    assert fit["firewall"] == FW and fit["peak_metric"] == pytest.approx(0.2)
    assert fit["points"] == 30 and fit["peak_estimate"] == pytest.approx(2000 / 4992)
    assert res.timeline["metric"].drop_nulls().len() == 30


def _cli():
    import typer

    from egresslens.commands import snat as snat_cmd

    app = typer.Typer()
    app.callback()(lambda: None)
    snat_cmd.register(app)
    return app


def test_cli_json_and_exit_codes(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from egresslens.store import connect

    db = tmp_path / "s.duckdb"
    con = connect(db)
    _load(con, _flows([("network", "20.60.1.10", None, 443, "TCP", 1300, 20)]))
    con.close()
    runner = CliRunner()
    r = runner.invoke(_cli(), ["snat", "--db", str(db), "--since", "1h", "--json"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["findings"][0]["destination"] == "20.60.1.10" and out["findings"][0]["severity"] == "critical"
    assert "'all'" in out["assumes"]
    r = runner.invoke(_cli(), ["snat", "--db", str(db), "--public-ips", "2"])
    assert r.exit_code == 0, r.output
    assert "No destination" in r.stdout
    monkeypatch.setenv("EGRESSLENS_DB", str(db))
    r = runner.invoke(_cli(), ["snat", "--public-ips", "1", "--port-rule", "first-five"])
    assert r.exit_code == 1 and "critical" in r.stdout and "first-five" in r.stdout
    r = runner.invoke(_cli(), ["snat", "--instances", "1"])
    assert r.exit_code == 2
    r = runner.invoke(_cli(), ["snat", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 3


def test_a_compromised_top_source_is_marked_with_its_evidence():
    con = _hot_rollup()
    con.execute("""INSERT INTO threats (event_id, time, firewall, kind, source_ip, fqdn, action, description, log_format)
                   VALUES (md5('t1'), $h, $fw, 'threat_intel', '10.240.0.4', 'c2.bad-example.net', 'deny', 'Bot Networks',
                           'structured')""", {"h": T0 + timedelta(minutes=5), "fw": FW})
    row = snat.analyse_snat(con, WINDOW, CFG).findings.row(0, named=True)
    assert row["top_sources"] == ["10.240.0.4 (78000; compromised: threat intel)"]
