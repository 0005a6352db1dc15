"""Dated snapshots of the estate in the store, so every window is judged against the policy as it
was then, and the report can say what changed.

* :func:`save` stores a read (from Azure or exports) when its content differs from the newest
  snapshot, else only records that it was read again (`confirmed_at`).
* :func:`in_force` is the snapshot an analysis of a window uses: the newest taken at or before the
  window's end (else the oldest there is, said so).
* :func:`changes` lists rules added, removed and edited, and IP Groups whose members changed,
  between two snapshots.

Stores made before snapshots existed get the tables on their next write (ingest, or a snapshot
saved); read-only commands on such a store see no snapshot.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import duckdb
import polars as pl

from egresslens.estate.model import Estate, last_segment
from egresslens.estate.rules import build_rules
from egresslens.recommend.policy import ip_group_name

_SNAPSHOT_COLUMNS = ("snapshot_id, taken_at, confirmed_at, source, digest, policies, firewalls, ip_groups, rules, "
                     "estate")


@dataclass
class Snapshot:
    snapshot_id: str
    taken_at: datetime
    confirmed_at: datetime
    source: str
    digest: str
    estate_json: str

    @property
    def estate(self) -> Estate:
        return Estate.from_dict(json.loads(self.estate_json))

    def describe(self) -> str:
        return (f"policy snapshot of {self.taken_at:%Y-%m-%d %H:%M} UTC (last read {self.confirmed_at:%Y-%m-%d %H:%M}) "
                f"from {self.source}")


def has_snapshots(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'policy_snapshots'").fetchall()
    return rows[0][0] > 0


def _digest(estate: Estate) -> str:
    body = json.dumps({k: v for k, v in estate.to_dict().items() if k != "sources"}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _rule_rows(snapshot_id: str, estate: Estate) -> list[dict[str, Any]]:
    rows = []
    scopes = [(p.name, last_segment(p.parent) if p.parent else None, p.groups) for p in estate.policies.values()]
    scopes += [(f.name, None, [f.classic]) for f in estate.firewalls.values() if f.classic is not None]
    for policy, parent, groups in scopes:
        for r in build_rules(groups):
            d = r.describe()
            body = json.dumps([d["action"], d["rule_type"], r.rcg_priority, r.collection_priority, r.index,
                               d["sources"], d["destinations"], d["ports"], r.target_urls], sort_keys=True)
            rows.append({"snapshot_id": snapshot_id, "policy": policy, "parent_policy": parent,
                         "rule_collection_group": r.rule_collection_group, "rule_collection": r.rule_collection,
                         "rule": r.name, "rule_type": r.rule_type, "action": r.action,
                         "rule_collection_group_priority": r.rcg_priority, "rule_collection_priority": r.collection_priority,
                         "position": r.index, "sources": d["sources"], "destinations": d["destinations"],
                         "ports": d["ports"], "rule_digest": hashlib.sha256(body.encode()).hexdigest()[:16]})
    return rows


def save(con: duckdb.DuckDBPyConnection, estate: Estate, source: str, now: datetime | None = None) -> tuple[str, bool]:
    """Store a read of the estate: (snapshot id, True when it is new content)."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    digest = _digest(estate)
    newest = con.execute("SELECT snapshot_id, digest FROM policy_snapshots ORDER BY taken_at DESC LIMIT 1").fetchall()
    if newest and newest[0][1] == digest:
        con.execute("UPDATE policy_snapshots SET confirmed_at = ?, source = ? WHERE snapshot_id = ?",
                    [now, source, newest[0][0]])
        return newest[0][0], False
    sid = hashlib.sha256(f"{digest}|{now.isoformat()}".encode()).hexdigest()[:16]
    rules = _rule_rows(sid, estate)
    members = [{"snapshot_id": sid, "ip_group": g.name, "ip_group_id": g.id, "address": a}
               for g in estate.ip_groups.values() for a in g.addresses]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"INSERT INTO policy_snapshots ({_SNAPSHOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [sid, now, now, source, digest, len(estate.policies), len(estate.firewalls), len(estate.ip_groups),
                     len(rules), json.dumps(estate.to_dict(), default=str)])
        for table, rows in (("policy_rules", rules), ("ip_group_members", members)):
            if rows:
                con.register("_snap_rows", pl.DataFrame(rows, infer_schema_length=None).to_arrow())
                try:
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _snap_rows")
                finally:
                    con.unregister("_snap_rows")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return sid, True


def _snapshot(con, where: str, params: list, order: str) -> Snapshot | None:
    rows = con.execute(f"SELECT snapshot_id, taken_at, confirmed_at, source, digest, estate FROM policy_snapshots "
                       f"WHERE {where} ORDER BY taken_at {order} LIMIT 1", params).fetchall()
    return Snapshot(*rows[0]) if rows else None


