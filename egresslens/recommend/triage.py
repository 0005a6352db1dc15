"""Split denied flow groups into what may be proposed and what goes to `investigate`."""

from __future__ import annotations

from collections import defaultdict

import polars as pl

from egresslens.recommend.context import Context, investigate
from egresslens.recommend.detect import Danger
from egresslens.recommend.model import Evidence, with_port
from egresslens.recommend.wildcards import InvalidName, validate_fqdn


def triage(ctx: Context, df: pl.DataFrame, danger: Danger, dest_col: str, extra_danger=None) -> pl.DataFrame:
    """Split off what must not be allowed; returns the allowable candidates."""
    cfg = ctx.config
    keep = []
    noise: dict[str, list[dict]] = defaultdict(list)
    for row in df.iter_rows(named=True):
        dest = row[dest_col]
        reason = None
        risk = "high"
        if dest_col == "destination_fqdn":
            try:
                validate_fqdn(dest)
            except InvalidName as exc:
                reason = f"invalid or hostile name rejected before emitting: {exc}"
            reason = reason or danger.name_reason(dest)
        else:
            reason = danger.ips.get(dest) or (extra_danger(dest) if extra_danger else None)
        if not reason and row["action_reason"] not in (None, "Default Action") and row["rule"]:
            reason = f"denied explicitly by rule {row['rule_collection_group']}/{row['rule_collection']}/{row['rule']}; an allow would have to override a deliberate deny"
            risk = "medium"
        if not reason and row["all_flagged"]:
            reason = "only sources with threat-intel/IDPS hits reached this destination"
        if reason:
            ev = Evidence(hits=row["hits"], distinct_sources=row["sources"], destinations=[str(dest)])
            investigate(ctx, f"Do not allow {dest!r} ({with_port(row['protocol'], row['destination_port'])}) from {row['sgroup']}",
                         reason, ev, risk, key=(row["sgroup"], dest, row["protocol"], row["destination_port"]),
                         rows=[{"gkey": row["gkey"]}])
            continue
        keep.append(row)
    if not keep:
        return df.clear()
    cand = pl.DataFrame(keep, schema=df.schema)
    # evidence thresholds per (destination, protocol, port) across source groups
    agg = cand.group_by(dest_col, "protocol", "destination_port").agg(
        pl.col("hits").sum().alias("t_hits"), pl.col("hours").max().alias("t_hours"))
    cand = cand.join(agg, on=[dest_col, "protocol", "destination_port"], how="left", nulls_equal=True)
    weak = cand.filter((pl.col("t_hits") < cfg.min_hits) | (pl.col("t_hours") < cfg.min_hours))
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

