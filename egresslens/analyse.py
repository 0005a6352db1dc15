"""Shared inputs for every analysis: an observation window and hourly views over raw rows or rollups.

Recommendations, SNAT and DNS analytics must work whether the store holds raw events
(`flows`, `dns_queries`) or hourly aggregates pulled from Kusto (`flow_rollups`, `dns_rollups`).
These views give them one shape: for each (firewall, hour) raw rows are used when present,
rollups otherwise, so a window ingested both ways is never counted twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import polars as pl

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_DURATION = timedelta(days=36_525)  # a century: longer is a typo, and past datetime's range


def parse_duration(text: str) -> timedelta:
    """`30m`, `24h`, `7d`, `2w` (and `90s`) → timedelta (the `--since` syntax), at most a century."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (use forms like 30m, 24h, 7d, 2w)")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"the duration {text.strip()} is longer than a century (36525d): give a shorter one")
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    """ISO 8601 date or timestamp → naive UTC datetime (the store's convention)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


@dataclass(frozen=True)
class Window:
    """A half-open observation window [start, end) in naive UTC."""

    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    def describe(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC ({self.hours:g} h)"


_DATA_END_SQL = """
SELECT max(t) FROM (
  SELECT max(time) AS t FROM flows UNION ALL SELECT max(last_seen) FROM flow_rollups
  UNION ALL SELECT max(time) FROM dns_queries UNION ALL SELECT max(last_seen) FROM dns_rollups
)
"""


def resolve_window(
    con: duckdb.DuckDBPyConnection,
    since: str | None = None,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
) -> Window:
    """The window a command analyses. Without `--end`, it ends at the newest data in the store
    (not at the wall clock), so an analysis of an archive from last month still sees it."""
    end_dt = parse_time(end) if isinstance(end, str) else end
    if end_dt is None:
        newest = con.execute(_DATA_END_SQL).fetchall()[0][0]
        end_dt = (newest + timedelta(microseconds=1)) if newest else datetime.now(timezone.utc).replace(tzinfo=None)
    start_dt = parse_time(start) if isinstance(start, str) else start
    if start_dt is None:
        length = parse_duration(since or "7d")
        if end_dt - datetime.min < length:
            raise ValueError(f"--since {since} reaches back before the year 1")
        start_dt = end_dt - length
    if start_dt >= end_dt:
        raise ValueError(f"empty window: start {start_dt} is not before end {end_dt}")
    return Window(start_dt, end_dt)


FLOW_RAW_HOURS_SQL = """
SELECT date_trunc('hour', time) AS hour, firewall, kind, protocol, source_ip, destination_ip,
       destination_fqdn, destination_port, action, action_reason, policy, rule_collection_group,
       rule_collection, rule, count(*)::BIGINT AS hits, min(time) AS first_seen, max(time) AS last_seen
FROM flows
WHERE time >= $start AND time < $end
GROUP BY ALL
"""

_FLOW_ROLLUP_HOURS_SQL = """
SELECT r.hour, r.firewall, r.kind, r.protocol, r.source_ip, r.destination_ip, r.destination_fqdn,
       r.destination_port, r.action, r.action_reason, r.policy, r.rule_collection_group,
       r.rule_collection, r.rule, r.hits, r.first_seen, r.last_seen
FROM flow_rollups r ANTI JOIN {raw_hours} h ON r.firewall = h.firewall AND r.hour = h.hour
WHERE r.hour >= date_trunc('hour', $start::TIMESTAMP) AND r.hour < $end
"""

FLOW_HOURS_SQL = f"""
WITH raw_hours AS (
  SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM flows
  WHERE time >= $start AND time < $end
)
{FLOW_RAW_HOURS_SQL}
UNION ALL
{_FLOW_ROLLUP_HOURS_SQL.format(raw_hours="raw_hours")}
"""


def flow_hours_sql(raw_table: str) -> str:
    """FLOW_HOURS_SQL with the raw part read from `raw_table`, a table holding FLOW_RAW_HOURS_SQL's rows
    for the same window: several passes over the window then group the raw rows only once."""
    return (f"SELECT * FROM {raw_table} UNION ALL "
            + _FLOW_ROLLUP_HOURS_SQL.format(raw_hours=f"(SELECT DISTINCT firewall, hour FROM {raw_table})"))


DNS_HOURS_SQL = """
WITH raw_hours AS (
  SELECT DISTINCT firewall, date_trunc('hour', time) AS hour FROM dns_queries
  WHERE time >= $start AND time < $end
)
SELECT date_trunc('hour', time) AS hour, firewall, source_ip, query_name, query_type, response_code,
       count(*)::BIGINT AS queries, count(error_message)::BIGINT AS errors,
       coalesce(sum(duration_s), 0) AS total_duration_s, max(duration_s) AS max_duration_s,
       min(time) AS first_seen, max(time) AS last_seen
