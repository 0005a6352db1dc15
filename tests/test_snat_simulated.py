"""Done-when checks for `snat` on simulated scenarios with a known hot destination."""

from __future__ import annotations

from functools import lru_cache

import pytest

from egresslens import snat
from egresslens.analyse import resolve_window
from egresslens.ingest import store_canonical_frames
from egresslens.simulate import generate
from egresslens.store import connect_memory

EVENTS = 250_000  # per hour; the burst gives the hot destination share x EVENTS / 60 connections a minute


@lru_cache(maxsize=None)
def _store(hot_share: float):
    s = generate(hours=6, events_per_hour=EVENTS, seed=7, hot_share=hot_share)
    con = connect_memory()
    store_canonical_frames(con, flows=s.flows)
    return con, s.truth


def _run(hot_share: float, cfg: snat.SnatConfig) -> tuple[snat.SnatResult, dict]:
    con, truth = _store(hot_share)
    return snat.analyse_snat(con, resolve_window(con, since="24h"), cfg), truth


CFG = snat.SnatConfig(public_ips=1, instances=2)  # 4,992 ports per destination


@pytest.mark.parametrize("share,severity", [(0.35, "critical"), (0.26, "warning")])
def test_hot_destination_flagged_at_the_right_severity(share, severity):
    res, truth = _run(share, CFG)
    hot = truth["snat_hot_destination"]
    expected = share * EVENTS / 60 * (CFG.hold_time_s / 60) / CFG.capacity()  # mean demand in the burst
    assert (expected >= CFG.critical) == (severity == "critical")
    assert res.findings.height == 1, res.findings
    f = res.findings.row(0, named=True)
    assert (f["destination"], f["port"], f["protocol"]) == (hot["fqdn"], hot["port"], hot["protocol"])
    assert f["severity"] == severity
    assert f["peak_utilisation"] == pytest.approx(expected, rel=0.1)
    assert hot["burst_start"][:13] <= f["first_minute"].isoformat()[:13] < hot["burst_end"][:13]
    assert res.has_critical == (severity == "critical")
    # the recommended number of public IPs brings the recomputed utilisation under target
    n = f["ips_needed"]
    assert snat.utilisation(f["peak_ports"], CFG, public_ips=n) < CFG.effective_target
    again, _ = _run(share, snat.SnatConfig(public_ips=n, instances=2))
    assert again.findings.height == 0
    assert all(s.startswith("10.244.") for s in f["top_sources"])


def test_first_five_rule_and_nat_gateway():
    res, _ = _run(0.35, snat.SnatConfig(public_ips=1, instances=2, port_rule="first-five"))
    f = res.findings.row(0, named=True)
    assert f["ips_needed"] <= 5 and f["nat_gateway_ips_needed"] == 1
    res, _ = _run(0.35, snat.SnatConfig(nat_gateway_ips=1))
    assert res.findings.height == 0


def test_no_hot_destination_reports_nothing():
    res, _ = _run(0.0, CFG)
    assert res.findings.height == 0 and not res.has_critical
    assert res.timeline["estimate"].max() < CFG.warning
