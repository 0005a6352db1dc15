"""SNAT demand per destination and minute from connection logs, findings and their fixes (model: `capacity`)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import Window, coverage, frame, json_rows, register_temp, run_sql
from egresslens.snat.capacity import (
    FIRST_FIVE_LIMIT,
    MAX_PUBLIC_IPS,
    SnatConfig,
    ips_needed,
    nat_gateway_ips_needed,
    paas_service,
)
from egresslens.snat.metric import metric_fit
from egresslens.suspicion import Suspicion, assessment


@dataclass
class SnatResult:
    window: Window
    config: SnatConfig
    capacity: int
    rate_basis: str  # "per-minute", "hourly-spread", "mixed" or "none"
    notes: list[str]
    findings: pl.DataFrame  # one row per destination at warning or above
    minutes: pl.DataFrame  # per minute-bucket and destination at warning or above
    timeline: pl.DataFrame  # per firewall and minute: busiest destination's estimate, metric beside it
    metric_fit: pl.DataFrame  # per firewall: fit of SNATPortUtilization against the estimate
    top_sources: pl.DataFrame  # per flagged destination: sources driving it (`compromised`: suspicion evidence kinds)
    assumptions: dict[str, Any] = field(default_factory=dict)
    # where public_ips / instances / nat_gateway_ips came from (flag, config file, firewall resource, default)
    capacity_sources: dict[str, str] = field(default_factory=dict)

    @property
    def has_critical(self) -> bool:
        return self.findings.height > 0 and (self.findings["severity"] == "critical").any()

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
            "capacity_ports_per_destination": self.capacity,
            "assumes": self.config.describe(),
            "assumptions": self.assumptions,
            "capacity_sources": self.capacity_sources,
            "config": asdict(self.config),
            "rate_basis": self.rate_basis,
            "notes": self.notes,
            "findings": json_rows(self.findings),
            "metric_fit": json_rows(self.metric_fit),
        }



# --- SQL --------------------------------------------------------------------------------------

_DEST = ("CASE WHEN kind = 'application' THEN coalesce(destination_fqdn, destination_ip) "
         "ELSE coalesce(destination_ip, destination_fqdn) END")
_SNAT_FILTER = ("action = 'Allow' AND kind IN ('application', 'network') "
                "AND coalesce(protocol, '') <> 'ICMP'")

_RAW_MINUTES_SQL = f"""
SELECT firewall, kind, protocol, {_DEST} AS destination, destination_port AS port,
       date_trunc('minute', time) AS minute, count(*)::DOUBLE AS conns, 'minute' AS basis
FROM flows
WHERE time >= $start AND time < $end AND {_SNAT_FILTER}
GROUP BY ALL
"""

# Hours held only as rollups, one row per destination key and hour: `conns` is the connections a
# minute when the hour's hits are spread evenly over its 60 minutes. Only hours with at least one
# minute inside the window count (those minutes are expanded later, for candidate keys only).
_ROLLUP_HOURS_SQL = f"""
WITH raw_hours AS (SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM flows
                   WHERE time >= $start AND time < $end)
SELECT r.firewall, kind, protocol, {_DEST} AS destination, destination_port AS port, r.hour,
       sum(hits)::DOUBLE / 60 AS conns
FROM flow_rollups r ANTI JOIN raw_hours h ON r.firewall = h.firewall AND r.hour = h.hour
WHERE r.hour >= date_trunc('hour', $start::TIMESTAMP) AND r.hour < $end
  AND r.hour + INTERVAL 59 MINUTE >= $start AND {_SNAT_FILTER}
