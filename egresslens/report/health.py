"""Report sections on the firewall's health and threats: SNAT capacity, DNS health, threat-intel/IDPS."""

from __future__ import annotations

import polars as pl

from egresslens import fleet
from egresslens.analyse import frame
from egresslens.report.estate import anchor
from egresslens.report.model import (CRITICAL, COMMAND, FINDING, INT, LINK, MS, PCT, TIME, WARNING, Section, Table,
                                     counted)
from egresslens.report.sections import Inputs
from egresslens.report.signals import suspicion

MAX_TIMELINE_POINTS = 2_000  # per firewall; longer windows are drawn per hour (peak of the hour)
MAX_ROWS = 200  # rows kept per table whose length grows with the window's names or sources (the rest counted)


def snat(inp: Inputs, result) -> Section:  # noqa: ANN001 - egresslens.snat.SnatResult
    s = Section("snat", "SNAT capacity", "Estimated SNAT ports in use per destination against the capacity, the "
                "time to exhaustion at the current trend, and the fix sizing.")
    cfg = result.config
    s.facts += [f"Assumes {cfg.describe()}.", f"Warning at {cfg.warning:.0%}, critical at {cfg.critical:.0%}; "
                f"rates {result.rate_basis}."] + [f"note: {n}" for n in result.notes]
    f = result.findings
    for r in f.iter_rows(named=True):
        tte = r["minutes_to_exhaustion"]
        when = "" if tte is None else (", exhausted now" if tte == 0 else f", exhaustion in {tte:.0f} min")
        s.add(CRITICAL if r["severity"] == "critical" else FINDING,
              f"SNAT {r['severity']}: {r['destination']}:{r['port']}/{r['protocol']} peaks at "
              f"{r['peak_utilisation']:.0%} of {result.capacity:,} ports{when}")
    table = f.select("severity", "destination", "port", "protocol", "peak_utilisation", "peak_ports", "peak_minute",
                     "minutes_warning", "minutes_to_exhaustion", "fix") if f.height else pl.DataFrame(
        schema={"severity": pl.String, "destination": pl.String, "peak_utilisation": pl.Float64})
    if f.height:
        table = table.with_columns(pl.col("destination").map_elements(lambda d: inp.drill("destination", d),
                                                                      return_dtype=pl.String).alias("drilldown"))
    tl = result.timeline
    if tl.height and tl.group_by("firewall").len()["len"].max() > MAX_TIMELINE_POINTS:
        tl = (tl.with_columns(pl.col("minute").dt.truncate("1h"))
              .group_by("firewall", "minute").agg(pl.col("estimate").max(), pl.col("ports").max(),
                                                  pl.col("busiest_destination").sort_by("estimate").last())
              .sort("firewall", "minute"))
    s.data["timeline"] = tl.select("firewall", "minute", "estimate", "busiest_destination") if tl.height else tl
    s.data["peaks"] = f.select("destination", "port", "peak_utilisation").head(15) if f.height else pl.DataFrame(
        schema={"destination": pl.String, "port": pl.Int32, "peak_utilisation": pl.Float64})
    s.data["thresholds"] = pl.DataFrame({"warning": [cfg.warning], "critical": [cfg.critical]})
    s.tables.append(Table("Destinations near SNAT exhaustion", table, {
        "peak_utilisation": PCT, "peak_ports": INT, "peak_minute": TIME, "minutes_warning": INT,
        "minutes_to_exhaustion": "float", "drilldown": COMMAND}))
    busiest = tl.sort("estimate", descending=True).row(0, named=True) if tl.height else None
    if busiest and not f.height:
        s.facts.append(f"Busiest: {busiest['busiest_destination']} at {busiest['estimate']:.0%}.")
    s.summary = {"capacity_ports_per_destination": result.capacity, "critical": int((f["severity"] == "critical").sum())
                 if f.height else 0, "warning": int((f["severity"] == "warning").sum()) if f.height else 0,
                 "peak_utilisation": busiest["estimate"] if busiest else None}
    return s