FROM dns_queries
WHERE time >= $start AND time < $end
GROUP BY ALL
UNION ALL
SELECT r.hour, r.firewall, r.source_ip, r.query_name, r.query_type, r.response_code, r.queries,
       r.errors, r.total_duration_s, r.max_duration_s, r.first_seen, r.last_seen
FROM dns_rollups r ANTI JOIN raw_hours h ON r.firewall = h.firewall AND r.hour = h.hour
WHERE r.hour >= date_trunc('hour', $start::TIMESTAMP) AND r.hour < $end
"""


_COVERED_HOURS_SQL = """
SELECT DISTINCT h FROM (
  SELECT date_trunc('hour', time) AS h FROM flows WHERE time >= $start AND time < $end
  UNION ALL SELECT hour FROM flow_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end
  UNION ALL SELECT date_trunc('hour', time) FROM dns_queries WHERE time >= $start AND time < $end
  UNION ALL SELECT hour FROM dns_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end
  UNION ALL SELECT date_trunc('hour', time) FROM threats WHERE time >= $start AND time < $end
) ORDER BY h
"""


COVERAGE_PRECISION_H = 0.05  # coverage is stated to a tenth of an hour: a window short of less is complete


def hours_text(hours: float) -> str:
    """Hours as coverage states them: whole numbers plain, else to a tenth (23.5)."""
    r = round(hours, 1)
    return f"{r:,.0f}" if r == int(r) else f"{r:,.1f}"


@dataclass(frozen=True)
class Coverage:
    """How much of a window holds data (any flow, DNS or threat record, raw or rollup), measured as
    time: the part of the window inside the hours that hold data, over the window's length.

    A window of 30 days over a store holding 7 days of logs is 720 hours of which 168 hold data:
    "nothing matched" and "first seen" mean something only over those 168 hours. A `--since 24h`
    window that starts at 10:30 touches 25 hourly slots but is 24 hours long; a day of data fills
    it ("data in all 24 hours"), and a day that begins at 11:00 fills 23.5 of its hours."""

    window: Window
    hours: tuple[datetime, ...] = ()

    @property
    def window_hours(self) -> float:
        """The window's length in hours."""
        return self.window.hours

    @property
    def covered_hours(self) -> float:
        """Hours of the window inside an hour that holds data (the first and last hour count for the part
        of them the window holds)."""
        one = timedelta(hours=1)
        total = sum(((min(h + one, self.window.end) - max(h, self.window.start)) for h in self.hours), timedelta())
        return max(0.0, total.total_seconds() / 3600)

    @property
    def complete(self) -> bool:
        return self.window_hours - self.covered_hours < COVERAGE_PRECISION_H

    @property
    def share(self) -> float:
        return min(1.0, self.covered_hours / self.window_hours) if self.window_hours > 0 else 0.0

    @property
    def first(self) -> datetime | None:
        return self.hours[0] if self.hours else None

    @property
    def last(self) -> datetime | None:
        return self.hours[-1] + timedelta(hours=1) if self.hours else None

    def ranges(self) -> list[tuple[datetime, datetime]]:
        """Contiguous runs of covered hours, [start, end)."""
        out: list[tuple[datetime, datetime]] = []
        for h in self.hours:
            if out and out[-1][1] == h:
                out[-1] = (out[-1][0], h + timedelta(hours=1))
            else:
                out.append((h, h + timedelta(hours=1)))
        return out

    def at_start(self, t: datetime | None) -> bool:
        """True when `t` falls in the first covered hour: anything "first seen" there may have begun earlier."""
        return t is not None and self.first is not None and t < self.first + timedelta(hours=1)

    def describe(self) -> str:
        """One sentence: how many hours of the window hold data, and where."""
        span = hours_text(self.window_hours)
        if not self.hours:
            return f"no data in the {span}-hour window"
        runs = self.ranges()
        where = "; ".join(f"{max(a, self.window.start):%Y-%m-%d %H:%M} to {min(b, self.window.end):%Y-%m-%d %H:%M}"
                          for a, b in runs[:3])
        if len(runs) > 3:
            where += f"; and {len(runs) - 3} more stretch(es)"
        if self.complete:
            return f"data in all {span} hours of the window"
        return (f"data in {hours_text(self.covered_hours)} of the {span} hours of the window "
                f"({self.share:.0%}: {where} UTC)")

    def to_json(self) -> dict[str, Any]:
        return {"window_hours": round(self.window_hours, 2), "covered_hours": round(self.covered_hours, 2),
                "complete": self.complete, "first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None,
                "ranges": [[a.isoformat(), b.isoformat()] for a, b in self.ranges()[:50]],
                "description": self.describe()}


