"""Source groups: configured names for CIDRs, else inferred from the observed source subnets."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

from egresslens.recommend.config import Config


def _network(ip: str, prefix: int):
    addr = ipaddress.ip_address(ip)
    p = prefix if addr.version == 4 else 64
    return ipaddress.ip_network(f"{addr}/{p}", strict=False)


def assign_groups(source_ips: list[str], config: Config) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Map each source IP to a group. Returns (ip -> group name, group name -> CIDRs for rules).

    Configured groups keep their CIDRs. Other sources fall into inferred groups: runs of adjacent
    observed /24 (``infer_prefix``) blocks, named after the collapsed CIDR.
    """
    configured = [(ipaddress.ip_network(c, strict=False), name) for name, cidrs in config.sources.items() for c in cidrs]
    configured.sort(key=lambda t: -t[0].prefixlen)  # most specific first
    mapping: dict[str, str] = {}
    leftovers: dict[str, object] = {}
    for ip in source_ips:
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            mapping[ip] = "unparsed-sources"
            continue
        for net, name in configured:
            if addr.version == net.version and addr in net:
                mapping[ip] = name
                break
        else:
            leftovers[ip] = _network(ip, config.infer_prefix)
    cidrs: dict[str, list[str]] = {name: list(c) for name, c in config.sources.items()}
    blocks = sorted(set(leftovers.values()), key=lambda n: (n.version, int(n.network_address)))
    runs: list[list] = []
    for b in blocks:
        if runs and runs[-1][-1].version == b.version and int(runs[-1][-1].broadcast_address) + 1 == int(b.network_address):
            runs[-1].append(b)
        else:
            runs.append([b])
    block_group: dict[object, str] = {}
    for run in runs:
        collapsed = list(ipaddress.collapse_addresses(run))
        first = collapsed[0]
        name = f"subnet-{first.network_address}-{first.prefixlen}" if len(collapsed) == 1 else \
            f"subnet-{run[0].network_address}-{run[-1].broadcast_address}"
        cidrs[name] = [str(c) for c in collapsed]
        for b in run:
            block_group[b] = name
    for ip, net in leftovers.items():
        mapping[ip] = block_group[net]
    cidrs.setdefault("unparsed-sources", [])
    return mapping, cidrs


def sources_for(groups: set[str] | frozenset[str], cidrs: dict[str, list[str]], exclude=()) -> list[str]:
    """The groups' CIDRs, collapsed; addresses in `exclude` (compromised sources) are cut out of them."""
    return cut_addresses([c for g in groups for c in cidrs.get(g, [])], exclude)[0]


def cut_addresses(sources: list[str], exclude=()) -> tuple[list[str], list[str]]:
    """(`sources` collapsed with every address of `exclude` inside them cut out, the addresses cut).
    Entries that are not addresses or CIDRs (`*`, IP Group names) are kept as they are."""
    nets = []
    other = []
    for c in sources:
        try:
            nets.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            other.append(c)
    cut = []
    for ip in sorted(set(exclude)):
        try:
            host = ipaddress.ip_network(ip)
        except ValueError:
            continue
        if any(n.version == host.version and host.subnet_of(n) for n in nets):
            cut.append(ip)
            nets = [part for n in nets for part in
                    ((n.address_exclude(host) if host.subnet_of(n) else [n]) if n.version == host.version else [n])]
    out = []
    for v in (4, 6):
        out.extend(str(n) for n in ipaddress.collapse_addresses([n for n in nets if n.version == v]))
    return out + sorted(set(other)), cut


def group_label(groups: set[str] | frozenset[str]) -> str:
    names = sorted(groups)
    return names[0] if len(names) == 1 else "+".join(names[:3]) + (f"+{len(names) - 3}more" if len(names) > 3 else "")


def repeated_source_sets(rule_sources: list[tuple[str, ...]], min_uses: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for s in rule_sources:
        counts[s] += 1
    return {s: n for s, n in counts.items() if n >= min_uses}
