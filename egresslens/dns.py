"""DNS-proxy analytics: volumes, failure rates and latency per source group and per name; names
resolved and then denied; search-domain noise apart from real failures; and the DNS view of the suspicion
model (:mod:`egresslens.suspicion`: tunnelling, threat intelligence, generated, look-alike and newly
seen domains), the same assessment `recommend` withholds names from.

Counts come from hourly groups (raw `dns_queries`, or `dns_rollups` for hours only held as
rollups, exactly as `analyse.dns_hours`). Latency percentiles come from a log-bucket histogram
per source and name over the same rows: bucket b holds durations in [1.02^b, 1.02^(b+1))
seconds and a percentile is the geometric middle of the bucket where the cumulative count crosses
it, so it is within about 1 % of the exact (nearest-rank) value. Hours held only as rollups carry a
mean and a maximum per group, not a distribution: their queries enter the histogram at their
group's mean duration, so percentiles there are approximate (tails are understated), and each row
says so in ``latency_basis``. The network-layer "resolved then denied" link needs raw timing
(rollup-only hours do not contribute to it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import Coverage, Window, coverage, frame, json_rows, register_temp, run_sql
from egresslens.escape import sql_string
from egresslens.suspicion import NOISE_SUFFIXES, Suspicion, SuspicionConfig, assessment, owner_zone
from egresslens.suspicion.suffixes import owner_sql, register_rules

LATENCY_BUCKET_BASE = 1.02  # histogram bucket width: percentiles within ~1 % (half a bucket)
_LN_BASE = f"ln({LATENCY_BUCKET_BASE!r})"
_MIN_DURATION_S = 1e-6  # durations below 1 us (and 0) count as 1 us


def _bucket(expr: str) -> str:
    return f"floor(ln(greatest({expr}, {_MIN_DURATION_S!r})) / {_LN_BASE})::INTEGER"


_RAW_HOURS = """raw_hours AS (
  SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM dns_queries
  WHERE time >= $start AND time < $end
)"""
_ROLLUP_ONLY = """FROM dns_rollups r ANTI JOIN raw_hours h ON r.firewall = h.firewall AND r.hour = h.hour
WHERE r.hour >= date_trunc('hour', $start::TIMESTAMP) AND r.hour < $end"""

# Hourly groups, exactly as analyse.DNS_HOURS_SQL, with `from_rollup`.
DNS_GROUPS_SQL = f"""
WITH {_RAW_HOURS}
SELECT date_trunc('hour', time) AS hour, firewall, source_ip, query_name, query_type, response_code,
       count(*)::BIGINT AS queries, count(error_message)::BIGINT AS errors,
       coalesce(sum(duration_s), 0) AS total_duration_s, max(duration_s) AS max_duration_s,
       min(time) AS first_seen, max(time) AS last_seen, false AS from_rollup
