"""Recommendation settings, optionally from a TOML file (`--config`).

```toml
[sources]                      # name -> CIDRs (source groups); unmatched sources are inferred
aks-prod-nodes = ["10.1.0.0/16"]

[thresholds]
min_hits = 3                   # fewer hits in the window -> investigate, not allow
min_hours = 2                  # seen in fewer distinct hours -> investigate
wildcard_min_siblings = 3      # shard-like sibling names needed for `*.parent`
cidr_min_fill = 0.5            # observed / total addresses a proposed CIDR must keep (slack)
cidr_max_prefix = 24           # never aggregate IPv4 destinations wider than /24
narrow_max_names = 25          # a wildcard/`*` rule used by at most this many names -> narrow it
infer_prefix = 24              # inferred source subnets are built from /24 blocks

[output]
rule_collection_group = "egresslens-proposed"
priority = 64000               # RCG priority for new rules (default: after every existing group)
remove_after_days = 30         # disable, then delete after N days
max_investigate = 100          # investigate items listed one by one per reason; the rest are one "and N more" item

[suspicion]                    # thresholds of the suspicion model (docs/suspicion.md)
min_unique_names = 25          # unique names under one zone before tunnelling is considered
```
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from egresslens.suspicion import SuspicionConfig


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    sources: dict[str, list[str]] = field(default_factory=dict)
    min_hits: int = 3
    min_hours: int = 2
    wildcard_min_siblings: int = 3
    cidr_min_fill: float = 0.5
    cidr_max_prefix: int = 24
    narrow_max_names: int = 25
    infer_prefix: int = 24
    rule_collection_group: str = "egresslens-proposed"
    priority: int | None = None
    remove_after_days: int = 30
    # investigate items itemised per reason (refused, compromised-only, too little evidence), the busiest
    # first; the rest of each is one "and N more" item (a day of a million one-off names stays readable)
    max_investigate: int = 100
    sample_events: int = 3
    dns_min_recall: float = 0.8  # share of an address's fresh connections its name must precede
    dns_max_gap_s: float = 2.0  # a query at most this long before a connection precedes it
    dns_cache_s: float = 300.0  # a connection this long after the source's previous one to the address is fresh
    dns_group_min_share: float = 0.2  # addresses sharing a candidate name this well share its DNS cache
    ip_group_min_uses: int = 3
    # a name below these (in the window, all source groups) is proposed in a rule of its own, never
    # bundled with well-supported names
    bundle_min_hits: int = 30
    bundle_min_hours: int = 4
    # detection thresholds of the suspicion model (`[suspicion]` section)
    suspicion: SuspicionConfig = field(default_factory=SuspicionConfig)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict) -> "Config":
        cfg = cls()
        for name, cidrs in (doc.get("sources") or {}).items():
            cidrs = [cidrs] if isinstance(cidrs, str) else list(cidrs)
            for c in cidrs:
                try:
                    ipaddress.ip_network(c, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"source group {name!r}: {c!r} is not a CIDR") from exc
            cfg.sources[str(name)] = cidrs
        for section in ("thresholds", "output"):
            for k, v in (doc.get(section) or {}).items():
                if not hasattr(cfg, k) or k in ("sources", "suspicion"):
                    raise ConfigError(f"unknown setting [{section}] {k}")
                setattr(cfg, k, type(getattr(cfg, k))(v) if getattr(cfg, k) is not None else int(v))
        known = {f.name: f for f in fields(SuspicionConfig)}
        changes = {}
        for k, v in (doc.get("suspicion") or {}).items():
            if k not in known:
                raise ConfigError(f"unknown setting [suspicion] {k}")
            changes[k] = type(getattr(cfg.suspicion, k))(v)
        cfg.suspicion = replace(cfg.suspicion, **changes)
        return cfg
