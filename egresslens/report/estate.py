"""Report sections for many firewalls and for the policy: the fleet table the report opens with (one
row per firewall, linking to that firewall's section), one section per firewall, and what changed in
the policy since the day before."""

from __future__ import annotations

import re
from datetime import timedelta

import polars as pl

from egresslens import fleet
from egresslens.analyse import FLOW_HOURS_SQL, frame
from egresslens.report.model import FINDING, INT, LINK, PCT, TIME, WARNING, Section, Table, counted

CHANGES_SINCE = timedelta(hours=24)


def anchor(firewall: str | None) -> str:
    """The HTML id of a firewall's section."""
    return "firewall-" + (re.sub(r"[^a-z0-9-]+", "-", fleet.label(firewall).lower()).strip("-") or "unnamed")


def _traffic(inp) -> pl.DataFrame:  # noqa: ANN001
    return frame(inp.con, f"""
        SELECT firewall,
               coalesce(sum(hits) FILTER (WHERE action = 'Allow'), 0)::BIGINT AS allowed,
               coalesce(sum(hits) FILTER (WHERE action = 'Deny'), 0)::BIGINT AS denied,
               max(last_seen) AS last_event
        FROM ({FLOW_HOURS_SQL}) GROUP BY firewall""", inp.params())


def fleet_section(inp, recs, snat_result) -> Section:  # noqa: ANN001
    """One row per firewall: its policy, traffic, denies, proposals, SNAT peak and data freshness."""
    s = Section("fleet", "Firewalls", "Every firewall in the window, each judged against the rules it evaluates; "
                "open goes to its section.")
    traffic = _traffic(inp)
    peaks = (snat_result.timeline.group_by("firewall").agg(pl.col("estimate").max().alias("snat_peak"))
             if snat_result.timeline.height else pl.DataFrame(schema={"firewall": pl.String, "snat_peak": pl.Float64}))
    per = {f["firewall"]: f for f in recs.firewalls}
    rows = []
    for r in traffic.sort("firewall").iter_rows(named=True):
        fw = r["firewall"]
        info = per.get(fw, {})
        mine = [x for x in recs.items if x.firewall == fw or fw in x.firewalls]
        total = r["allowed"] + r["denied"]
        parents = " < ".join(reversed(info.get("parents") or []))
        policy = ("classic rules" if info.get("classic") else info.get("policy") or "-") + (f" < {parents}" if parents else "")
        rows.append({
            "firewall": fleet.label(fw), "section": "#" + anchor(fw), "policy": policy,
            "connections": total, "denied": r["denied"], "deny_share": r["denied"] / total if total else None,
            "proposals": sum(1 for x in mine if x.kind != "investigate"),
            "snat_peak": None, "last_event": r["last_event"]})
    table = pl.DataFrame(rows, schema={"firewall": pl.String, "section": pl.String, "policy": pl.String,
                                       "connections": pl.Int64, "denied": pl.Int64, "deny_share": pl.Float64,
                                       "proposals": pl.Int64, "snat_peak": pl.Float64, "last_event": pl.Datetime("us")})
    if peaks.height:
        table = table.drop("snat_peak").join(
            peaks.with_columns(pl.col("firewall").map_elements(fleet.label, return_dtype=pl.String)),
            on="firewall", how="left").select(table.columns)
    shared = [x for x in recs.items if len(x.firewalls) > 1]
    if shared:
        one = len(shared) == 1
        s.facts.append(f"{counted(len(shared), 'proposal')} {'serves' if one else 'serve'} every firewall under a "
                       f"common parent policy and {'goes' if one else 'go'} to that parent once.")
    s.tables.append(Table("Firewalls", table.drop("denied"), {"connections": INT, "deny_share": PCT, "proposals": INT,
                                                              "snat_peak": PCT, "last_event": TIME, "section": LINK},
                          note="policy: the policy the firewall uses < its parent (evaluated first)", limit=200))
    s.data["firewalls"] = table
    s.summary = {"firewalls": table.height, "shared_proposals": len(shared)}
    return s