FROM dns_queries
WHERE time >= $start AND time < $end
GROUP BY ALL
UNION ALL
SELECT r.hour, r.firewall, r.source_ip, r.query_name, r.query_type, r.response_code, r.queries,
       r.errors, r.total_duration_s, r.max_duration_s, r.first_seen, r.last_seen, true
{_ROLLUP_ONLY}
"""

# Latency histogram per (source, name) and bucket `b`: `n` answered queries (upstream failures have no
# latency), `rollup_n` of them from rollup-only hours, which put all their answered queries in the
# bucket of the group's mean duration.
DNS_LATENCY_HIST_SQL = f"""
WITH {_RAW_HOURS}
SELECT source_ip, query_name, b, sum(n) AS n, sum(rollup_n) AS rollup_n FROM (
  SELECT source_ip, query_name, {_bucket('duration_s')} AS b, count(*)::BIGINT AS n, NULL::BIGINT AS rollup_n
  FROM dns_queries
  WHERE time >= $start AND time < $end AND error_message IS NULL AND duration_s IS NOT NULL
  GROUP BY ALL
  UNION ALL
  SELECT r.source_ip, r.query_name, {_bucket('r.total_duration_s / (r.queries - coalesce(r.errors, 0))')},
         r.queries - r.errors, r.queries - r.errors
  {_ROLLUP_ONLY} AND r.queries > coalesce(r.errors, 0) AND r.total_duration_s IS NOT NULL
)
GROUP BY ALL
"""


def _latency_sql(key: str, source: str) -> str:
    """p50/p95/p99 per `key` from a (key, b, n, rollup_n) histogram relation (nearest rank)."""
    mid = f"pow({LATENCY_BUCKET_BASE!r}, b + 0.5)"
    return f"""
      SELECT {key}, any_value(latency_basis) AS latency_basis,
             {mid.replace('b + 0.5', 'min(b) FILTER (WHERE cum >= 0.50 * tot) + 0.5')} AS p50_latency_s,
             {mid.replace('b + 0.5', 'min(b) FILTER (WHERE cum >= 0.95 * tot) + 0.5')} AS p95_latency_s,
             {mid.replace('b + 0.5', 'min(b) FILTER (WHERE cum >= 0.99 * tot) + 0.5')} AS p99_latency_s
      FROM (SELECT {key}, b, sum(n) OVER (PARTITION BY {key} ORDER BY b) AS cum, sum(n) OVER (PARTITION BY {key}) AS tot,
                   CASE WHEN sum(rollup_n) OVER (PARTITION BY {key}) = 0 THEN 'raw'
                        WHEN sum(rollup_n) OVER (PARTITION BY {key}) = sum(n) OVER (PARTITION BY {key}) THEN 'rollup-mean'
                        ELSE 'mixed' END AS latency_basis
            FROM ({source}))
      GROUP BY {key}"""

FAILURE_CODES = ("NXDOMAIN", "SERVFAIL", "REFUSED")


@dataclass(frozen=True)
class DnsConfig:
    """Grouping settings; detection thresholds live in the suspicion model."""

    # source group name -> CIDRs; sources outside every group fall back to their /24 (IPv6: /64)
    groups: dict[str, list[str]] | None = None
    noise_suffixes: tuple[str, ...] = NOISE_SUFFIXES
    resolve_deny_gap_s: float = 5.0  # network deny attributed to the name resolved just before
    suspicion: SuspicionConfig = field(default_factory=SuspicionConfig)
    # rows kept per list that grows with the number of names (by name, failures, noise, upstream errors,
    # resolved then denied): the busiest first; `DnsResult.more` counts the rest, `totals` covers all
    top: int = 1000


def registrable_domain(name: str | None) -> str | None:
    """The owner zone of a query name (eTLD+1, never above a public or multi-tenant suffix: see
    :func:`egresslens.suspicion.owner_zone`), None for single labels and suffixes."""
    return owner_zone(name)


def strip_noise(name: str, suffixes: tuple[str, ...] = NOISE_SUFFIXES) -> str:
    for s in suffixes:
        if name.endswith(s):
            return name[: -len(s)]
    return name


@dataclass
class DnsResult:
    window: Window
    config: DnsConfig
    notes: list[str]
    by_group: pl.DataFrame
    by_name: pl.DataFrame
    failures: pl.DataFrame  # real failures (noise removed), per name
    noise: pl.DataFrame  # search-domain noise, per noise kind and intended name
    upstream_errors: pl.DataFrame  # forwarder failures (`i/o timeout`), per name
    resolved_then_denied: pl.DataFrame
    suspicious: pl.DataFrame
    suspicion: Suspicion
    totals: dict[str, Any] = field(default_factory=dict)
    more: dict[str, int] = field(default_factory=dict)  # rows of each list beyond the top `config.top`
    firewall: str | None = None  # the firewall this result is of (None: the whole fleet, or a store naming none)
    health: pl.DataFrame = field(default_factory=pl.DataFrame)  # one row per firewall: rates, noise, latency
    parts: list["DnsResult"] = field(default_factory=list)  # one result per firewall when the window holds several

    def summary(self) -> dict[str, Any]:
        """This firewall's health, totals and notes (`firewalls` of `to_dict`)."""
        from egresslens import fleet

        return {"firewall": self.firewall, "name": fleet.label(self.firewall) if self.firewall else None,
                "health": json_rows(self.health, 1)[0] if self.health.height else None, "totals": self.totals,
                "notes": self.notes}

    @property
    def has_findings(self) -> bool:
        return self.suspicion.has_findings

    def to_dict(self, limit: int = 200) -> dict[str, Any]:
        def rows(df: pl.DataFrame) -> list[dict[str, Any]]:
            return json_rows(df, limit)
        return {
            "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
            "config": asdict(self.config),
            "notes": self.notes,
            "totals": self.totals,
            # each firewall judged on its own (one entry for a single firewall)
            "firewalls": [p.summary() for p in self.parts] if self.parts else [self.summary()],
            "suspicious": rows(self.suspicious),
            "suspicion": self.suspicion.to_json(),
            "by_group": rows(self.by_group),
            "by_name": rows(self.by_name),
            "failures": rows(self.failures),
            "noise": rows(self.noise),
            "upstream_errors": rows(self.upstream_errors),
            "resolved_then_denied": rows(self.resolved_then_denied),
            # rows of each list not shown: beyond config.top, or beyond `limit` here
            "more": {k: self.more.get(k, 0) + max(0, getattr(self, k).height - limit) for k in
                     ("by_name", "failures", "noise", "upstream_errors", "resolved_then_denied")},
        }