def dns(inp: Inputs, result) -> Section:  # noqa: ANN001 - egresslens.dns.DnsResult
    s = Section("dns", "DNS health", "DNS-proxy failure rates and latency percentiles per source group, "
                "suspicious zones and the sources that queried them.")
    t = result.totals
    s.facts.append(f"{t.get('queries', 0):,} queries for {t.get('names', 0):,} names; real failures "
                   f"{t.get('real_failures', 0):,}, search-domain noise {t.get('noise_queries', 0):,}, upstream "
                   f"errors {t.get('upstream_errors', 0):,}.")
    s.facts += [f"note: {n}" for n in result.notes]
    zones, compromised = suspicion(result)
    for r in compromised.iter_rows(named=True):
        s.add(CRITICAL, f"source {r['source_ip']} looks compromised: it queried {', '.join(r['zones'][:3])} "
                        f"({', '.join(r['reasons'])})")
    flagged = zones.filter(pl.col("never_allow"))
    if flagged.height and not compromised.height:
        s.add(CRITICAL, f"{counted(flagged.height, 'zone')} must never be allowed "
                        f"({', '.join(flagged['zone'].head(3).to_list())})")
    new = zones.filter(~pl.col("never_allow"))
    not_listed = sum(result.suspicion.omitted.values())
    if new.height:
        n = new.height + not_listed
        s.add(WARNING, f"{counted(n, 'newly seen domain')} {'deserves' if n == 1 else 'deserve'} a look")
    by_group = result.by_group.select("source_group", "queries", "nxdomain_rate", "servfail_rate", "refused_rate",
                                      "upstream_errors_rate", "p50_latency_s", "p95_latency_s", "p99_latency_s",
                                      "latency_basis")
    failures = result.failures.select("query_name", "queries", "failures", "failure_rate", "sources")
    per_firewall = []
    if result.parts:  # several firewalls: each DNS proxy judged on its own, and every row says whose it is
        by_group, failures = (df.select(pl.col("firewall").map_elements(fleet.label, return_dtype=pl.String), *cols)
                              for df, cols in ((result.by_group, by_group.columns), (result.failures, failures.columns)))
        health = result.health.select(
            pl.col("firewall").map_elements(fleet.label, return_dtype=pl.String),
            pl.col("firewall").map_elements(lambda f: "#" + anchor(f), return_dtype=pl.String).alias("section"),
            "queries", "names", "real_failure_rate", "nxdomain_rate", "servfail_rate", "upstream_errors_rate",
            "noise_share", "p50_latency_s", "p95_latency_s", "p99_latency_s")
        per_firewall = [Table("Per firewall", health, {
            "section": LINK, "queries": INT, "names": INT, "real_failure_rate": PCT, "nxdomain_rate": PCT,
            "servfail_rate": PCT, "upstream_errors_rate": PCT, "noise_share": PCT, "p50_latency_s": MS,
            "p95_latency_s": MS, "p99_latency_s": MS},
            note="each firewall's DNS proxy over its own queries; real failures leave search-domain noise out")]
        s.facts.append(f"{len(result.parts)} firewalls, each judged on its own queries; suspicious zones and "
                       "compromised sources are one assessment of them all.")
    s.data["groups"] = (by_group.with_columns(pl.format("{}: {}", "firewall", "source_group").alias("source_group"))
                        if "firewall" in by_group.columns else by_group).head(12)
    zones_t = zones.head(MAX_ROWS).with_columns(pl.col("zone").map_elements(lambda z: inp.drill("fqdn", z),
                                                                            return_dtype=pl.String).alias("drilldown"))
    comp_t = compromised.head(MAX_ROWS).with_columns(pl.col("source_ip").map_elements(
        lambda ip: inp.drill("source", ip), return_dtype=pl.String).alias("drilldown"))
    rates = {c: PCT for c in ("nxdomain_rate", "servfail_rate", "refused_rate", "upstream_errors_rate")}
    s.tables += per_firewall + [
        Table("Per source group", by_group, {"queries": INT, **rates, "p50_latency_s": MS, "p95_latency_s": MS,
                                             "p99_latency_s": MS}),
        Table("Suspicious zones", zones_t, {"queries": INT, "drilldown": COMMAND}, total=zones.height + not_listed,
              note=f"{not_listed:,} newly seen zones without another signal are not listed" if not_listed else ""),
        Table("Compromised sources", comp_t, {"drilldown": COMMAND}, total=compromised.height),
        Table("Real failures", failures, {"queries": INT, "failures": INT, "failure_rate": PCT}, limit=15,
              total=result.failures.height + result.more.get("failures", 0)),
    ]
    s.summary = {**{k: v for k, v in t.items()}, "suspicious_zones": zones.height,
                 "never_allow_zones": flagged.height, "compromised_sources": compromised.height}
    return s


def threats(inp: Inputs) -> Section:
    s = Section("threats", "Threat-intel and IDPS events", "Every threat-intelligence and IDPS event of the window, "
                "grouped by what fired, where it went and who sent it.")
    grouped = """SELECT kind, coalesce(description, signature_id) AS what, coalesce(fqdn, destination_ip) AS destination,
                        destination_port AS port, source_ip, action, min(severity) AS severity, count(*)::BIGINT AS events,
                        min(time) AS first_seen, max(time) AS last_seen
                 FROM threats WHERE time >= $start AND time < $end GROUP BY ALL"""
    events = frame(inp.con, f"""SELECT * FROM ({grouped})
                                ORDER BY events DESC, first_seen, what, destination, port, source_ip, action
                                LIMIT {MAX_ROWS}""", inp.params())
    n, groups, srcs = inp.con.execute(f"""
      SELECT coalesce(sum(events), 0), count(*),
             list(DISTINCT source_ip ORDER BY source_ip) FILTER (WHERE source_ip IS NOT NULL)
      FROM ({grouped})""", inp.params()).fetchall()[0]
    srcs = srcs or []
    hourly = frame(inp.con, """SELECT date_trunc('hour', time) AS hour, kind, count(*)::BIGINT AS events
                               FROM threats WHERE time >= $start AND time < $end GROUP BY ALL ORDER BY hour""",
                   inp.params())
    if n:
        s.add(CRITICAL, f"{counted(n, 'threat-intel/IDPS event')} from {counted(len(srcs), 'source')} "
                        f"({', '.join(srcs[:3])}{', ...' if len(srcs) > 3 else ''})")
    else:
        s.facts.append("No threat-intel or IDPS event in the window.")
    events = events.with_columns(pl.col("source_ip").map_elements(lambda ip: inp.drill("source", ip),
                                                                  return_dtype=pl.String).alias("drilldown"))
    s.data["hourly"] = hourly
    s.tables.append(Table("Events", events, {"events": INT, "first_seen": TIME, "last_seen": TIME,
                                             "drilldown": COMMAND}, total=int(groups)))
    s.summary = {"events": int(n), "sources": len(srcs)}
    return s
