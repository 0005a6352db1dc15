"""Many firewalls in one store: which firewalls a window holds, naming one (`--firewall NAME|ID`),
and looking at the store through one firewall's eyes.

:func:`scoped` shadows every table that has a `firewall` column with a temporary view of that
firewall's rows, for the duration of a `with` block, so every analysis (recommend, SNAT, DNS, the
report's sections, a drilldown) runs per firewall unchanged: one owner of "which rows are this
firewall's", not a filter repeated in every query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from egresslens.analyse import Window
from egresslens.schema import ALL_TABLES

SCOPED_TABLES = tuple(t.name for t in ALL_TABLES if "firewall" in t.column_names)

_IN_WINDOW_SQL = """
SELECT firewall FROM (
  SELECT DISTINCT firewall FROM flows WHERE time >= $start AND time < $end
  UNION SELECT DISTINCT firewall FROM flow_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end
  UNION SELECT DISTINCT firewall FROM dns_queries WHERE time >= $start AND time < $end
  UNION SELECT DISTINCT firewall FROM dns_rollups WHERE hour >= date_trunc('hour', $start::TIMESTAMP) AND hour < $end
) WHERE firewall IS NOT NULL ORDER BY 1
"""


def label(firewall: str | None) -> str:
    """A firewall's short name: the last segment of its ARM id (the store keeps ids lower case)."""
    return str(firewall or "").rstrip("/").rsplit("/", 1)[-1] or "(unnamed)"


def firewalls(con: duckdb.DuckDBPyConnection, window: Window) -> list[str]:
    """The firewalls with flows or DNS queries in the window, as the store names them."""
    return [r[0] for r in con.execute(_IN_WINDOW_SQL, {"start": window.start, "end": window.end}).fetchall()]


def matches(value: str, ref: str) -> bool:
    """Does the store's firewall value match `--firewall` (its ARM id or its name, any case)?"""
    v, r = value.strip().rstrip("/").lower(), ref.strip().rstrip("/").lower()
    if "/" in r:  # an ARM id: the whole id, or its name when the store holds names
        return v == r or v == label(r)
    return v == r or label(v) == r


def resolve(con: duckdb.DuckDBPyConnection, window: Window, ref: str) -> str:
    """The store's value for `--firewall NAME|ID`; ValueError naming what the store holds otherwise."""
    known = firewalls(con, window)
    hits = [f for f in known if matches(f, ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        names = ", ".join(label(f) for f in known[:10]) or "none"
        raise ValueError(f"no firewall {ref!r} in the store for {window.describe()} (it holds: {names})")
    raise ValueError(f"--firewall {ref!r} names {len(hits)} firewalls ({', '.join(hits[:3])}): give the full ARM id")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def scoped(con: duckdb.DuckDBPyConnection, firewall: str | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """The connection seeing only `firewall`'s rows (None: every firewall, nothing changed). Inside a
    scope of the same firewall (a report's `recommend`), the outer scope's views stay as they are."""
    if firewall is None:
        yield con
        return
    db = con.execute("SELECT current_database()").fetchall()[0][0].replace('"', '""')
    present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
    shadowed = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
    made = []
    try:
        for t in SCOPED_TABLES:
            if t in present and t not in shadowed:
                con.execute(f'CREATE OR REPLACE TEMP VIEW {t} AS SELECT * FROM "{db}".main.{t} '
                            f"WHERE firewall = {_quote(firewall)}")
                made.append(t)
        yield con
    finally:
        for t in made:
            con.execute(f"DROP VIEW IF EXISTS temp.main.{t}")
