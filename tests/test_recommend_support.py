"""Shared simulated stores for the recommend tests (cached per parameters)."""

from __future__ import annotations

from functools import lru_cache

from egresslens import store
from egresslens.analyse import resolve_window


@lru_cache(maxsize=8)
def simulated_store(seed: int = 7, hours: int = 24, events_per_hour: int = 20_000, incident: bool = False):
    from egresslens.ingest import store_canonical_frames
    from egresslens.simulate import generate

    sc = generate(hours=hours, events_per_hour=events_per_hour, seed=seed, incident=incident)
    con = store.connect_memory()
    store_canonical_frames(con, flows=sc.flows, dns_queries=sc.dns_queries, threats=sc.threats)
    window = resolve_window(con, since=f"{hours + 1}h")
    return sc, con, window