GROUP BY ALL
"""

_KEY_JOIN = ("{t}.firewall = k.firewall AND {t}.kind = k.kind AND {t}.protocol IS NOT DISTINCT FROM k.protocol "
             "AND {t}.destination = k.destination AND {t}.port IS NOT DISTINCT FROM k.port")

# Per candidate key (`kid`, from `snat_candidates`) and minute: raw minutes as they are, and each rollup
# hour's 60 minutes with the hour's even rate, clipped to the window.
_CANDIDATE_MINUTES_SQL = f"""
SELECT k.kid, s.minute, s.conns, s.basis
FROM snat_minutes s JOIN snat_candidates k ON {_KEY_JOIN.format(t='s')}
UNION ALL
SELECT k.kid, h.hour + to_minutes(i.range) AS minute, h.conns, 'hourly' AS basis
FROM snat_hours h JOIN snat_candidates k ON {_KEY_JOIN.format(t='h')} CROSS JOIN range(60) i
WHERE h.hour + to_minutes(i.range) >= $start AND h.hour + to_minutes(i.range) < $end
"""


_TEMP_TABLES = ("snat_minutes", "snat_hours", "snat_excluded", "snat_candidates", "snat_demand")


def _has_rollups(con: duckdb.DuckDBPyConnection, window: Window) -> bool:
    sql = "SELECT count(*) FROM (SELECT 1 FROM flow_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end LIMIT 1)"
    return con.execute(sql, {"start": window.start, "end": window.end}).fetchall()[0][0] > 0


def _excluded_destinations(con: duckdb.DuckDBPyConnection, ranges: tuple[str, ...]) -> list[str]:
    """Network-rule destination IPs inside the no-SNAT ranges (decided on distinct IPs, not rows)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in ranges]
    ips = [r[0] for r in con.execute(
        "SELECT destination FROM snat_minutes WHERE kind = 'network' "
        "UNION SELECT destination FROM snat_hours WHERE kind = 'network'").fetchall()]
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            continue
        if any(addr in n for n in nets):
            out.append(ip)
    return out


