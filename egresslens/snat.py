"""SNAT port capacity: per-destination demand estimated from connection logs, against the ports
the firewall (or an attached NAT Gateway) can hand out.

Model (documented in README.md, "SNAT capacity"):

* capacity for one destination = ports per public IP (2,496) x public IPs that contribute ports x
  backend instances (at least 2). Which public IPs contribute is a setting: ``all`` (NAT Gateway
  integration page: 2,496 x up to 250 IPs) or ``first-five`` (firewall metrics page: "SNAT ports are
  currently added only for the first five public IP addresses"). Every result prints the rule.
  With a NAT Gateway attached: 64,512 ports x its public IPs (up to 16).
* ports are reusable across *different* destinations, so demand is counted per destination
  (IP or FQDN, port, protocol) and compared with the full capacity.
* demand = connections started per minute x hold time (default the 4-minute idle timeout): each
  allowed flow is assumed to hold one port for the whole hold time (conservative; Azure Firewall
  documents no reuse rule). Computed as a rolling sum of per-minute connection counts.
* application-rule traffic is always SNAT-ed; network-rule traffic to RFC 1918 (configurable
  ``no_snat_ranges``) never is; DNAT and ICMP flows use no SNAT ports and are ignored; denied flows
  never leave.
* application flows carry no destination IP: their destination key is the FQDN.

Raw `flows` give true per-minute rates. Hours only present as hourly rollups (`flow_rollups`) are
spread evenly over their 60 minutes; the result says so in ``rate_basis`` and ``notes``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import FLOW_HOURS_SQL, Window, parse_duration

# --- facts (sources in README.md, "SNAT capacity") -----------------------------------------------------
PORTS_PER_PUBLIC_IP = 2_496  # Azure Firewall, per public IP per backend instance
MIN_INSTANCES = 2
MAX_PUBLIC_IPS = 250
FIRST_FIVE_LIMIT = 5
NAT_GATEWAY_PORTS_PER_IP = 64_512
NAT_GATEWAY_MAX_IPS = 16
DEFAULT_HOLD_TIME_S = 240.0  # north-south idle timeout, 4 minutes
DEFAULT_WARNING = 0.80  # Azure Monitor baseline alert: SNATPortUtilization > 80 %
DEFAULT_CRITICAL = 0.95  # above 95 % FirewallHealth reports Degraded ("SNAT port")
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
PORT_RULES = ("all", "first-five")

# Azure PaaS public endpoints a private endpoint can replace (destination name suffixes).
PAAS_ENDPOINTS: tuple[tuple[str, str], ...] = (
    (r"\.(blob|file|queue|table|dfs|web)\.core\.windows\.net$", "Azure Storage"),
    (r"\.blob\.storage\.azure\.net$", "Azure Storage"),
    (r"\.(vault|vaultcore)\.azure\.net$", "Azure Key Vault"),
    (r"\.database\.windows\.net$", "Azure SQL"),
    (r"\.azurecr\.io$", "Azure Container Registry"),
)


def paas_service(destination: str | None) -> str | None:
    """The Azure PaaS service a destination name belongs to (storage, Key Vault, SQL, ACR), if any."""
    if not destination:
        return None
    name = destination.lower().rstrip(".")
    for pattern, service in PAAS_ENDPOINTS:
        if re.search(pattern, name):
            return service
    return None


@dataclass(frozen=True)
class SnatConfig:
    """Capacity and alerting settings. Fractions are 0..1 (a TOML value above 1 is read as percent)."""

    public_ips: int = 1
    instances: int = MIN_INSTANCES
    nat_gateway_ips: int = 0  # > 0: a NAT Gateway on AzureFirewallSubnet does the SNAT
    hold_time_s: float = DEFAULT_HOLD_TIME_S
    port_rule: str = "all"  # "all" public IPs add ports, or only the "first-five"
    warning: float = DEFAULT_WARNING
    critical: float = DEFAULT_CRITICAL
    target: float | None = None  # utilisation a fix must bring the peak under; default = warning
    no_snat_ranges: tuple[str, ...] = RFC1918
    trend_minutes: int = 15
    top_sources: int = 5
    nat_gateway_ports_per_ip: int = NAT_GATEWAY_PORTS_PER_IP

    def __post_init__(self) -> None:
        if self.port_rule not in PORT_RULES:
            raise ValueError(f"port_rule must be one of {PORT_RULES}, got {self.port_rule!r}")
        if self.public_ips < 1 or self.public_ips > MAX_PUBLIC_IPS:
            raise ValueError(f"public_ips must be 1..{MAX_PUBLIC_IPS}, got {self.public_ips}")
        if self.instances < MIN_INSTANCES:
            raise ValueError(f"instances must be at least {MIN_INSTANCES} (Azure Firewall never runs fewer)")
        if not 0 <= self.nat_gateway_ips <= NAT_GATEWAY_MAX_IPS:
            raise ValueError(f"nat_gateway_ips must be 0..{NAT_GATEWAY_MAX_IPS}")
        if self.hold_time_s <= 0:
            raise ValueError("hold_time must be positive")
        if not 0 < self.warning <= self.critical <= 1.5:
            raise ValueError("thresholds must satisfy 0 < warning <= critical")
        if self.target is not None and not 0 < self.target <= 1:
            raise ValueError("target must be in (0, 1]")
        for cidr in self.no_snat_ranges:
            ipaddress.ip_network(cidr, strict=False)

    @property
    def effective_target(self) -> float:
        return self.target if self.target is not None else self.warning

    @property
    def uses_nat_gateway(self) -> bool:
        return self.nat_gateway_ips > 0

    def contributing_ips(self, public_ips: int | None = None) -> int:
        n = self.public_ips if public_ips is None else public_ips
        return min(n, FIRST_FIVE_LIMIT) if self.port_rule == "first-five" else n

    def capacity(self, public_ips: int | None = None, nat_gateway_ips: int | None = None) -> int:
        """SNAT ports available to one destination."""
        ng = self.nat_gateway_ips if nat_gateway_ips is None else nat_gateway_ips
        if ng > 0:
            return self.nat_gateway_ports_per_ip * ng
        return PORTS_PER_PUBLIC_IP * self.contributing_ips(public_ips) * self.instances

    def describe(self) -> str:
        if self.uses_nat_gateway:
            return (f"NAT Gateway: {self.nat_gateway_ips} public IP(s) x {self.nat_gateway_ports_per_ip:,} ports "
                    f"= {self.capacity():,} ports per destination")
        rule = ("all public IPs contribute ports" if self.port_rule == "all"
                else "only the first five public IPs contribute ports")
        return (f"Azure Firewall: {self.contributing_ips()} of {self.public_ips} public IP(s) x "
                f"{PORTS_PER_PUBLIC_IP:,} ports x {self.instances} instances = {self.capacity():,} ports per destination "
                f"(per-IP rule '{self.port_rule}': {rule})")


def load_config(path: str | Path | None = None, **overrides: Any) -> SnatConfig:
    """Settings from a TOML file (top level or a ``[snat]`` table), then non-None ``overrides``.

    Keys: public_ips, instances, nat_gateway_ips, hold_time (seconds or "4m"), port_rule
    ("all" / "first-five"), no_snat_ranges, trend_minutes, top_sources, and thresholds either flat
    (warning, critical, target) or in a ``[thresholds]`` / ``[snat.thresholds]`` table.
    """
    values = config_file_values(path)
    for key, v in overrides.items():
        if v is not None:
            values[key] = v
    return SnatConfig(**values)


def config_file_values(path: str | Path | None) -> dict[str, Any]:
    """The settings a TOML file sets (SnatConfig field names), without defaults; see :func:`load_config`."""
    values: dict[str, Any] = {}
    if path is not None:
        data = tomllib.loads(Path(path).read_text())
        data = data.get("snat", data)
        thresholds = data.get("thresholds", {})
        for key in ("public_ips", "instances", "nat_gateway_ips", "trend_minutes", "top_sources",
                    "nat_gateway_ports_per_ip"):
            if key in data:
                values[key] = int(data[key])
        if "port_rule" in data or "ip_rule" in data:
            values["port_rule"] = str(data.get("port_rule", data.get("ip_rule"))).replace("_", "-").lower()
        hold = data.get("hold_time", data.get("hold_time_s"))
        if hold is not None:
            values["hold_time_s"] = _seconds(hold)
        if "no_snat_ranges" in data:
            values["no_snat_ranges"] = tuple(data["no_snat_ranges"])
        for key in ("warning", "critical", "target"):
            v = thresholds.get(key, data.get(key))
            if v is not None:
                values[key] = _fraction(v)
    return values


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    if text.endswith("s") and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1])
    return parse_duration(text).total_seconds()


def _fraction(value: Any) -> float:
    v = float(str(value).rstrip("%"))
    return v / 100 if v > 1.5 else v


def ips_needed(peak_ports: float, config: SnatConfig) -> int | None:
    """Smallest public IP count (on the firewall) that brings `peak_ports` under the target, or None
    when no count within the limit (250, or five under the first-five rule) does."""
    target = config.effective_target
    limit = FIRST_FIVE_LIMIT if config.port_rule == "first-five" else MAX_PUBLIC_IPS
    per_ip = PORTS_PER_PUBLIC_IP * config.instances
    n = max(1, math.ceil(peak_ports / (target * per_ip)))
    while n <= limit and peak_ports / (per_ip * n) >= target:
        n += 1
    return n if n <= limit else None


def nat_gateway_ips_needed(peak_ports: float, config: SnatConfig) -> int | None:
    target = config.effective_target
    per_ip = config.nat_gateway_ports_per_ip
    n = max(1, math.ceil(peak_ports / (target * per_ip)))
    while n <= NAT_GATEWAY_MAX_IPS and peak_ports / (per_ip * n) >= target:
        n += 1
    return n if n <= NAT_GATEWAY_MAX_IPS else None


def utilisation(peak_ports: float, config: SnatConfig, *, public_ips: int | None = None,
                nat_gateway_ips: int | None = None) -> float:
    """Recompute utilisation of a demand (ports) under other capacity settings."""
    return peak_ports / config.capacity(public_ips=public_ips, nat_gateway_ips=nat_gateway_ips)


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
    top_sources: pl.DataFrame  # per flagged destination: sources driving it
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
            "findings": _rows(self.findings),
            "metric_fit": _rows(self.metric_fit),
        }


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    used = {k: v for k, v in (params or {}).items() if f"${k}" in sql}
    return pl.from_arrow(con.sql(sql, params=used or None).to_arrow_table())  # type: ignore[return-value]


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> None:
    con.execute(sql, {k: v for k, v in (params or {}).items() if f"${k}" in sql}).fetchall()


def _rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dicts():
        out.append({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()})
    return out


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

_ROLLUP_MINUTES_SQL = f"""
WITH fh AS ({FLOW_HOURS_SQL}),
raw_hours AS (SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM flows
              WHERE time >= $start AND time < $end),
