"""Where the report takes its suspicion signals from: suspicious DNS zones and compromised sources.

The one place to change when the judgement moves to its own module: every section asks
:func:`suspicion` and nothing else.
"""

from __future__ import annotations

import polars as pl

_ZONE_COLUMNS = ["zone", "domain", "reason", "never_allow", "queries", "sources", "detail"]


def suspicion(dns_result) -> tuple[pl.DataFrame, pl.DataFrame]:  # noqa: ANN001 - egresslens.dns.DnsResult
    """(suspicious zones, compromised sources) of the window, from the DNS analysis.

    Zones: one row per (registrable domain, reason) as `egresslens.dns.suspicious_domains` gives it.
    Compromised sources: every source that queried a never-allow zone (tunnelling, threat intelligence),
    with the zones and reasons that flag it."""
    zones = dns_result.suspicious.select(_ZONE_COLUMNS)
    flagged = zones.filter(pl.col("never_allow")).explode("sources").drop_nulls("sources")
    sources = (flagged.group_by(pl.col("sources").alias("source_ip"))
               .agg(pl.col("zone").unique().sort().alias("zones"), pl.col("reason").unique().sort().alias("reasons"))
               .sort("source_ip"))
    return zones, sources