def _noise_case(suffixes: tuple[str, ...]) -> str:
    whens = " ".join(f"WHEN ends_with(query_name, '{s}') THEN 'search suffix {s}'" for s in suffixes)
    return (f"CASE WHEN query_name = 'wpad' OR starts_with(query_name, 'wpad.') THEN 'wpad' {whens} END")


def _source_groups(ips: list[str | None], groups: dict[str, list[str]] | None) -> pl.DataFrame:
    """Distinct source IPs -> group name (configured CIDRs first, else the /24 or /64)."""
    nets = [(g, ipaddress.ip_network(c, strict=False)) for g, cs in (groups or {}).items() for c in cs]
    nets.sort(key=lambda x: -x[1].prefixlen)  # most specific first
    out = []
    for ip in ips:
        if ip is None:
            out.append("(firewall upstream)")
            continue
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            out.append(ip)
            continue
        name = next((g for g, n in nets if addr.version == n.version and addr in n), None)
        if name is None:
            prefix = 24 if addr.version == 4 else 64
            name = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
        out.append(name)
    return pl.DataFrame({"source_ip": ips, "source_group": out}, schema={"source_ip": pl.String, "source_group": pl.String})


def _names_table(con: duckdb.DuckDBPyConnection, config: DnsConfig) -> None:
    """Temp table `dns_names`: every distinct name of `dns_h` with its noise kind, owner zone (`domain`)
    and the name the noise was for (the first listed suffix wins), all in SQL."""
    register_rules(con)
    strip = " ".join(f"WHEN ends_with(n.query_name, {sql_string(s)}) THEN left(n.query_name, length(n.query_name) - {len(s)})"
                     for s in config.noise_suffixes)
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE dns_names AS
      SELECT n.query_name, n.noise_kind, o.owner AS domain,
             CASE WHEN n.noise_kind IS NULL THEN NULL {strip} ELSE n.query_name END AS intended_name
      FROM (SELECT query_name, {_noise_case(config.noise_suffixes)} AS noise_kind
            FROM (SELECT DISTINCT query_name FROM dns_h WHERE query_name IS NOT NULL)) n
      JOIN ({owner_sql('SELECT DISTINCT query_name AS name FROM dns_h')}) o ON o.name = n.query_name""")


_RATES_SQL = """
      sum(queries)::BIGINT AS queries,
      coalesce(sum(queries) FILTER (WHERE response_code = 'NXDOMAIN'), 0)::BIGINT AS nxdomain,
      coalesce(sum(queries) FILTER (WHERE response_code = 'SERVFAIL'), 0)::BIGINT AS servfail,
      coalesce(sum(queries) FILTER (WHERE response_code = 'REFUSED'), 0)::BIGINT AS refused,
      coalesce(sum(errors), 0)::BIGINT AS upstream_errors,
      -- to the microsecond: a parallel float sum differs in its last bits from run to run
      round(sum(total_duration_s) / nullif(sum(queries), 0), 6) AS mean_latency_s, max(max_duration_s) AS max_latency_s"""
_RATE_COLS = ("nxdomain", "servfail", "refused", "upstream_errors")


def _with_rates(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(*[(pl.col(c) / pl.col("queries")).alias(f"{c}_rate") for c in _RATE_COLS])


def _latency(con: duckdb.DuckDBPyConnection, key: str, hist: str) -> None:
    """Temp table `dns_lat_<key>`: p50/p95/p99 per `key` from the histogram relation `hist`."""
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE dns_lat_{key} AS {_latency_sql(key, hist)}")


def analyse_dns(con: duckdb.DuckDBPyConnection, window: Window, config: DnsConfig | None = None,
                suspicion: Suspicion | None = None) -> DnsResult:
    """Every DNS analysis over the window (see the module docstring). Aggregated in DuckDB; each list
    that grows with the number of names holds its top `config.top` rows, and `more` counts the rest.
    `suspicion`: the window's assessment when the caller already has it (the report passes `recommend`'s,
    so both name the same findings).

    With several firewalls in the window (and no :func:`egresslens.fleet.scoped` view of one), each
    firewall's DNS-proxy health (failure rates, latency, noise, names resolved then denied) is judged on its
    own rows, one after the other (`parts`, one result each; `health`, one row each; every row of the lists
    names its `firewall`), while suspicious names and compromised sources stay one assessment of the whole
    fleet: a name withheld behind one firewall is withheld behind all."""
    from egresslens import fleet

    config = config or DnsConfig()
    names = fleet.firewalls(con, window)
    # the suspicion model first: its tables are gone before this analysis builds its own
    susp = assessment(con, window, config.suspicion, given=suspicion)
    if len(names) <= 1:
        return _analyse(con, window, config, susp, names[0] if names else None, susp.coverage)
    parts = []
    for fw in names:
        with fleet.scoped(con, fw):
            parts.append(_analyse(con, window, config, susp, fw, coverage(con, window)))
    return _combine(con, window, config, susp, parts)


def _analyse(con: duckdb.DuckDBPyConnection, window: Window, config: DnsConfig, susp: Suspicion,
             firewall: str | None, cover: Coverage | None) -> DnsResult:
    """One firewall's DNS analysis (or the store's, when it names none), with the given assessment."""
    params = {"start": window.start, "end": window.end}
    top = int(config.top)
    notes: list[str] = []
    try:
        run_sql(con, f"CREATE OR REPLACE TEMP TABLE dns_h AS {DNS_GROUPS_SQL}", params)
        run_sql(con, f"CREATE OR REPLACE TEMP TABLE dns_hist AS {DNS_LATENCY_HIST_SQL}", params)
        total, rollup_queries = con.execute(
            "SELECT coalesce(sum(queries), 0), coalesce(sum(queries) FILTER (WHERE from_rollup), 0) FROM dns_h").fetchall()[0]
        if rollup_queries:
            notes.append(f"{rollup_queries:,} of {total:,} queries come from hourly rollups (no raw rows): latency "
                         "percentiles there are approximate (each query counted at its hourly group's mean duration, so "
                         "tails are understated; max_latency_s is exact), see latency_basis; the network-layer "
                         "resolve-then-deny link uses raw rows only.")
        if cover is not None and not cover.complete:
            notes.append(f"coverage: {cover.describe()}; counts and 'first seen' speak for those hours only.")
        _names_table(con, config)
        srcs = [r[0] for r in con.execute("SELECT DISTINCT source_ip FROM dns_h").fetchall()]
        register_temp(con, "dns_groups", _source_groups(srcs, config.groups))

        _latency(con, "source_group", "SELECT g.source_group, h.b, sum(h.n) AS n, coalesce(sum(h.rollup_n), 0) AS rollup_n "
                                      "FROM dns_hist h JOIN dns_groups g ON h.source_ip = g.source_ip GROUP BY ALL")
        by_group = _with_rates(frame(con, f"""
          WITH c AS (SELECT g.source_group, {_RATES_SQL}, count(DISTINCT h.query_name) AS names,
                            coalesce(sum(h.queries) FILTER (WHERE n.noise_kind IS NOT NULL), 0)::BIGINT AS noise_queries
                     FROM dns_h h JOIN dns_groups g ON h.source_ip IS NOT DISTINCT FROM g.source_ip
                     LEFT JOIN dns_names n ON h.query_name = n.query_name GROUP BY g.source_group)
          SELECT c.*, l.p50_latency_s, l.p95_latency_s, l.p99_latency_s, l.latency_basis
          FROM c LEFT JOIN dns_lat_source_group l USING (source_group)
          ORDER BY queries DESC, source_group"""))

        # every name once (in DuckDB, spilled when large); Python sees the top rows of each list only
        run_sql(con, f"""
          CREATE OR REPLACE TEMP TABLE dns_byname AS
          SELECT c.*, n.domain, n.noise_kind, n.intended_name FROM (
            SELECT query_name, {_RATES_SQL}, count(DISTINCT source_ip) AS sources FROM dns_h GROUP BY query_name) c
          LEFT JOIN dns_names n USING (query_name)""")
        totals = dict(zip(("names", "noise_queries", "real_failures", "upstream_errors", "failing_names",
                           "upstream_names", "noise_groups"), con.execute("""
          SELECT count(*), coalesce(sum(queries) FILTER (WHERE noise_kind IS NOT NULL), 0),
                 coalesce(sum(nxdomain + servfail + refused) FILTER (WHERE noise_kind IS NULL), 0),
                 coalesce(sum(upstream_errors), 0),
                 count(*) FILTER (WHERE noise_kind IS NULL AND nxdomain + servfail + refused > 0),
                 count(*) FILTER (WHERE upstream_errors > 0),
                 (SELECT count(*) FROM (SELECT DISTINCT noise_kind, intended_name FROM dns_byname
                                        WHERE noise_kind IS NOT NULL))
          FROM dns_byname""").fetchall()[0]))
        con.execute("CREATE OR REPLACE TEMP TABLE dns_top AS SELECT query_name FROM dns_byname "
                    f"ORDER BY queries DESC, query_name LIMIT {top}").fetchall()
        _latency(con, "query_name", "SELECT h.query_name, h.b, sum(h.n) AS n, coalesce(sum(h.rollup_n), 0) AS rollup_n "
                                    "FROM dns_hist h SEMI JOIN dns_top t USING (query_name) GROUP BY ALL")
        by_name = _with_rates(frame(con, f"""
          SELECT c.* EXCLUDE (intended_name), l.p50_latency_s, l.p95_latency_s, l.p99_latency_s, l.latency_basis
          FROM dns_byname c SEMI JOIN dns_top t USING (query_name)
          LEFT JOIN dns_lat_query_name l USING (query_name)
          ORDER BY queries DESC, query_name"""))

        suspicious = suspicious_view(susp)
        flagged = sorted(set(suspicious.filter(pl.col("reason") == "tunnelling")["domain"].drop_nulls().to_list()))
        con.register("dns_flagged", pl.DataFrame({"domain": flagged}, schema={"domain": pl.String}).to_arrow())
        try:
            failures = frame(con, f"""
              SELECT query_name, domain, queries, nxdomain + servfail + refused AS failures,
                     (nxdomain + servfail + refused) / queries AS failure_rate, nxdomain, servfail, refused, sources,
                     coalesce(domain IN (SELECT domain FROM dns_flagged), false) AS suspicious_domain
              FROM dns_byname WHERE noise_kind IS NULL AND nxdomain + servfail + refused > 0
              ORDER BY suspicious_domain, failures DESC, query_name LIMIT {top}""")
        finally:
            con.unregister("dns_flagged")
        noise = frame(con, f"""
          SELECT noise_kind, intended_name, sum(queries)::BIGINT AS queries, sum(nxdomain)::BIGINT AS nxdomain,
                 sum(upstream_errors)::BIGINT AS upstream_errors, max(sources) AS sources
          FROM dns_byname WHERE noise_kind IS NOT NULL GROUP BY ALL
          ORDER BY queries DESC, noise_kind, intended_name NULLS LAST LIMIT {top}""")
        upstream = frame(con, f"""
          SELECT query_name, upstream_errors, noise_kind FROM dns_byname WHERE upstream_errors > 0
          ORDER BY upstream_errors DESC, query_name LIMIT {top}""")
        rtd, rtd_total = _resolved_then_denied(con, window, config, top)
        health = _health(con, firewall, int(totals["names"]))
    finally:
        for t in ("dns_h", "dns_hist", "dns_names", "dns_groups", "dns_lat_source_group", "dns_lat_query_name",
                  "dns_byname", "dns_top", "dns_lat_scope"):
            run_sql(con, f"DROP TABLE IF EXISTS {t}")
    more = {"by_name": max(0, totals["names"] - by_name.height),
            "failures": max(0, totals.pop("failing_names") - failures.height),
            "noise": max(0, totals.pop("noise_groups") - noise.height),
            "upstream_errors": max(0, totals.pop("upstream_names") - upstream.height),
            "resolved_then_denied": max(0, rtd_total - rtd.height)}
    totals = {"queries": int(total), "noise_queries": int(totals["noise_queries"]),
              "real_failures": int(totals["real_failures"]), "upstream_errors": int(totals["upstream_errors"]),
              "names": int(totals["names"]), "source_groups": by_group.height}
    frames = [_tagged(df, firewall) for df in (by_group, by_name, failures, noise, upstream, rtd)]
    return DnsResult(window, config, notes, *frames, suspicious, susp, totals, more, firewall=firewall, health=health)


def _tagged(df: pl.DataFrame, firewall: str | None) -> pl.DataFrame:
    """The frame with the firewall its rows are of as its first column."""
    return df.select(pl.lit(firewall, dtype=pl.String).alias("firewall"), pl.all())


def _health(con: duckdb.DuckDBPyConnection, firewall: str | None, names: int) -> pl.DataFrame:
    """One row: the DNS proxy's health over every query of the scope (rates, noise share, latency percentiles)."""
    _latency(con, "scope", "SELECT 1 AS scope, b, sum(n) AS n, coalesce(sum(rollup_n), 0) AS rollup_n FROM dns_hist "
                           "GROUP BY ALL")
    row = _with_rates(frame(con, f"""
      WITH c AS (SELECT 1 AS scope, {_RATES_SQL},
                        coalesce(sum(h.queries) FILTER (WHERE n.noise_kind IS NOT NULL), 0)::BIGINT AS noise_queries,
                        coalesce(sum(h.queries) FILTER (WHERE n.noise_kind IS NULL
                                 AND h.response_code IN ('NXDOMAIN', 'SERVFAIL', 'REFUSED')), 0)::BIGINT AS real_failures
                 FROM dns_h h LEFT JOIN dns_names n ON h.query_name = n.query_name)
      SELECT c.* EXCLUDE (scope), l.p50_latency_s, l.p95_latency_s, l.p99_latency_s, l.latency_basis
      FROM c LEFT JOIN dns_lat_scope l USING (scope)"""))
    return row.select(pl.lit(firewall, dtype=pl.String).alias("firewall"), pl.lit(names, dtype=pl.Int64).alias("names"),
                      pl.all()).with_columns(
        (pl.col("noise_queries") / pl.col("queries")).alias("noise_share"),
        (pl.col("real_failures") / pl.col("queries")).alias("real_failure_rate")).filter(pl.col("queries") > 0)