roll AS (SELECT fh.* FROM fh ANTI JOIN raw_hours r ON fh.firewall = r.firewall AND fh.hour = r.hour)
SELECT firewall, kind, protocol, {_DEST} AS destination, destination_port AS port,
       hour + to_minutes(i.range) AS minute, sum(hits)::DOUBLE / 60 AS conns, 'hourly' AS basis
FROM roll CROSS JOIN range(60) i
WHERE {_SNAT_FILTER} AND hour + to_minutes(i.range) >= $start AND hour + to_minutes(i.range) < $end
GROUP BY ALL
"""


def _has_rollups(con: duckdb.DuckDBPyConnection, window: Window) -> bool:
    sql = "SELECT count(*) FROM (SELECT 1 FROM flow_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end LIMIT 1)"
    return con.execute(sql, {"start": window.start, "end": window.end}).fetchall()[0][0] > 0


def _excluded_destinations(con: duckdb.DuckDBPyConnection, ranges: tuple[str, ...]) -> list[str]:
    """Network-rule destination IPs inside the no-SNAT ranges (decided on distinct IPs, not rows)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in ranges]
    ips = [r[0] for r in con.execute(
        "SELECT DISTINCT destination FROM snat_minutes WHERE kind = 'network'").fetchall()]
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            continue
        if any(addr in n for n in nets):
            out.append(ip)
    return out


