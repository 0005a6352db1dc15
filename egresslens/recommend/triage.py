"""Split denied flow groups into what may be proposed and what goes to `investigate`.

Flow groups come split by source group *and* by whether the sources are compromised (the
suspicion model). A destination only compromised sources asked for is never proposed: it goes to
`investigate` with those sources, the evidence and the suggested action. One that clean sources
also need is proposed from the clean groups' rows only, and the proposal says so (`ctx.taint`).
"""

from __future__ import annotations

from collections import defaultdict

import polars as pl

from egresslens.recommend.context import Context, investigate
from egresslens.recommend.model import Evidence, iso, with_port
from egresslens.recommend.sources import cut_addresses
from egresslens.recommend.wildcards import InvalidName, fqdn_matches, validate_fqdn
from egresslens.suspicion import SUGGESTED_ACTION


def refusal(ctx: Context, dest, dest_col: str, extra_danger=None) -> str | None:  # noqa: ANN001
    """Why the destination itself must never be allowed (suspicious, an invalid name, an address resolved
    from a suspicious name), or None. `bounds` asks this of every distinct destination."""
    if dest_col == "destination_fqdn":
        reason = ctx.susp.name_reason(dest)  # says what a look-alike looks like, in both forms
        try:
            validate_fqdn(dest)
        except InvalidName as exc:
            return f"invalid or hostile name rejected before emitting: {exc}" + (f"; {reason}" if reason else "")
        return reason
    return ctx.susp.ip_reason(dest) or (extra_danger(dest) if extra_danger else None)


def _reason(ctx: Context, row: dict, dest_col: str, extra_danger) -> tuple[str | None, str]:
    reason = refusal(ctx, row[dest_col], dest_col, extra_danger)
    if reason:
        return reason, "high"
    if row["action_reason"] not in (None, "Default Action") and row["rule"]:
        return (f"denied explicitly by rule {row['rule_collection_group']}/{row['rule_collection']}/{row['rule']}; "
                "an allow would have to override a deliberate deny"), "medium"
    return None, ""


def triage(ctx: Context, df: pl.DataFrame, dest_col: str, extra_danger=None) -> pl.DataFrame:
    """Split off what must not be allowed; returns the allowable candidates (clean sources only)."""
    cfg = ctx.config
    keep = []
    refused: dict[tuple, list] = {}  # key -> [reason, risk, rows]
    tainted: dict[tuple, list[dict]] = defaultdict(list)
    for row in df.iter_rows(named=True):
        reason, risk = _reason(ctx, row, dest_col, extra_danger)
        if reason:
            key = (row["sgroup"], row[dest_col], row["protocol"], row["destination_port"])
            refused.setdefault(key, [reason, risk, []])[2].append(row)
        elif row["compromised"]:
            tainted[(row[dest_col], row["protocol"], row["destination_port"])].append(row)
        else:
            keep.append(row)
    for (sgroup, dest, proto, port), (reason, risk, rows) in refused.items():
        ev = Evidence(hits=sum(r["hits"] for r in rows), distinct_sources=sum(r["sources"] for r in rows),
                      destinations=[str(dest)])
        investigate(ctx, f"Do not allow {dest!r} ({with_port(proto, port)}) from {sgroup}", reason, ev, risk,
                    key=(sgroup, dest, proto, port), rows=[{"gkey": r["gkey"]} for r in rows])
    clean_keys = {(r[dest_col], r["protocol"], r["destination_port"]) for r in keep}
    for (dest, proto, port), rows in tainted.items():
        ips = ctx.taint.get((rows[0]["kind"], dest, proto, port), [])
        if (dest, proto, port) in clean_keys:
            continue  # proposed for the clean sources only (application.py / network.py read ctx.taint)
        who = ", ".join(ctx.susp.source_summary(ip) for ip in ips) or "compromised sources"
        hits, post = sum(r["hits"] for r in rows), sum(r["post_hits"] for r in rows)
        first = iso(min((r["since"] for r in rows if r["since"] is not None), default=None))
        ev = Evidence(hits=hits, distinct_sources=len(ips), destinations=[str(dest)],
                      notes=[f"asked for only by {who}", f"{post} of {hits} hit(s) at or after their first contact "
                                                         f"with a withheld destination ({first})"])
        when = (f"{post} of its {hits} hit(s) came after their first contact with a withheld destination ({first}), "
                "whatever their support" if post else
                f"they asked for it only before their first contact ({first}); nothing they alone asked for is "
                "proposed while they are under investigation")
        investigate(ctx, f"Do not allow {dest!r} ({with_port(proto, port)}): only compromised source(s) {', '.join(ips)} asked for it",
                    f"no clean source needed this destination; it was requested by {who}: {when}", ev, "high",
                    key=("tainted", dest, proto, port), rows=[{"gkey": r["gkey"]} for r in rows],
                    rollout=[SUGGESTED_ACTION, f"add a deny rule for {dest} ({with_port(proto, port)})"])
    if not keep:
        return df.clear()
    cand = pl.DataFrame(keep, schema=df.schema)
    # evidence thresholds per (destination, protocol, port) across source groups
    agg = cand.group_by(dest_col, "protocol", "destination_port").agg(
        pl.col("hits").sum().alias("t_hits"), pl.col("hours").max().alias("t_hours"))
    cand = cand.join(agg, on=[dest_col, "protocol", "destination_port"], how="left", nulls_equal=True)
    weak = cand.filter((pl.col("t_hits") < cfg.min_hits) | (pl.col("t_hours") < cfg.min_hours))
    noise: dict[str, list[dict]] = defaultdict(list)
    for row in weak.iter_rows(named=True):
        noise[str(row[dest_col])].append(row)
    for dest, rows in noise.items():
        ev = Evidence(hits=sum(r["hits"] for r in rows), distinct_sources=sum(r["sources"] for r in rows),
                      destinations=[dest])
        investigate(ctx, f"Too little evidence to allow {dest} ({with_port(rows[0]['protocol'], rows[0]['destination_port'])})",
                    f"below the evidence thresholds (min {cfg.min_hits} hits and {cfg.min_hours} distinct hours in the window): "
                    "one-off traffic is not turned into allow rules", ev, "low",
                    key=("noise", dest, rows[0]["protocol"], rows[0]["destination_port"]),
                    rows=[{"gkey": r["gkey"]} for r in rows])
    return cand.filter((pl.col("t_hits") >= cfg.min_hits) & (pl.col("t_hours") >= cfg.min_hours)).drop("t_hits", "t_hours")


