"""The wire form of the summary queries: hourly groups, front-coded, about 1/100 of the raw rows' bytes.

A summary query (`egresslens/queries/summary_*.kql`) groups a window's events by hour and key in the
workspace. Sent as plain rows, every group would repeat its firewall's ARM id, its hour, its rule's
names and three timestamps: a group row would cost nearly what a raw row does. So each query ends
with the same tail (`kql_tail`), which sends the groups sorted by their key and **front-coded**:

* ``P``: how many leading key columns the row shares with the row before it (0 on the first row);
* ``K``: a dynamic array of the row's key columns from position ``P`` on;
* the counts (``Hits``; DNS: ``Queries``, ``Errors``, ``TotalDurationS``, ``MaxDurationS``);
* ``First``: the first event's offset from the hour and ``Last`` the last event's offset from the
  first, in whole microseconds (the store's precision: truncated, as the raw path reads Kusto's
  100 ns timestamps).

Nothing is rounded or dropped: `decode` gives back exactly the groups the query computed. A piece of
a window (a window split at the service's row cap) is coded on its own and starts again at P = 0.
The same templates run against Azure Data Explorer tables that hold the Log Analytics schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Wire:
    """One summary's key columns (sort order: the most shared first) and its count columns."""

    key: tuple[str, ...]
    counts: tuple[str, ...]
    nullable: tuple[str, ...] = ()  # key columns that may be null: compared as text, so null equals null


FLOWS = Wire(
    key=("Firewall", "Hour", "Kind", "Policy", "RuleCollectionGroup", "RuleCollection", "Rule", "Action",
         "ActionReason", "Protocol", "DestinationFqdn", "DestinationIp", "DestinationPort", "SourceIp"),
    counts=("Hits",),
    nullable=("DestinationPort",),
)
DNS = Wire(
    key=("Firewall", "Hour", "QueryName", "QueryType", "ResponseCode", "SourceIp"),
    counts=("Queries", "Errors", "TotalDurationS", "MaxDurationS"),
)
WIRES = {"flows": FLOWS, "dns": DNS}


class WireError(ValueError):
    """A summary result that is not in the wire form (a row's P or K out of range)."""


def kql_tail(wire: Wire) -> str:
    """The lines every summary template of this kind ends with, after its `summarize`."""
    def differs(c: str) -> str:
        return f"tostring({c}) != tostring(prev({c}))" if c in wire.nullable else f"{c} != prev({c})"

    key = ", ".join(wire.key)
    cases = ",\n    ".join(f"{differs(c)}, {i}" for i, c in enumerate(wire.key[:-1]))
    return (
        "// wire form (egresslens/sources/summary_wire.py): sorted by key, front-coded\n"
        f"| sort by {', '.join(f'{c} asc' for c in wire.key)}\n"
        "| extend P = case(row_number() == 1, 0,\n"
        f"    {cases},\n"
        f"    {len(wire.key) - 1})\n"
        f"| project P, K = array_slice(pack_array({key}), P, -1),\n"
        f"    {', '.join(wire.counts)},\n"
        "    First = tolong((FirstSeen - Hour) / 1tick) / 10,\n"
        "    Last = tolong((LastSeen - Hour) / 1tick) / 10 - tolong((FirstSeen - Hour) / 1tick) / 10\n"
    )


def decode(con, table: pa.Table, wire: Wire) -> pa.Table:
    """The groups of one summary result in wire form, as columns named like the query's `summarize`
    output (key columns as text, `Hour`, `FirstSeen` and `LastSeen` as ISO 8601 UTC text)."""
    n = len(wire.key)
    t = table.append_column("rn", pa.array(range(table.num_rows), pa.int64()))
    con.register("wire_part", t)
    try:
        bad = con.execute(f"""
            SELECT count(*) FROM (SELECT rn, try_cast("P" AS INTEGER) AS p, try_cast("K" AS JSON[]) AS k FROM wire_part)
            WHERE p IS NULL OR p < 0 OR p >= {n} OR (rn = 0 AND p <> 0) OR k IS NULL OR len(k) <> {n} - p""").fetchall()[0][0]
        if bad:
            raise WireError(f"{bad} of {table.num_rows} summary rows are not in the wire form (P, K)")
        pick = ",\n".join(
            f"last_value(CASE WHEN p <= {i} THEN {{'v': k[{i + 1} - p]}} END IGNORE NULLS) OVER w AS c{i}"
            for i in range(n))
        cols = ", ".join(f"c{i}.v->>'$' AS \"{c}\"" for i, c in enumerate(wire.key) if c != "Hour")
        counts = ", ".join(f'"{c}"' for c in wire.counts)
        return con.sql(f"""
            WITH t AS (SELECT rn, "P"::INTEGER AS p, "K"::JSON[] AS k, {counts},
                              "First"::BIGINT AS first_us, "Last"::BIGINT AS last_us FROM wire_part),
            f AS (SELECT rn, {counts}, first_us, last_us,
                         {pick}
                  FROM t WINDOW w AS (ORDER BY rn ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
            h AS (SELECT *, try_cast(c{wire.key.index("Hour")}.v->>'$' AS TIMESTAMPTZ)::TIMESTAMP AS hour FROM f)
            SELECT strftime(hour, '%Y-%m-%dT%H:%M:%S.%fZ') AS "Hour", {cols}, {counts},
                   strftime(hour + to_microseconds(first_us), '%Y-%m-%dT%H:%M:%S.%fZ') AS "FirstSeen",
                   strftime(hour + to_microseconds(first_us + last_us), '%Y-%m-%dT%H:%M:%S.%fZ') AS "LastSeen"
            FROM h ORDER BY rn""").to_arrow_table()
    finally:
        con.unregister("wire_part")
