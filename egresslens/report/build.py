"""One report from a store and a window: every analysis run once, each section computed and drawn."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import duckdb

from egresslens.analyse import Window, parse_duration, resolve_window
from egresslens.report import charts, health, sections
from egresslens.report.model import Report


def windows(con: duckdb.DuckDBPyConnection, since: str, compare_to: str | None, end=None,
            start=None) -> tuple[Window, Window | None]:
    """The report window (ending at the newest data, like every analysis, unless `end` says otherwise;
    `start` instead of `since`) and the comparison window of length `compare_to` just before it.
    ValueError for a bad duration or time."""
    window = resolve_window(con, since=since, start=start, end=end)
    if not compare_to:
        return window, None
    length = parse_duration(compare_to)
    if window.start - datetime.min < length:
        raise ValueError(f"--compare-to {compare_to} reaches back before the year 1")
    return window, Window(window.start - length, window.start)


def build_report(con: duckdb.DuckDBPyConnection, window: Window, *, baseline: Window | None = None, policy=None,
                 recommend_config=None, snat_config=None, dns_config=None, db: str | None = None, since: str = "24h",
                 generated_at: datetime | None = None, banner: list[str] | None = None, estate=None,
                 firewall: str | None = None, policy_notes: list[str] | None = None) -> Report:
    """The whole report. `policy`: rules from `egresslens.recommend.load_policy` (or None); `estate`: the
    firewalls and policies (`egresslens.estate`), each firewall judged against its own; `firewall`: the
    store's name of the one firewall to report on (default: all of them, with a fleet table first)."""
    from egresslens import fleet

    with fleet.scoped(con, firewall):
        return _build(con, window, baseline, policy, recommend_config, snat_config, dns_config, db, since,
                      generated_at, banner, estate, firewall, policy_notes or [])


def _build(con, window, baseline, policy, recommend_config, snat_config, dns_config, db, since, generated_at,  # noqa: ANN001
           banner, estate, firewall, policy_notes) -> Report:
    from egresslens import dns, fleet, snat
    from egresslens.recommend import recommend_fleet
    from egresslens.report import estate as estate_sections

    inp = sections.Inputs(con, window, baseline, generated_at or datetime.now(timezone.utc).replace(tzinfo=None),
                          db=db, since=since)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t, 3)
        return out

    recs = timed("recommend", lambda: recommend_fleet(con, window, estate, firewall=firewall, policy=policy,
                                                      config=recommend_config))
    # one suspicion assessment for the whole report: recommend's (it also knows the policy's names)
    snat_result = timed("snat", lambda: snat.analyse_snat(con, window, snat_config, suspicion=recs.suspicion))
    dns_result = timed("dns", lambda: dns.analyse_dns(con, window, dns_config, suspicion=recs.suspicion))
    many = firewall is None and len(recs.firewalls) > 1
    out = [timed("fleet", estate_sections.fleet_section, inp, recs, snat_result)] if many else []
    out += [
        timed("freshness", sections.freshness, inp),
        timed("egress", sections.egress, inp),
        timed("changes", sections.changes, inp),
        timed("denied", sections.denied, inp, recs),
        timed("rules", sections.rules, inp, recs, policy is not None or bool(estate)),
        timed("snat_section", health.snat, inp, snat_result),
        timed("dns_section", health.dns, inp, dns_result),
        timed("threats", health.threats, inp),
    ]
    if estate or policy_notes:  # a policy given or kept: the snapshot used and what changed since the day before
        out.insert(out.index(next(x for x in out if x.id == "rules")) + 1,
                   timed("policy", estate_sections.policy_section, inp, policy_notes))
    if many:
        out += [estate_sections.firewall_section(inp, f["firewall"], recs, snat_result, dns_result)
                for f in recs.firewalls]
    if firewall is not None:
        banner = [f"Firewall {fleet.label(firewall)} only ({firewall})."] + list(banner or [])
    t = time.perf_counter()
    for s in out:
        charts.draw(s)
    timings["charts"] = round(time.perf_counter() - t, 3)
    return Report(window, baseline, inp.generated_at, db or "", out, banner=list(banner or []), timings=timings)