def analyse_snat(con: duckdb.DuckDBPyConnection, window: Window, config: SnatConfig | None = None,
                 suspicion: Suspicion | None = None) -> SnatResult:
    """Estimate per-destination SNAT port demand per minute and flag destinations near exhaustion.
    `suspicion`: the window's assessment when the caller already has it (top sources are marked from it)."""
    config = config or SnatConfig()
    params = {"start": window.start, "end": window.end}
    notes: list[str] = []
    capacity = config.capacity()
    hold_min = config.hold_time_s / 60

    for t in _TEMP_TABLES:
        run_sql(con, f"DROP TABLE IF EXISTS {t}")
    run_sql(con, f"CREATE TEMP TABLE snat_minutes AS {_RAW_MINUTES_SQL}", params)
    rollups = _ROLLUP_HOURS_SQL if _has_rollups(con, window) else f"SELECT * FROM ({_ROLLUP_HOURS_SQL}) LIMIT 0"
    run_sql(con, f"CREATE TEMP TABLE snat_hours AS {rollups}", params)
    bases = {b for b, t in (("minute", "snat_minutes"), ("hourly", "snat_hours"))
             if con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {t} LIMIT 1)").fetchall()[0][0]}
    rate_basis = ("none" if not bases else "per-minute" if bases == {"minute"}
                  else "hourly-spread" if bases == {"hourly"} else "mixed")
    if "hourly" in bases:
        notes.append("Some hours exist only as hourly rollups: their connections were spread evenly over "
                     "60 minutes, so bursts shorter than an hour are underestimated there.")

    excluded = _excluded_destinations(con, config.no_snat_ranges)
    register_temp(con, "snat_excluded", pl.DataFrame({"destination": excluded}, schema={"destination": pl.String}))

    # Candidate destinations: an upper bound on the rolling demand (hold x busiest minute) that can
    # reach half the warning threshold, plus the 20 busiest per firewall for the timeline. A rollup
    # hour's busiest minute is its even rate, so the bound needs no per-minute rows for those hours:
    # only the candidates' rollup hours are spread over their minutes.
    full = int(math.floor(hold_min))
    frac = hold_min - full
    bound_floor = 0.5 * config.warning * capacity
    run_sql(con, f"""
    CREATE TEMP TABLE snat_candidates AS
    SELECT row_number() OVER (ORDER BY firewall, kind, destination, port, protocol) AS kid,
           firewall, kind, protocol, destination, port FROM (
      SELECT *, row_number() OVER (PARTITION BY firewall ORDER BY bound DESC, kind, destination, port, protocol) AS rk
      FROM (SELECT firewall, kind, protocol, destination, port, max(conns) * {max(hold_min, 1.0)!r} AS bound
            FROM (SELECT firewall, kind, protocol, destination, port, conns FROM snat_minutes
                  UNION ALL SELECT firewall, kind, protocol, destination, port, conns FROM snat_hours)
            WHERE destination IS NOT NULL
              AND NOT (kind = 'network' AND destination IN (SELECT destination FROM snat_excluded))
            GROUP BY ALL))
    WHERE bound >= {bound_floor!r} OR rk <= 20
    """)
    rolling_full = (f"sum(conns) OVER (w RANGE BETWEEN INTERVAL '{full - 1} minutes' PRECEDING AND CURRENT ROW)"
                    if full >= 1 else "0")
    rolling_ext = f"sum(conns) OVER (w RANGE BETWEEN INTERVAL '{full} minutes' PRECEDING AND CURRENT ROW)"
    ports_expr = f"({rolling_full}) + {frac!r} * (({rolling_ext}) - ({rolling_full}))" if frac > 0 else rolling_full
    run_sql(con, f"""
    CREATE TEMP TABLE snat_demand AS
    WITH c AS (
      SELECT kid, minute, sum(conns) AS conns, min(basis) AS basis FROM ({_CANDIDATE_MINUTES_SQL}) GROUP BY kid, minute
    ), r AS (
      -- partitioned by the integer key: the same rows and order as by the key's five columns, sorted faster
      SELECT *, {ports_expr} AS ports FROM c WINDOW w AS (PARTITION BY kid ORDER BY minute)
    )
    SELECT k.firewall, k.kind, k.protocol, k.destination, k.port, r.minute, r.conns, r.basis, r.ports,
           r.ports / {float(capacity)!r} AS utilisation,
           regr_slope(r.ports / {float(capacity)!r}, epoch(r.minute) / 60) OVER (
             PARTITION BY r.kid ORDER BY r.minute
             RANGE BETWEEN INTERVAL '{config.trend_minutes - 1} minutes' PRECEDING AND CURRENT ROW) AS slope_per_min
    FROM r JOIN snat_candidates k USING (kid)
    """, params)
    minutes = frame(con, f"""
      SELECT firewall, destination, port, protocol, kind, minute, conns AS connections, ports, utilisation,
             slope_per_min,
             CASE WHEN utilisation >= 1 THEN 0.0
                  WHEN slope_per_min > 0 THEN (1 - utilisation) / slope_per_min END AS minutes_to_exhaustion,
             CASE WHEN utilisation >= {config.critical!r} THEN 'critical' ELSE 'warning' END AS severity,
             basis
      FROM snat_demand WHERE utilisation >= {config.warning!r}
      ORDER BY firewall, destination, port, protocol, minute
    """)
    timeline = frame(con, """
      SELECT firewall, minute, max(utilisation) AS estimate, list(destination ORDER BY utilisation DESC, destination)[1] AS busiest_destination,
             max(ports) AS ports
      FROM snat_demand GROUP BY ALL ORDER BY firewall, minute
    """)

    findings = _findings(minutes, config)
    top = _top_sources(con, window, findings, config)
    if findings.height:
        top = _mark_compromised(con, window, top, suspicion)
        tops = (top.group_by(["firewall", "destination", "port", "protocol"], maintain_order=True)
                .agg(pl.when(pl.col("compromised").is_null()).then(pl.format("{} ({})", "source_ip", "connections"))
                     .otherwise(pl.format("{} ({}; compromised: {})", "source_ip", "connections", "compromised"))
                     .alias("top_sources")))
        findings = findings.join(tops, on=["firewall", "destination", "port", "protocol"], how="left", nulls_equal=True)
        findings = findings.with_columns(pl.col("top_sources").fill_null([]))
        findings = findings.with_columns(
            pl.struct(findings.columns).map_elements(lambda r: _fix_text(r, config), return_dtype=pl.String).alias("fix"))
        findings = _in_order(findings)
    else:
        findings = findings.with_columns(pl.lit(None, pl.List(pl.String)).alias("top_sources"),
                                         pl.lit(None, pl.String).alias("fix"))
    timeline, fit = metric_fit(con, window, timeline, config)
    if fit.height == 0:
        notes.append("No SNATPortUtilization metric in the store: the estimate is not calibrated.")
    cover = suspicion.coverage if suspicion is not None and suspicion.coverage is not None and \
        suspicion.window == window else coverage(con, window)
    if not cover.complete:
        notes.append(f"Coverage: {cover.describe()}; peaks and minutes are of those hours only.")
    if not config.uses_nat_gateway and config.public_ips > FIRST_FIVE_LIMIT:
        notes.append("Microsoft's metrics page says only the first five public IPs add SNAT ports; the NAT "
                     "Gateway page multiplies by all of them. This result assumes "
                     f"'{config.port_rule}' (change with port_rule).")
    assumptions = {
        "per_ip_rule": config.port_rule,
        "hold_time_s": config.hold_time_s,
        "model": "ports(dest, minute) = connections started in the last hold_time (each flow holds a port for the hold time)",
        "destination_key": "(destination IP, port, protocol); FQDN for application-rule flows",
        "snat_applies_to": "allowed application-rule flows; allowed network-rule flows outside no_snat_ranges",
        "no_snat_ranges": list(config.no_snat_ranges),
    }
    for t in _TEMP_TABLES:
        run_sql(con, f"DROP TABLE IF EXISTS {t}")
    return SnatResult(window, config, capacity, rate_basis, notes, findings, minutes, timeline, fit, top, assumptions)


