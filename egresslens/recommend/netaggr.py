"""Destination IPs -> smallest CIDRs within a slack, or Azure service tags."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path


def aggregate_ips(ips: list[str], *, min_fill: float = 0.5, max_prefix: int = 24) -> list[str]:
    """Merge IPs bottom-up into a CIDR only while observed/size >= min_fill and prefix >= max_prefix."""
    v4 = sorted({int(ipaddress.IPv4Address(i)) for i in ips if ipaddress.ip_address(i).version == 4})
    v6 = sorted({i for i in ips if ipaddress.ip_address(i).version == 6})
    blocks = {(ip, 32): 1 for ip in v4}  # (network int, prefix) -> observed count
    for plen in range(31, max_prefix - 1, -1):
        parents: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for (net, p), _n in blocks.items():
            if p == plen + 1:
                parents.setdefault((net & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF, plen), []).append((net, p))
        for parent, kids in parents.items():
            if len(kids) != 2:
                continue
            observed = sum(blocks[k] for k in kids)
            if observed / (1 << (32 - plen)) >= min_fill:
                for k in kids:
                    del blocks[k]
                blocks[parent] = observed
    out = [str(ipaddress.IPv4Network((net, p))) if p < 32 else str(ipaddress.IPv4Address(net))
           for net, p in sorted(blocks)]
    return out + v6


@dataclass
class ServiceTags:
    tags: dict[str, list[str]]
    _index: dict[tuple[int, int], list[str]] | None = None

    @classmethod
    def load(cls, path: str | Path) -> "ServiceTags":
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        tags = {}
        for v in doc.get("values", []):
            props = v.get("properties", {})
            tags[v["name"]] = list(props.get("addressPrefixes", []))
        return cls(tags)

    def _build(self) -> None:
        idx: dict[tuple[int, int], list[str]] = {}
        self._size = {}
        for name, prefixes in self.tags.items():
            size = 0
            for p in prefixes:
                n = ipaddress.ip_network(p, strict=False)
                if n.version != 4:
                    continue
                size += n.num_addresses
                idx.setdefault((int(n.network_address), n.prefixlen), []).append(name)
            self._size[name] = size
        self._index = idx

    def tag_for(self, ip: str) -> str | None:
        """The narrowest tag (fewest addresses) containing the IP."""
        if self._index is None:
            self._build()
        addr = ipaddress.ip_address(ip)
        if addr.version != 4:
            return None
        a = int(addr)
        found: list[str] = []
        for plen in range(32, -1, -1):
            key = (a & (((1 << plen) - 1) << (32 - plen)) & 0xFFFFFFFF, plen)
            found.extend(self._index.get(key, ()))
        if not found:
            return None
        return min(found, key=lambda t: (self._size.get(t, 0), t))

    def networks(self) -> dict[str, list]:
        return {k: [ipaddress.ip_network(p, strict=False) for p in v] for k, v in self.tags.items()}