def taint_covered(ctx: Context, kind: str, covers, protocols: list[tuple[str, int | None]]) -> tuple[list[str], list[str]]:
    """Compromised sources that asked for anything a rule covers (`covers(destination) -> bool`, on its
    protocols), and one note per such destination: the rule must be for the clean sources only."""
    wanted = set(protocols)
    ips: set[str] = set()
    notes = []
    for (k, dest, proto, port), who in sorted(ctx.taint.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if k != kind or (proto, port) not in wanted or not covers(str(dest)):
            continue
        ips.update(who)
        notes.append(f"compromised source(s) {', '.join(ctx.susp.source_summary(ip) for ip in who)} also asked for "
                     f"{dest}; this rule is for the clean sources only (the compromised addresses are excluded from "
                     "its sources)")
    return sorted(ips), notes


def compromised_cut(ctx: Context, sources: list[str], noted=()) -> tuple[list[str], list[str], list[str]]:
    """`sources` with every compromised address inside them cut out (one behaviour for every proposed rule:
    a compromised source is in no proposal while it is under investigation), a note naming the addresses
    cut that `noted` (already explained) does not, and the addresses cut (`Context.record_cut` them once
    the rule is proposed)."""
    bad = ctx.susp.compromised if ctx.susp is not None else []
    out, cut = cut_addresses(sources, bad)
    rest = [ip for ip in cut if ip not in set(noted)]
    notes = [f"compromised source(s) {', '.join(ctx.susp.source_summary(ip) for ip in rest[:10])}"
             + (f" and {len(rest) - 10} more" if len(rest) > 10 else "")
             + " lie inside these sources and are cut out of the rule while under investigation"] if rest else []
    if bad and "*" in out:
        notes.append("sources * cannot leave the compromised source(s) out: add a deny rule for them above it")
    return out, notes, cut


def held_without_sources(ctx: Context, label: str, destinations: list[str], ports: list[str]) -> None:
    """A rule left with no source address (its group has no address ranges, or only compromised ones) is not
    proposed: it would allow no one, or everyone."""
    investigate(ctx, f"No source left to allow {', '.join(destinations[:3])}{' …' if len(destinations) > 3 else ''} "
                f"for {label}",
                f"no source address of {label} remains for {', '.join(destinations[:10])} ({', '.join(ports)}): the "
                "group has no address ranges, or every address in it is compromised and under investigation",
                Evidence(destinations=destinations[:50]), "medium", key=("held", label, tuple(destinations), tuple(ports)))


def name_cover(patterns: list[str]):
    """`covers` for application rules: a name matches one of the rule's FQDNs or wildcards."""
    return lambda dest: any(fqdn_matches(dest, p) for p in patterns)


def solo_destinations(support: dict[str, dict], groups_of: dict[str, frozenset]) -> set[str]:
    """Destinations that get a rule of their own: a tainted origin (a compromised source asked for it too),
    or low support while a well-supported destination of the same source groups would share its rule."""
    well = {groups_of[d] for d, e in support.items() if e["support"] != "low" and d in groups_of}
    return {d for d, e in support.items()
            if e["compromised_also"] or (e["support"] == "low" and groups_of.get(d) in well)}


def per_name_evidence(ctx: Context, cand: pl.DataFrame, dest_col: str) -> dict[str, dict]:
    """Per destination of the clean candidates: hits, sources, hours, first/last seen, support, and the
    compromised sources that also asked for it (each proposal is reviewable name by name)."""
    kind = "application" if dest_col == "destination_fqdn" else "network"
    cfg = ctx.config
    agg = cand.group_by(dest_col).agg(
        pl.col("hits").sum(), pl.col("sources").sum(), pl.col("hours").max(), pl.col("first_seen").min(),
        pl.col("last_seen").max(), pl.struct("protocol", "destination_port").unique().alias("protos"))
    out: dict[str, dict] = {}
    for r in agg.sort(dest_col).iter_rows(named=True):
        dest = str(r[dest_col])
        ips = sorted({ip for p in r["protos"] for ip in ctx.taint.get((kind, r[dest_col], p["protocol"], p["destination_port"]), [])})
        low = r["hits"] < cfg.bundle_min_hits or r["hours"] < cfg.bundle_min_hours
        out[dest] = {"name": dest, "hits": int(r["hits"]), "sources": int(r["sources"]), "hours": int(r["hours"]),
                     "first_seen": iso(r["first_seen"]), "last_seen": iso(r["last_seen"]),
                     "support": "low" if low else "well-supported", "compromised_also": ips}
    return out