_KEY = ["firewall", "destination", "port", "protocol"]


def _findings(minutes: pl.DataFrame, config: SnatConfig) -> pl.DataFrame:
    if minutes.height == 0:
        return pl.DataFrame(schema={
            "firewall": pl.String, "destination": pl.String, "port": pl.Int32, "protocol": pl.String,
            "kind": pl.String, "severity": pl.String, "peak_utilisation": pl.Float64, "peak_ports": pl.Float64,
            "peak_minute": pl.Datetime("us"), "first_minute": pl.Datetime("us"), "last_minute": pl.Datetime("us"),
            "minutes_warning": pl.UInt32, "minutes_critical": pl.UInt32, "minutes_to_exhaustion": pl.Float64,
            "rate_basis": pl.String, "ips_needed": pl.Int64, "nat_gateway_ips_needed": pl.Int64,
            "utilisation_after_fix": pl.Float64, "private_endpoint": pl.String})
    f = (minutes.group_by(_KEY, maintain_order=True).agg(
        pl.col("kind").first(),
        pl.col("utilisation").max().alias("peak_utilisation"),
        pl.col("ports").max().alias("peak_ports"),
        pl.col("minute").filter(pl.col("utilisation") >= pl.col("utilisation").max() - 1e-9).min().alias("peak_minute"),
        pl.col("minute").min().alias("first_minute"),
        pl.col("minute").max().alias("last_minute"),
        pl.len().alias("minutes_warning"),
        (pl.col("severity") == "critical").sum().alias("minutes_critical"),
        # projected exhaustion when the destination first crossed the warning threshold
        pl.col("minutes_to_exhaustion").sort_by("minute").first().alias("minutes_to_exhaustion"),
        pl.col("basis").unique().sort().str.join("+").alias("rate_basis"),
    ).with_columns(
        pl.when(pl.col("peak_utilisation") >= config.critical).then(pl.lit("critical"))
        .otherwise(pl.lit("warning")).alias("severity"),
        pl.col("rate_basis").replace({"minute": "per-minute", "hourly": "hourly-spread", "hourly+minute": "mixed"}),
    ))
    ips = [ips_needed(p, config) for p in f["peak_ports"]]
    ngs = [nat_gateway_ips_needed(p, config) for p in f["peak_ports"]]
    after = [
        (p / config.capacity(public_ips=n, nat_gateway_ips=0)) if (n is not None and not config.uses_nat_gateway)
        else (p / config.capacity(nat_gateway_ips=g)) if g is not None else None
        for p, n, g in zip(f["peak_ports"], ips, ngs)
    ]
    pe = [paas_service(d) for d in f["destination"]]
    f = f.with_columns(pl.Series("ips_needed", ips, pl.Int64), pl.Series("nat_gateway_ips_needed", ngs, pl.Int64),
                       pl.Series("utilisation_after_fix", after, pl.Float64), pl.Series("private_endpoint", pe, pl.String))
    cols = ["firewall", "destination", "port", "protocol", "kind", "severity", "peak_utilisation", "peak_ports",
            "peak_minute", "first_minute", "last_minute", "minutes_warning", "minutes_critical",
            "minutes_to_exhaustion", "rate_basis", "ips_needed", "nat_gateway_ips_needed", "utilisation_after_fix",
            "private_endpoint"]
    return _in_order(f.select(cols))


def _in_order(findings: pl.DataFrame) -> pl.DataFrame:
    """Worst first, then by key: a total order, so equal peaks come out the same on every run."""
    return findings.sort(["peak_utilisation", *_KEY], descending=[True] + [False] * len(_KEY), nulls_last=True)