def analyse_snat(con: duckdb.DuckDBPyConnection, window: Window, config: SnatConfig | None = None) -> SnatResult:
    """Estimate per-destination SNAT port demand per minute and flag destinations near exhaustion."""
    config = config or SnatConfig()
    params = {"start": window.start, "end": window.end}
    notes: list[str] = []
    capacity = config.capacity()
    hold_min = config.hold_time_s / 60

    _run(con, "DROP TABLE IF EXISTS snat_minutes")
    _run(con, f"CREATE TEMP TABLE snat_minutes AS {_RAW_MINUTES_SQL}", params)
    if _has_rollups(con, window):
        _run(con, f"INSERT INTO snat_minutes {_ROLLUP_MINUTES_SQL}", params)
    bases = {r[0] for r in con.execute("SELECT DISTINCT basis FROM snat_minutes").fetchall()}
    rate_basis = ("none" if not bases else "per-minute" if bases == {"minute"}
                  else "hourly-spread" if bases == {"hourly"} else "mixed")
    if "hourly" in bases:
        notes.append("Some hours exist only as hourly rollups: their connections were spread evenly over "
                     "60 minutes, so bursts shorter than an hour are underestimated there.")

    excluded = _excluded_destinations(con, config.no_snat_ranges)
    _run(con, "DROP TABLE IF EXISTS snat_excluded")
    _run(con, "CREATE TEMP TABLE snat_excluded (destination VARCHAR)")
    if excluded:
        con.register("snat_excl_in", pl.DataFrame({"destination": excluded}).to_arrow())
        _run(con, "INSERT INTO snat_excluded SELECT destination FROM snat_excl_in")
        con.unregister("snat_excl_in")

    # Candidate destinations: an upper bound on the rolling demand (hold x busiest minute) that can
    # reach half the warning threshold, plus the 20 busiest per firewall for the timeline.
    full = int(math.floor(hold_min))
    frac = hold_min - full
    bound_floor = 0.5 * config.warning * capacity
    _run(con, "DROP TABLE IF EXISTS snat_demand")
    rolling_full = (f"sum(conns) OVER (w RANGE BETWEEN INTERVAL '{full - 1} minutes' PRECEDING AND CURRENT ROW)"
                    if full >= 1 else "0")
    rolling_ext = f"sum(conns) OVER (w RANGE BETWEEN INTERVAL '{full} minutes' PRECEDING AND CURRENT ROW)"
    ports_expr = f"({rolling_full}) + {frac!r} * (({rolling_ext}) - ({rolling_full}))" if frac > 0 else rolling_full
    _run(con, f"""
    CREATE TEMP TABLE snat_demand AS
    WITH m AS (
      SELECT firewall, kind, protocol, destination, port, minute, sum(conns) AS conns, min(basis) AS basis
      FROM snat_minutes WHERE destination IS NOT NULL
        AND NOT (kind = 'network' AND destination IN (SELECT destination FROM snat_excluded))
      GROUP BY ALL
    ), b AS (
      SELECT *, row_number() OVER (PARTITION BY firewall ORDER BY bound DESC) AS rk FROM (
        SELECT firewall, kind, protocol, destination, port, max(conns) * {max(hold_min, 1.0)!r} AS bound
        FROM m GROUP BY firewall, kind, protocol, destination, port)
    ), c AS (
      SELECT m.* FROM m JOIN b ON m.firewall = b.firewall AND m.kind = b.kind
        AND m.protocol IS NOT DISTINCT FROM b.protocol AND m.destination = b.destination
        AND m.port IS NOT DISTINCT FROM b.port
      WHERE b.bound >= {bound_floor!r} OR b.rk <= 20
    ), r AS (
      SELECT *, {ports_expr} AS ports
      FROM c WINDOW w AS (PARTITION BY firewall, kind, protocol, destination, port ORDER BY minute)
    )
    SELECT *, ports / {float(capacity)!r} AS utilisation,
           regr_slope(ports / {float(capacity)!r}, epoch(minute) / 60) OVER (
             PARTITION BY firewall, kind, protocol, destination, port ORDER BY minute
             RANGE BETWEEN INTERVAL '{config.trend_minutes - 1} minutes' PRECEDING AND CURRENT ROW) AS slope_per_min
    FROM r
    """)
    minutes = _frame(con, f"""
      SELECT firewall, destination, port, protocol, kind, minute, conns AS connections, ports, utilisation,
             slope_per_min,
             CASE WHEN utilisation >= 1 THEN 0.0
                  WHEN slope_per_min > 0 THEN (1 - utilisation) / slope_per_min END AS minutes_to_exhaustion,
             CASE WHEN utilisation >= {config.critical!r} THEN 'critical' ELSE 'warning' END AS severity,
             basis
      FROM snat_demand WHERE utilisation >= {config.warning!r}
      ORDER BY firewall, destination, port, protocol, minute
    """)
    timeline = _frame(con, """
      SELECT firewall, minute, max(utilisation) AS estimate, arg_max(destination, utilisation) AS busiest_destination,
             max(ports) AS ports
      FROM snat_demand GROUP BY ALL ORDER BY firewall, minute
    """)

    findings = _findings(minutes, config)
    top = _top_sources(con, window, findings, config)
    if findings.height:
        tops = (top.group_by(["firewall", "destination", "port", "protocol"], maintain_order=True)
                .agg(pl.format("{} ({})", "source_ip", "connections").alias("top_sources")))
        findings = findings.join(tops, on=["firewall", "destination", "port", "protocol"], how="left", nulls_equal=True)
        findings = findings.with_columns(pl.col("top_sources").fill_null([]))
        findings = findings.with_columns(
            pl.struct(findings.columns).map_elements(lambda r: _fix_text(r, config), return_dtype=pl.String).alias("fix"))
    else:
        findings = findings.with_columns(pl.lit(None, pl.List(pl.String)).alias("top_sources"),
                                         pl.lit(None, pl.String).alias("fix"))
    timeline, fit = _metric_fit(con, window, timeline, config)
    if fit.height == 0:
        notes.append("No SNATPortUtilization metric in the store: the estimate is not calibrated.")
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
    _run(con, "DROP TABLE IF EXISTS snat_minutes")
    _run(con, "DROP TABLE IF EXISTS snat_excluded")
    _run(con, "DROP TABLE IF EXISTS snat_demand")
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
    return f.select(cols).sort(["peak_utilisation"], descending=True)


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
        ORDER BY firewall, destination, port, protocol, connections DESC
        """
        return _frame(con, sql, {"start": window.start, "end": window.end})
    finally:
        con.unregister("snat_hot")


# --- SNATPortUtilization metric ---------------------------------------------------------------

_TIME_COLS = ("time", "timestamp", "time_generated", "timegenerated")
_FW_COLS = ("firewall", "resource_id", "resourceid", "resource")
_NAME_COLS = ("metric", "metric_name", "metricname", "name")
_MAX_COLS = ("maximum", "max")
_AVG_COLS = ("average", "avg", "mean")


def _metric_rows(con: duckdb.DuckDBPyConnection, window: Window) -> pl.DataFrame | None:
    """SNATPortUtilization per firewall and minute (fraction), from a `metrics` table if one exists.

    Assumed shape (read defensively): a time column (time/timestamp/time_generated), a firewall
    column (firewall/resource_id), a metric name column (metric/metric_name/name) and either
    `maximum` / `average` columns or `value` with an `aggregation` column. Values in percent."""
    tables = {r[0].lower(): r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE lower(table_name) IN ('metrics', 'azure_metrics')").fetchall()}
    if not tables:
        return None
    table = tables.get("metrics") or tables["azure_metrics"]
    cols = {r[0].lower(): r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}

    def pick(cands: tuple[str, ...]) -> str | None:
        return next((cols[c] for c in cands if c in cols), None)

    t, fw, name = pick(_TIME_COLS), pick(_FW_COLS), pick(_NAME_COLS)
    if t is None or name is None:
        return None
    value, where = pick(_MAX_COLS) or pick(_AVG_COLS), ""
    if value is None and "value" in cols:
        value = cols["value"]
        if "aggregation" in cols:
            where = (f" AND lower(\"{cols['aggregation']}\") = (SELECT CASE WHEN bool_or(lower(\"{cols['aggregation']}\") "
                     f"IN ('maximum','max')) THEN 'maximum' ELSE 'average' END FROM \"{table}\")")
    if value is None:
        return None
    fw_expr = f"lower(\"{fw}\")" if fw else "NULL"
    sql = f"""
      SELECT {fw_expr} AS metric_firewall, date_trunc('minute', "{t}") AS minute, max("{value}")::DOUBLE / 100 AS metric
      FROM "{table}"
      WHERE lower(replace("{name}", ' ', '')) = 'snatportutilization' AND "{t}" >= $start AND "{t}" < $end {where}
      GROUP BY ALL
    """
    try:
        return _frame(con, sql, {"start": window.start, "end": window.end})
    except duckdb.Error:
        return None


def _metric_fit(con: duckdb.DuckDBPyConnection, window: Window, timeline: pl.DataFrame,
                config: SnatConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    fit_schema = {"firewall": pl.String, "points": pl.UInt32, "scale": pl.Float64, "correlation": pl.Float64,
                  "peak_metric": pl.Float64, "peak_estimate": pl.Float64, "calibrated_hold_time_s": pl.Float64}
    metric = _metric_rows(con, window)
    timeline = timeline.with_columns(pl.lit(None, pl.Float64).alias("metric"))
    if metric is None or metric.height == 0 or timeline.height == 0:
        return timeline, pl.DataFrame(schema=fit_schema)
    fws = timeline["firewall"].unique().to_list()
    mfws = metric["metric_firewall"].unique().to_list()

    def match(fw: str) -> str | None:
        for m in mfws:
            if m is None:
                continue
            if m == fw.lower() or m.endswith("/" + fw.lower()) or fw.lower().endswith("/" + m):
                return m
        return mfws[0] if len(fws) == 1 and len(mfws) == 1 else None

    mapping = pl.DataFrame({"firewall": fws, "metric_firewall": [match(f) for f in fws]},
                           schema={"firewall": pl.String, "metric_firewall": pl.String})
    m = metric.join(mapping, on="metric_firewall").select("firewall", "minute", "metric")
    timeline = timeline.drop("metric").join(m, on=["firewall", "minute"], how="full", coalesce=True).sort(
        ["firewall", "minute"])
    both = timeline.drop_nulls(["estimate", "metric"])
    fit = both.group_by("firewall").agg(
        pl.len().alias("points"),
        ((pl.col("estimate") * pl.col("metric")).sum() / (pl.col("estimate") ** 2).sum()).alias("scale"),
        pl.corr("estimate", "metric").alias("correlation"),
        pl.col("metric").max().alias("peak_metric"),
        pl.col("estimate").max().alias("peak_estimate"),
    ).with_columns((pl.col("scale") * config.hold_time_s).alias("calibrated_hold_time_s"))
    # firewalls with a metric but no overlapping estimate still show their peak
    only_metric = timeline.group_by("firewall").agg(pl.col("metric").max().alias("peak_metric"),
                                                    pl.col("estimate").max().alias("peak_estimate"))
    fit = only_metric.join(fit.drop("peak_metric", "peak_estimate"), on="firewall", how="left").filter(
        pl.col("peak_metric").is_not_null())
    fit = fit.with_columns(pl.col("points").fill_null(0)).select(list(fit_schema)).cast(fit_schema)
    return timeline, fit
