"""Where the report takes its suspicion signals from: suspicious DNS zones and compromised sources.

Both come from the one suspicion model (`egresslens.suspicion`), through the DNS analysis that already
assessed the window, so the report, `dns` and `recommend` name the same zones and sources.
"""

from __future__ import annotations

import polars as pl

_ZONE_COLUMNS = ["zone", "domain", "reason", "never_allow", "queries", "sources", "detail"]


def suspicion(dns_result) -> tuple[pl.DataFrame, pl.DataFrame]:  # noqa: ANN001 - egresslens.dns.DnsResult
    """(suspicious zones, compromised sources) of the window.

    Zones: one row per (domain, reason) as `egresslens.dns.suspicious_view` gives it.
    Compromised sources: the suspicion model's compromised sources, with the subjects (`zones`) and the
    kinds of evidence (`reasons`) that flag each."""
    zones = dns_result.suspicious.select(_ZONE_COLUMNS)
    src = dns_result.suspicion.sources
    sources = (src.select("source_ip",
                          pl.col("evidence").list.eval(pl.element().struct.field("subject")).list.unique().list.sort()
                          .alias("zones"),
                          pl.col("kinds").list.unique().list.sort().alias("reasons"))
               .sort("source_ip"))
    return zones, sources