def _fix_text(r: dict[str, Any], config: SnatConfig) -> str:
    parts = []
    if r["private_endpoint"]:
        parts.append(f"use a private endpoint for this {r['private_endpoint']} account: its traffic then needs no SNAT")
    peak = r["peak_ports"]
    target = config.effective_target
    if config.uses_nat_gateway:
        g = r["nat_gateway_ips_needed"]
        if g is not None and g > config.nat_gateway_ips:
            parts.append(f"give the NAT Gateway {g} public IPs (now {config.nat_gateway_ips}): peak "
                         f"{peak / config.capacity(nat_gateway_ips=g):.0%} < target {target:.0%}")
        elif g is None:
            parts.append("even 16 NAT Gateway IPs cannot hold this peak: reuse connections (keep-alive, pooling) "
                         "or spread the load over more destinations")
    else:
        n = r["ips_needed"]
        if n is not None:
            parts.append(f"use {n} public IPs on the firewall (now {config.public_ips}, add {max(n - config.public_ips, 0)}): "
                         f"peak {peak / config.capacity(public_ips=n):.0%} < target {target:.0%} "
                         f"(rule '{config.port_rule}')")
            if config.port_rule == "all" and n > FIRST_FIVE_LIMIT:
                parts.append("if only the first five IPs add ports (metrics-page rule), more IPs will not help")
        else:
            lim = FIRST_FIVE_LIMIT if config.port_rule == "first-five" else MAX_PUBLIC_IPS
            parts.append(f"no public IP count within {lim} (rule '{config.port_rule}') brings the peak under {target:.0%}")
        g = r["nat_gateway_ips_needed"]
        if g is not None:
            parts.append(f"or attach a NAT Gateway with {g} public IP(s): peak "
                         f"{peak / config.capacity(nat_gateway_ips=g):.1%}")
    if r.get("top_sources"):
        parts.append("top sources: " + ", ".join(r["top_sources"][:3]))
    return "; ".join(parts)


def _mark_compromised(con: duckdb.DuckDBPyConnection, window: Window, top: pl.DataFrame,
                      susp: Suspicion | None = None) -> pl.DataFrame:
    """`compromised`: the suspicion model's evidence kinds for top sources it marks compromised, else null."""
    if top.height == 0:
        return top.with_columns(pl.lit(None, pl.String).alias("compromised"))
    susp = assessment(con, window, given=susp)
    kinds = {r["source_ip"]: ", ".join(k.replace("_", " ") for k in r["kinds"]) for r in susp.sources.iter_rows(named=True)}
    return top.with_columns(pl.col("source_ip").replace_strict(kinds, default=None, return_dtype=pl.String).alias("compromised"))


def _top_sources(con: duckdb.DuckDBPyConnection, window: Window, findings: pl.DataFrame, config: SnatConfig) -> pl.DataFrame:
    empty = pl.DataFrame(schema={"firewall": pl.String, "destination": pl.String, "port": pl.Int32,
                                 "protocol": pl.String, "source_ip": pl.String, "connections": pl.Int64,
                                 "share": pl.Float64})
    if findings.height == 0:
        return empty
    hot = findings.select(*_KEY, "kind", "first_minute", "last_minute").with_columns(
        (pl.col("first_minute") - pl.duration(seconds=config.hold_time_s)).alias("t0"),
        (pl.col("last_minute") + pl.duration(minutes=1)).alias("t1"))
    rollups = ""
    if _has_rollups(con, window):
        rollups = f"""
          UNION ALL
          SELECT r.firewall, r.kind, r.protocol, {_DEST}, r.destination_port, r.source_ip, r.hour, r.hits
          FROM flow_rollups r ANTI JOIN (SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM flows
                                         WHERE time >= $start AND time < $end) x
               ON r.firewall = x.firewall AND r.hour = x.hour
          WHERE r.hour >= date_trunc('hour', $start::TIMESTAMP) AND r.hour < $end AND {_SNAT_FILTER}"""
    con.register("snat_hot", hot.to_arrow())
    try:
        sql = f"""
        WITH ev AS (
          SELECT firewall, kind, protocol, {_DEST} AS destination, destination_port AS port, source_ip, time, 1::BIGINT AS n
          FROM flows WHERE time >= $start AND time < $end AND {_SNAT_FILTER}{rollups}
        ), s AS (
          SELECT h.firewall, h.destination, h.port, h.protocol, ev.source_ip, sum(ev.n)::BIGINT AS connections
          FROM ev JOIN snat_hot h ON ev.firewall = h.firewall AND ev.kind = h.kind AND ev.protocol = h.protocol
               AND ev.destination = h.destination AND ev.port IS NOT DISTINCT FROM h.port
          WHERE ev.time >= date_trunc('hour', h.t0) AND ev.time < h.t1
          GROUP BY ALL
        )
        SELECT *, connections / sum(connections) OVER (PARTITION BY firewall, destination, port, protocol) AS share
        FROM s QUALIFY row_number() OVER (PARTITION BY firewall, destination, port, protocol ORDER BY connections DESC, source_ip) <= {int(config.top_sources)}
        ORDER BY firewall, destination, port, protocol, connections DESC, source_ip
        """
        return frame(con, sql, {"start": window.start, "end": window.end})
    finally:
        con.unregister("snat_hot")


# --- SNATPortUtilization metric ---------------------------------------------------------------