# the order of each list, as one firewall's analysis sorts it (the firewall breaks ties in a fleet)
_ORDER = {"by_group": (["queries", "source_group"], [True, False]),
          "by_name": (["queries", "query_name"], [True, False]),
          "failures": (["suspicious_domain", "failures", "query_name"], [False, True, False]),
          "noise": (["queries", "noise_kind", "intended_name"], [True, False, False]),
          "upstream_errors": (["upstream_errors", "query_name"], [True, False]),
          "resolved_then_denied": (["denials", "layer", "query_name"], [True, False, False])}


def _combine(con: duckdb.DuckDBPyConnection, window: Window, config: DnsConfig, susp: Suspicion,
             parts: list[DnsResult]) -> DnsResult:
    """A fleet's result: each firewall's lists one after another in one order, totals over them all (names
    counted once however many firewalls resolved them), each firewall's notes under its name."""
    from egresslens import fleet

    lists = {}
    for k, (by, desc) in _ORDER.items():
        frames = [getattr(p, k) for p in parts if getattr(p, k).height]
        df = pl.concat(frames, how="diagonal_relaxed") if frames else getattr(parts[0], k)
        lists[k] = df.sort(by + ["firewall"], descending=desc + [False], nulls_last=True)
    names = con.execute("""SELECT count(DISTINCT query_name) FROM (
        SELECT query_name FROM dns_queries WHERE time >= $start AND time < $end
        UNION ALL SELECT query_name FROM dns_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end)""",
                        {"start": window.start, "end": window.end}).fetchall()[0][0]
    totals = {k: sum(p.totals.get(k, 0) for p in parts)
              for k in ("queries", "noise_queries", "real_failures", "upstream_errors", "source_groups")}
    totals.update(names=int(names), firewalls=len(parts))
    more = {k: sum(p.more.get(k, 0) for p in parts) for k in _ORDER if k != "by_group"}
    said: dict[str, list[str]] = {}
    for p in parts:
        for n in p.notes:
            said.setdefault(n, []).append(fleet.label(p.firewall))
    notes = [n if len(who) == len(parts) else f"{', '.join(who)}: {n}" for n, who in said.items()]
    # every firewall has its row: one whose DNS proxy logged nothing in the window has 0 queries and no rates
    health = pl.concat([parts[0].health.clear()] + [
        p.health if p.health.height else pl.DataFrame({"firewall": [p.firewall], "queries": [0], "names": [0]})
        for p in parts], how="diagonal_relaxed")
    return DnsResult(window, config, notes, lists["by_group"], lists["by_name"], lists["failures"], lists["noise"],
                     lists["upstream_errors"], lists["resolved_then_denied"], parts[0].suspicious, susp, totals, more,
                     health=health, parts=parts)


