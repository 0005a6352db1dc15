"""One suspicion model: which names, zones, addresses and sources are suspicious in a window.

`dns`, `recommend`, `snat` (top sources) and the report all read :func:`assess`, so a finding is
computed once and means the same everywhere (docs/suspicion.md):

- names: threat-intel and IDPS hits, DNS tunnelling (every parent zone, whatever the depth),
  generated-looking zones, punycode/Unicode look-alikes, newly seen zones (and beacons to them);
  a bad name escalates to its owner zone, never above a public or multi-tenant suffix;
- sources: addresses that tunnel, hit threat intelligence or serious IDPS signatures, query
  generated-looking zones or beacon, with the evidence and its time window.

Everything is computed in DuckDB SQL over the store (raw rows or hourly rollups); Python runs only
over the findings and the few internationalised names.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from egresslens.analyse import Window, parse_time, run_sql
from egresslens.suspicion import names as _names
from egresslens.suspicion.model import KINDS, SUGGESTED_ACTION, Suspicion, SuspicionConfig, empty_names
from egresslens.suspicion.sources import compromised
from egresslens.suspicion.suffixes import NOISE_SUFFIXES, is_shared, owner_zone, register_rules

__all__ = ["KINDS", "NOISE_SUFFIXES", "SUGGESTED_ACTION", "Suspicion", "SuspicionConfig", "assess", "is_shared",
           "owner_zone"]

_TEMP = ("susp_qs", "susp_names", "susp_new")


def assess(con: duckdb.DuckDBPyConnection, since: datetime | str | None = None, until: datetime | str | None = None,
           *, window: Window | None = None, config: SuspicionConfig | None = None) -> Suspicion:
    """Assess the window [since, until) (naive UTC datetimes or ISO 8601 text; or `window`) of the store."""
    if window is None:
        if since is None or until is None:
            raise ValueError("assess needs since and until, or a window")
        window = Window(*(parse_time(t) if isinstance(t, str) else t for t in (since, until)))
    cfg = config or SuspicionConfig()
    register_rules(con)
    try:
        _names.build_tables(con, window)
        found = [_names.tunnelling(con, cfg), _names.threats(con, window, cfg), _names.generated(con, cfg),
                 _names.lookalikes(con, window)]
        omitted = {"newly_seen": _names.newly_seen_table(con, window, cfg)}
        beacons = _names.beacons(con, window, cfg)
        new = _names.newly_seen(con, cfg, also=beacons["zone"].unique().to_list())
        listed = new.filter(~pl.col("withhold")).height
        omitted["newly_seen"] -= max(0, listed - int(cfg.max_listed))  # beaconed zones listed beyond the top
        if beacons.height:
            beaconed = beacons.group_by("zone").agg(pl.col("source_ip").sort().alias("b_sources"),
                                                    pl.col("period_s").mean().alias("period_s"))
            beacon = pl.col("b_sources").is_not_null()
            new = new.join(beaconed, left_on="subject", right_on="zone", how="left").with_columns(
                pl.when(beacon).then(pl.lit("beacon")).otherwise(pl.col("kind")).alias("kind"),
                (pl.col("never_allow") | beacon).alias("never_allow"),
                (pl.col("withhold") | beacon).alias("withhold"), (pl.col("escalates") | beacon).alias("escalates"),
                pl.when(beacon).then(pl.format("{}; reached at regular intervals (~{} s) by {}", "detail",
                                               pl.col("period_s").round(0), pl.col("b_sources").list.join(", ")))
                .otherwise(pl.col("detail")).alias("detail")).drop("b_sources", "period_s")
        # a zone already found for another reason (or the owner zone of one) is not listed again as new
        claimed = set().union(*(set(f["subject"].to_list()) | set(f["domain"].drop_nulls().to_list()) for f in found))
        found.append(new.filter(~pl.col("subject").is_in(list(claimed))))
        names = pl.concat(found, how="vertical")
        # escalation never crosses a public or multi-tenant suffix (the same lists as wildcards)
        shared = {d for d in names["domain"].drop_nulls().unique().to_list() if is_shared(d)}
        names = names.with_columns((pl.col("escalates") & ~pl.col("domain").is_in(list(shared)).fill_null(False))
                                   .alias("escalates"))
        order = pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)}, return_dtype=pl.Int32)
        # most severe kind first; within a kind what must never be allowed before what deserves a look
        names = names.sort([order, pl.col("never_allow"), pl.col("queries").fill_null(0), pl.col("subject")],
                           descending=[False, True, True, False])
        sources = compromised(con, window, cfg, names, beacons)
    finally:
        for t in _TEMP:
            run_sql(con, f"DROP TABLE IF EXISTS {t}")
    return Suspicion(window, cfg, names if names.height else empty_names(), sources,
                     omitted={k: max(0, v) for k, v in omitted.items() if v > 0})
