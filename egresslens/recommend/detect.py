"""What must never be allowed: threat-intel / IDPS destinations, tunnelling and generated domains."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import duckdb

from egresslens.analyse import DNS_HOURS_SQL, Window
from egresslens.recommend.config import Config
from egresslens.recommend.wildcards import entropy, psl


@dataclass
class Danger:
    names: dict[str, str] = field(default_factory=dict)  # fqdn -> reason
    parents: dict[str, str] = field(default_factory=dict)  # every name under parent -> reason
    ips: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # flagged sources (threat hits)

    def name_reason(self, name: str | None) -> str | None:
        if not name:
            return None
        if name in self.names:
            return self.names[name]
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[i:])
            if parent in self.parents:
                return self.parents[parent]
        return None


def threats(con: duckdb.DuckDBPyConnection, window: Window, danger: Danger) -> None:
    rows = con.execute(
        """SELECT kind, fqdn, destination_ip, source_ip, min(description), count(*)
           FROM threats WHERE time >= $start AND time < $end GROUP BY ALL""",
        {"start": window.start, "end": window.end},
    ).fetchall()
    for kind, fqdn, dip, sip, desc, n in rows:
        what = "threat intelligence" if kind == "threat_intel" else "IDPS"
        reason = f"{what} hit ({n} events{': ' + desc if desc else ''})"
        if fqdn:
            danger.names.setdefault(fqdn, reason)
            reg = psl().privatesuffix(fqdn)
            if reg and reg != fqdn:
                danger.parents.setdefault(reg, f"registrable domain of a {reason}")
        if dip:
            danger.ips.setdefault(dip, reason)
        if sip:
            danger.sources.setdefault(sip, reason)


_HEX_OR_B32 = re.compile(r"^[a-z0-9]+$")


def dns_anomalies(con: duckdb.DuckDBPyConnection, window: Window, config: Config, danger: Danger) -> list[dict]:
    """Tunnelling (many unique long/high-entropy labels under one parent) and generated names (NXDOMAIN-heavy,
    random-looking registrable labels). Returns findings and fills ``danger``."""
    rows = con.execute(
        f"""WITH d AS ({DNS_HOURS_SQL})
        SELECT query_name, sum(queries)::BIGINT AS q, sum(CASE WHEN response_code = 'NXDOMAIN' THEN queries ELSE 0 END)::BIGINT AS nx,
               count(DISTINCT source_ip) AS src
        FROM d WHERE query_name IS NOT NULL GROUP BY 1""",
        {"start": window.start, "end": window.end},
    ).fetchall()
    by_parent: dict[str, list[tuple[str, int, int]]] = {}
    findings = []
    for name, q, nx, _src in rows:
        parts = name.split(".")
        if len(parts) >= 3:
            by_parent.setdefault(".".join(parts[1:]), []).append((parts[0], q, nx))
        # generated-looking registrable domain that mostly fails to resolve
        reg = psl().privatesuffix(name)
        if reg:
            label = reg.split(".")[0]
            if nx >= 0.5 * q and len(label) >= 10 and entropy(label) >= 3.2 and _HEX_OR_B32.match(label):
                danger.names.setdefault(name, f"generated-looking domain ({nx}/{q} NXDOMAIN, label entropy {entropy(label):.1f})")
    for parent, kids in by_parent.items():
        if len(kids) < config.tunnel_min_names:
            continue
        labels = [k[0] for k in kids]
        mean_len = sum(map(len, labels)) / len(labels)
        mean_ent = sum(entropy(lb) for lb in labels) / len(labels)
        q = sum(k[1] for k in kids)
        nx = sum(k[2] for k in kids)
        once = sum(1 for k in kids if k[1] <= 2) / len(kids)
        tunnel = (mean_len >= 20 and mean_ent >= 3.0) or (mean_ent >= 3.5 and once >= 0.8)
        generated = nx >= 0.5 * q and once >= 0.5
        if tunnel or generated:
            reason = (f"DNS tunnelling-like: {len(kids)} unique labels under {parent}, mean length {mean_len:.0f}, "
                      f"mean entropy {mean_ent:.1f} bits/char, {nx}/{q} NXDOMAIN")
            danger.parents[parent] = reason
            findings.append({"parent": parent, "reason": reason, "names": len(kids), "queries": q,
                             "examples": sorted(k[0] + "." + parent for k in kids)[:5]})
    return findings