def _flows_sql(con: duckdb.DuckDBPyConnection, window: Window, where: str) -> str:
    """Raw flows plus rollup-only hours, as (time, kind, source_ip, destination_ip, fqdn, port, rule..., n)."""
    cols = "kind, source_ip, destination_ip, destination_fqdn, destination_port, action_reason, rule_collection, rule"
    has_rollups = con.execute(
        "SELECT count(*) FROM (SELECT 1 FROM flow_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end LIMIT 1)",
        {"start": window.start, "end": window.end}).fetchall()[0][0] > 0
    sql = f"SELECT time, {cols}, 1::BIGINT AS n FROM flows WHERE time >= $start AND time < $end AND {where}"
    if has_rollups:
        sql += f"""
          UNION ALL SELECT r.hour, {', '.join('r.' + c.strip() for c in cols.split(','))}, r.hits
          FROM flow_rollups r ANTI JOIN (SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM flows
                                         WHERE time >= $start AND time < $end) x ON r.firewall = x.firewall AND r.hour = x.hour
          WHERE r.hour >= date_trunc('hour', $start::TIMESTAMP) AND r.hour < $end AND {where.replace('action', 'r.action').replace('kind', 'r.kind')}"""
    return sql


def _resolved_then_denied(con: duckdb.DuckDBPyConnection, window: Window, config: DnsConfig,
                          top: int) -> tuple[pl.DataFrame, int]:
    """The names resolved then denied (top `top` by denials per layer) and how many there are in all."""
    params = {"start": window.start, "end": window.end}
    run_sql(con, f"""CREATE OR REPLACE TEMP TABLE dns_rtd_app AS
      WITH d AS (SELECT source_ip, destination_fqdn AS query_name, sum(n)::BIGINT AS denials,
                        min(coalesce(action_reason, rule)) AS reason
                 FROM ({_flows_sql(con, window, "action = 'Deny' AND kind = 'application'")})
                 WHERE destination_fqdn IS NOT NULL GROUP BY ALL),
      r AS (SELECT source_ip, query_name, sum(queries)::BIGINT AS resolutions FROM dns_h
            WHERE response_code = 'NOERROR' AND source_ip IS NOT NULL GROUP BY ALL)
      SELECT 'application' AS layer, r.query_name, count(DISTINCT r.source_ip) AS sources, sum(r.resolutions)::BIGINT AS resolutions,
             sum(d.denials)::BIGINT AS denials, list(DISTINCT r.source_ip ORDER BY r.source_ip)[:5] AS example_sources,
             NULL::VARCHAR[] AS denied_destinations, min(d.reason) AS reason
      FROM r JOIN d ON r.source_ip = d.source_ip AND r.query_name = d.query_name
      GROUP BY r.query_name
    """, params)
    # Network layer: no answer IPs in the logs, so a denied connection is attributed to the name its
    # source resolved last, at most `resolve_deny_gap_s` earlier (ASOF join on raw rows).
    run_sql(con, f"""CREATE OR REPLACE TEMP TABLE dns_rtd_net AS
      WITH d AS (SELECT source_ip, time, destination_ip || ':' || coalesce(destination_port::VARCHAR, '') AS dest
                 FROM flows WHERE time >= $start AND time < $end AND action = 'Deny' AND kind = 'network'),
      q AS (SELECT source_ip, time AS qtime, query_name FROM dns_queries
            WHERE time >= $start - INTERVAL 1 MINUTE AND time < $end AND response_code = 'NOERROR'
              AND query_type IN ('A', 'AAAA') AND source_ip IN (SELECT DISTINCT source_ip FROM d)),
      j AS (SELECT d.*, q.query_name, q.qtime FROM d ASOF JOIN q ON d.source_ip = q.source_ip AND d.time >= q.qtime)
      SELECT 'network (inferred)' AS layer, query_name, count(DISTINCT source_ip) AS sources, NULL::BIGINT AS resolutions,
             count(*)::BIGINT AS denials, list(DISTINCT source_ip ORDER BY source_ip)[:5] AS example_sources,
             list(DISTINCT dest ORDER BY dest)[:5] AS denied_destinations, NULL::VARCHAR AS reason
      FROM j WHERE time - qtime <= to_microseconds({int(config.resolve_deny_gap_s * 1e6)})
        AND query_name NOT IN (SELECT query_name FROM dns_names WHERE noise_kind IS NOT NULL)
      GROUP BY query_name
    """, params)
    try:
        n = con.execute("SELECT (SELECT count(*) FROM dns_rtd_app) + (SELECT count(*) FROM dns_rtd_net)").fetchall()[0][0]
        out = frame(con, f"""SELECT * FROM (SELECT * FROM dns_rtd_app UNION ALL BY NAME SELECT * FROM dns_rtd_net)
                             ORDER BY denials DESC, layer, query_name LIMIT {int(top)}""")
    finally:
        for t in ("dns_rtd_app", "dns_rtd_net"):
            run_sql(con, f"DROP TABLE IF EXISTS {t}")
    return out, int(n)