def coverage(con: duckdb.DuckDBPyConnection, window: Window) -> Coverage:
    """The hours of `window` that hold data, from every log table (raw rows or hourly rollups)."""
    rows = con.execute(_COVERED_HOURS_SQL, {"start": window.start, "end": window.end}).fetchall()
    return Coverage(window, tuple(r[0] for r in rows))


def flow_hours(con: duckdb.DuckDBPyConnection, window: Window) -> duckdb.DuckDBPyRelation:
    """Hourly flow groups in the window, from raw `flows` or `flow_rollups` (never both for one hour)."""
    return con.sql(FLOW_HOURS_SQL, params={"start": window.start, "end": window.end})


def dns_hours(con: duckdb.DuckDBPyConnection, window: Window) -> duckdb.DuckDBPyRelation:
    """Hourly DNS groups in the window, from raw `dns_queries` or `dns_rollups`."""
    return con.sql(DNS_HOURS_SQL, params={"start": window.start, "end": window.end})


SKETCH_MAX_DESTINATIONS = 100_000


def distinct_count(con: duckdb.DuckDBPyConnection, relation: str, params: dict[str, Any] | None = None) -> str:
    """The SQL function to count distinct values per destination group of `relation` (flow hours):
    `approx_count_distinct(` (a HyperLogLog sketch per group: fast over a few thousand groups) or, above
    SKETCH_MAX_DESTINATIONS destinations, `count(DISTINCT ` (exact, and it spills to disk, where a sketch
    per group of a million overruns the memory budget)."""
    n = con.execute(f"SELECT approx_count_distinct(hash(destination_fqdn, destination_ip, destination_port)) "
                    f"FROM ({relation})", _used(relation, params) or None).fetchall()[0][0]
    return "count(DISTINCT " if (n or 0) > SKETCH_MAX_DESTINATIONS else "approx_count_distinct("


def newest_hour_may_be_incomplete(window: Window, now: datetime | None = None, lag: timedelta = timedelta(minutes=15)) -> bool:
    """Log Analytics and storage archives deliver minutes late: warn when the window's end is that recent."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    return window.end > now - lag


# -- running analysis SQL ---------------------------------------------------------------------

def _used(sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Only the named parameters a statement uses (DuckDB refuses unused ones)."""
    return {k: v for k, v in (params or {}).items() if f"${k}" in sql}


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """A query's result as a Polars frame (through Arrow, no per-row Python)."""
    return pl.from_arrow(con.sql(sql, params=_used(sql, params) or None).to_arrow_table())  # type: ignore[return-value]


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> None:
    """Run a statement for its effect (temp tables)."""
    con.execute(sql, _used(sql, params)).fetchall()


def json_rows(df: pl.DataFrame, limit: int | None = None) -> list[dict[str, Any]]:
    """Frame rows as JSON-ready dicts (timestamps in ISO 8601)."""
    rows = df.head(limit).to_dicts() if limit is not None else df.to_dicts()
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]


def register_temp(con: duckdb.DuckDBPyConnection, name: str, df: pl.DataFrame) -> None:
    """(Re)create temp table `name` from a frame."""
    run_sql(con, f"DROP TABLE IF EXISTS {name}")
    con.register(f"{name}_in", df.to_arrow())
    try:
        run_sql(con, f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_in")
    finally:
        con.unregister(f"{name}_in")