def in_force(con: duckdb.DuckDBPyConnection, at: datetime) -> tuple[Snapshot | None, str | None]:
    """(the snapshot in force at `at`, a note when it was taken only after `at`), or (None, None)."""
    if not has_snapshots(con):
        return None, None
    snap = _snapshot(con, "taken_at <= ?", [at], "DESC")
    if snap is not None:
        return snap, None
    snap = _snapshot(con, "TRUE", [], "ASC")
    if snap is None:
        return None, None
    return snap, (f"no policy snapshot is older than {at:%Y-%m-%d %H:%M} UTC: the oldest, of "
                  f"{snap.taken_at:%Y-%m-%d %H:%M}, is used")


def before(con: duckdb.DuckDBPyConnection, snap: Snapshot) -> Snapshot | None:
    """The snapshot just before this one."""
    return _snapshot(con, "taken_at < ?", [snap.taken_at], "DESC")


CHANGE_SCHEMA = {"change": pl.String, "policy": pl.String, "rule_collection_group": pl.String,
                 "rule_collection": pl.String, "rule": pl.String, "detail": pl.String}


def changes(con: duckdb.DuckDBPyConnection, old: Snapshot, new: Snapshot) -> pl.DataFrame:
    """Rules added, removed and edited, and IP Groups whose members changed, from `old` to `new`."""
    rules = con.execute("""
        WITH o AS (SELECT * FROM policy_rules WHERE snapshot_id = $old),
             n AS (SELECT * FROM policy_rules WHERE snapshot_id = $new)
        SELECT CASE WHEN o.rule IS NULL THEN 'added' WHEN n.rule IS NULL THEN 'removed' ELSE 'edited' END AS change,
               coalesce(n.policy, o.policy), coalesce(n.rule_collection_group, o.rule_collection_group),
               coalesce(n.rule_collection, o.rule_collection), coalesce(n.rule, o.rule),
               CASE WHEN o.rule IS NULL THEN n.action || ' ' || n.rule_type || ' rule: ' || array_to_string(n.destinations, ', ')
                    WHEN n.rule IS NULL THEN 'was ' || o.action || ' ' || o.rule_type || ': ' || array_to_string(o.destinations, ', ')
                    ELSE concat_ws('; ',
                        CASE WHEN o.action <> n.action THEN 'action ' || o.action || ' -> ' || n.action END,
                        CASE WHEN o.sources <> n.sources THEN 'sources ' || array_to_string(o.sources, ', ') || ' -> '
                             || array_to_string(n.sources, ', ') END,
                        CASE WHEN o.destinations <> n.destinations THEN 'destinations ' || array_to_string(o.destinations, ', ')
                             || ' -> ' || array_to_string(n.destinations, ', ') END,
                        CASE WHEN o.ports <> n.ports THEN 'ports ' || array_to_string(o.ports, ', ') || ' -> '
                             || array_to_string(n.ports, ', ') END,
                        CASE WHEN o.rule_collection_group_priority <> n.rule_collection_group_priority
                               OR o.rule_collection_priority <> n.rule_collection_priority OR o.position <> n.position
                             THEN 'moved' END) END AS detail
        FROM o FULL OUTER JOIN n ON o.policy = n.policy AND o.rule_collection_group = n.rule_collection_group
                                AND o.rule_collection = n.rule_collection AND o.rule = n.rule
        WHERE o.rule IS NULL OR n.rule IS NULL OR o.rule_digest <> n.rule_digest
        ORDER BY 1, 2, 3, 4, 5""", {"old": old.snapshot_id, "new": new.snapshot_id}).fetchall()
    groups = con.execute("""
        WITH o AS (SELECT ip_group, list(address ORDER BY address) AS a FROM ip_group_members WHERE snapshot_id = $old GROUP BY 1),
             n AS (SELECT ip_group, list(address ORDER BY address) AS a FROM ip_group_members WHERE snapshot_id = $new GROUP BY 1)
        SELECT coalesce(n.ip_group, o.ip_group),
               list_filter(coalesce(n.a, []), lambda x: NOT list_contains(coalesce(o.a, []), x)),
               list_filter(coalesce(o.a, []), lambda x: NOT list_contains(coalesce(n.a, []), x))
        FROM o FULL OUTER JOIN n USING (ip_group)
        WHERE o.a IS DISTINCT FROM n.a ORDER BY 1""", {"old": old.snapshot_id, "new": new.snapshot_id}).fetchall()
    out = [dict(zip(CHANGE_SCHEMA, r)) for r in rules]
    for name, added, removed in groups:
        detail = "; ".join(p for p in (f"added {', '.join(added)}" if added else "",
                                        f"removed {', '.join(removed)}" if removed else "") if p)
        out.append({"change": "IP Group members", "policy": None, "rule_collection_group": None, "rule_collection": None,
                    "rule": f"ipgroup:{ip_group_name(name)}", "detail": detail})
    return pl.DataFrame(out, schema=CHANGE_SCHEMA)