def firewall_section(inp, fw: str, recs, snat_result, dns_result=None) -> Section:  # noqa: ANN001
    """One firewall: the policy it evaluates, its proposals, its SNAT findings and its DNS proxy's health."""
    info = next((f for f in recs.firewalls if f["firewall"] == fw), {})
    name = fleet.label(fw)
    s = Section(anchor(fw), f"Firewall {name}", f"{fw}: what its own traffic asks of the rules it evaluates.")
    if info.get("classic"):
        s.facts.append(f"Classic rules on the firewall itself ({info.get('rules')} rules).")
    elif info.get("policy"):
        chain = " <- ".join((info.get("parents") or []) + [info["policy"]])
        s.facts.append(f"Policy {info['policy']} ({info.get('rules')} rules, evaluated parent first: {chain}).")
    else:
        s.facts.append("No policy given for this firewall: rules are listed from its logs only.")
    mine = [x for x in recs.items if x.firewall == fw or fw in x.firewalls]
    rows = [{"kind": x.kind, "proposal": x.title, "goes_to": x.policy or "-",
             "shared": "every child of " + x.policy if len(x.firewalls) > 1 else "", "hits": x.evidence.hits}
            for x in mine]
    props = pl.DataFrame(rows, schema={"kind": pl.String, "proposal": pl.String, "goes_to": pl.String,
                                       "shared": pl.String, "hits": pl.Int64})
    n = sum(1 for x in mine if x.kind != "investigate")
    if n:
        s.add(FINDING, f"{counted(n, 'rule change')} proposed for {name}")
    s.tables.append(Table("Proposals", props, {"hits": INT}))
    f = snat_result.findings
    if f.height:
        f = f.filter(pl.col("firewall") == fw)
        s.tables.append(Table("SNAT findings", f.select("severity", "destination", "port", "protocol", "peak_utilisation"),
                              {"peak_utilisation": PCT}))
    dns = next((p for p in getattr(dns_result, "parts", []) if p.firewall == fw), None)
    if dns is not None and not dns.totals.get("queries"):
        s.facts.append("DNS proxy: no query in the window (is DNS proxy on, and its log category ingested?).")
    elif dns is not None and dns.health.height:
        h = dns.health.row(0, named=True)
        p95 = "-" if h["p95_latency_s"] is None else f"{h['p95_latency_s'] * 1000:.1f} ms"
        s.facts.append(f"DNS proxy: {h['queries']:,} queries for {h['names']:,} names, real failures "
                       f"{h['real_failure_rate']:.1%} (NXDOMAIN {h['nxdomain_rate']:.1%}, search-domain noise "
                       f"{h['noise_share']:.1%}), upstream errors {h['upstream_errors_rate']:.1%}, p95 latency {p95}.")
    s.summary = {"firewall": fw, "policy": info.get("policy"), "proposals": n}
    return s


def policy_section(inp, snapshot_note: list[str]) -> Section:  # noqa: ANN001
    """The policy snapshot in force and what changed in the policy since the day before."""
    from egresslens.estate import snapshots

    s = Section("policy", "Policy", "The policy the window was judged against (the snapshot the store keeps of each "
                "read) and the rules added, removed or edited since the day before.")
    s.facts += snapshot_note
    empty = pl.DataFrame(schema=snapshots.CHANGE_SCHEMA)
    if not snapshots.has_snapshots(inp.con):
        s.facts.append("The store keeps no policy snapshot yet (give --policy, --firewall-id or --policy-id once).")
        s.tables.append(Table("Changes since the day before", empty))
        return s
    now, _ = snapshots.in_force(inp.con, inp.window.end)
    then, _ = snapshots.in_force(inp.con, inp.window.end - CHANGES_SINCE)
    if now is None:
        s.tables.append(Table("Changes since the day before", empty))
        return s
    s.facts.append(f"Judged against the {now.describe()}.")
    changes = snapshots.changes(inp.con, then, now) if then is not None and then.snapshot_id != now.snapshot_id else empty
    if changes.height:
        counts = changes.group_by("change").len().sort("change")
        said = ", ".join(f"{n} {c}" for c, n in counts.iter_rows())
        s.add(WARNING, f"the policy changed since {then.taken_at:%Y-%m-%d %H:%M} UTC: {said}")
    else:
        s.facts.append("The policy did not change since the day before.")
    s.tables.append(Table("Changes since the day before", changes))
    s.summary = {"snapshot": now.snapshot_id, "taken_at": now.taken_at, "changes": changes.height}
    return s

