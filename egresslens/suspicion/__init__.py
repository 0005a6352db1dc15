"""One suspicion model: which names, zones, addresses and sources are suspicious in a window.

`dns`, `recommend`, `snat` (top sources) and the report all read :func:`assess`, so a finding is
computed once and means the same everywhere (docs/suspicion.md):

- names: threat-intel and IDPS hits, DNS tunnelling (every parent zone, whatever the depth),
  generated-looking zones, punycode/Unicode and ASCII look-alikes of reference names, newly seen
  zones (and beacons to them); a bad name escalates to its owner zone, never above a public or
  multi-tenant suffix;
- sources: addresses that tunnel, hit threat intelligence or serious IDPS signatures, query
  generated-looking zones or beacon, and every address that reached what one of those withholds
  (contact taint), compromised from its first such contact, with the evidence;
- coverage: which hours of the window hold data.

Everything is computed in DuckDB SQL over the store (raw rows or hourly rollups); Python runs only
over the findings and the few internationalised names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

import duckdb
import polars as pl

from egresslens.analyse import Window, coverage, parse_time, run_sql
from egresslens.suspicion import names as _names
from egresslens.suspicion import taint, typosquat
from egresslens.suspicion.model import KINDS, SUGGESTED_ACTION, Suspicion, SuspicionConfig, empty_names
from egresslens.suspicion.sources import compromised
from egresslens.suspicion.suffixes import NOISE_SUFFIXES, is_shared, owner_zone, register_rules

__all__ = ["KINDS", "NOISE_SUFFIXES", "SUGGESTED_ACTION", "Suspicion", "SuspicionConfig", "assess", "assessment",
           "is_shared", "owner_zone"]

_TEMP = ("susp_qs", "susp_names", "susp_fq", "susp_allnames", "susp_owner_use", "susp_new")


def assess(con: duckdb.DuckDBPyConnection, since: datetime | str | None = None, until: datetime | str | None = None,
           *, window: Window | None = None, config: SuspicionConfig | None = None,
           references: Iterable[str] = ()) -> Suspicion:
    """Assess the window [since, until) (naive UTC datetimes or ISO 8601 text; or `window`) of the store.
    `references`: names the policy allows (look-alikes of them are withheld too; the catalogue always counts)."""
    if window is None:
        if since is None or until is None:
            raise ValueError("assess needs since and until, or a window")
        window = Window(*(parse_time(t) if isinstance(t, str) else t for t in (since, until)))
    cfg = config or SuspicionConfig()
    register_rules(con)
    try:
        _names.build_tables(con, window)
        found = [_names.tunnelling(con, cfg), _names.threats(con, window, cfg), _names.generated(con, cfg),
                 _names.lookalikes(con)]
        _names.newly_seen_table(con, window, cfg)
        beacons = _names.beacons(con, window, cfg)  # every newly seen zone is checked, listed or not
        new = _names.newly_seen(con, cfg, also=beacons["zone"].unique().to_list())
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
        found = [_escalation(pl.concat(found, how="vertical"))]
        new = _escalation(new)
        # contact taint: whoever reached what tunnelling, threat intel, IDPS, generated names or beacons withhold
        tainting = _order(pl.concat(found + [new.filter(pl.col("kind") == "beacon")], how="vertical"))
        contact, activity = taint.contacts(con, window, taint.withheld(tainting), cfg)
        sources = compromised(con, window, cfg, beacons, contact, activity)
        found.append(_escalation(typosquat.lookalikes(con, cfg, references, sources["source_ip"].to_list())))
        # a zone already found for another reason (or the owner zone of one) is not listed again as new (a
        # beacon is a finding of its own: its sources are compromised by it)
        claimed = set().union(*(set(f["subject"].to_list()) | set(f["domain"].drop_nulls().to_list()) for f in found))
        new = new.filter(~pl.col("subject").is_in(list(claimed)) | (pl.col("kind") == "beacon"))
        found.append(new)
        # newly seen zones neither listed nor found for another reason: counted, not listed (max_listed)
        unlisted = _names.newly_seen_unlisted(con, set(new["subject"].to_list()) | claimed)
        _drop(con)  # the window's name tables are done with: free them before the findings are put together
        cover = coverage(con, window)
        names = _order(pl.concat(found, how="vertical"))
    finally:
        _drop(con)
    return Suspicion(window, cfg, names if names.height else empty_names(), sources, coverage=cover,
                     omitted={"newly_seen": unlisted} if unlisted else {})


def assessment(con: duckdb.DuckDBPyConnection, window: Window, config: SuspicionConfig | None = None, *,
               given: Suspicion | None = None, references: Iterable[str] = ()) -> Suspicion:
    """`given` when it assessed this window (with `config`, when one is asked for), else a new assessment:
    one report or fleet run shares one verdict between recommend, dns, snat and the drilldown."""
    if given is not None and given.window == window and (config is None or given.config == config):
        return given
    return assess(con, window=window, config=config, references=references)


def _drop(con: duckdb.DuckDBPyConnection) -> None:
    for t in _TEMP:
        run_sql(con, f"DROP TABLE IF EXISTS {t}")


def _escalation(names: pl.DataFrame) -> pl.DataFrame:
    """Escalation never crosses a public or multi-tenant suffix (the same lists as wildcards)."""
    shared = {d for d in names["domain"].drop_nulls().unique().to_list() if is_shared(d)}
    return names.with_columns((pl.col("escalates") & ~pl.col("domain").is_in(list(shared)).fill_null(False))
                              .alias("escalates"))


def _order(names: pl.DataFrame) -> pl.DataFrame:
    """Most severe kind first; within a kind what must never be allowed before what deserves a look."""
    order = pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)}, return_dtype=pl.Int32)
    return names.sort([order, pl.col("never_allow"), pl.col("queries").fill_null(0), pl.col("subject")],
                      descending=[False, True, True, False])