def suspicious_view(susp: Suspicion) -> pl.DataFrame:
    """The DNS view of a suspicion assessment: one row per (domain, reason), names and zones only."""
    cols = {"domain": pl.String, "zone": pl.String, "reason": pl.String, "never_allow": pl.Boolean, "detail": pl.String,
            "queries": pl.Int64, "unique_names": pl.Int64, "unique_ratio": pl.Float64, "mean_label_length": pl.Float64,
            "entropy": pl.Float64, "txt_null_share": pl.Float64, "nxdomain_share": pl.Float64, "signals": pl.Int32,
            "unicode": pl.String, "looks_like": pl.String, "sources": pl.List(pl.String),
            "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us")}
    n = susp.names.filter(pl.col("scope") != "ip").with_columns(
        # the domain a finding withholds: the owner zone when it escalates there, else the name or zone itself
        pl.when(pl.col("escalates")).then(pl.coalesce("domain", "subject")).otherwise(pl.col("subject")).alias("domain"),
        pl.col("subject").alias("zone"), pl.col("kind").alias("reason"))
    return n.select([pl.col(c).cast(t) for c, t in cols.items()])


def suspicious_domains(con: duckdb.DuckDBPyConnection, window: Window, config: DnsConfig | None = None) -> pl.DataFrame:
    """Domains that must never be allowed, or that deserve a look, one row per (domain, reason), read
    from :func:`egresslens.suspicion.assess` (the same findings `recommend` withholds).

    Columns: domain (owner zone: registrable domain, never above a public or multi-tenant suffix),
    zone (the flagged zone or name, e.g. `t.exfil-example.net`), reason (`tunnelling`,
    `threat_intel`, `idps`, `generated`, `beacon`, `lookalike`, `idn`, `newly_seen`), never_allow,
    detail, queries, unique_names, unique_ratio, mean_label_length, entropy, txt_null_share,
    nxdomain_share, signals, unicode, looks_like, sources (list), first_seen, last_seen.
    """
    config = config or DnsConfig()
    return suspicious_view(assessment(con, window, config.suspicion))
