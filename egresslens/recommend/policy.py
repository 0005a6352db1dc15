"""Firewall rules and how Azure evaluates them: the one owner of matching, order and coverage.

Reading documents into rules is :mod:`egresslens.estate`; this module only evaluates them.

Order: DNAT, then network, then application rules regardless of rule collection group priority;
within a type the parent policy's groups first, then group priority, collection priority and rule
order; first match wins; default deny. Application rules only see HTTP/HTTPS/MSSQL traffic that no
network rule matched. Wildcards: only a left-most ``*.`` (any depth, not the parent itself) or ``*``.
"""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from egresslens.recommend.catalogue import tag_matches
from egresslens.recommend.wildcards import fqdn_matches

APP_PROTOCOLS = ("HTTP", "HTTPS", "MSSQL")


def ip_group_name(ref: str) -> str:
    """The name of an IP Group from its ARM id (the last segment), or the reference as given."""
    return str(ref).rstrip("/").rsplit("/", 1)[-1]


TYPE_ORDER = {"nat": 0, "network": 1, "application": 2}


@dataclass
class Rule:
    rule_type: str  # network | application | nat
    name: str
    rule_collection_group: str
    rcg_priority: int
    rule_collection: str
    collection_priority: int
    action: str  # Allow | Deny | DNAT
    index: int  # position within the collection
    parent: bool = False  # inherited from a parent policy (the child cannot change it)
    depth: int = 0  # 0: the policy itself, 1: its parent, 2: the parent's parent (evaluated first)
    sources: list[str] = field(default_factory=list)
    source_ip_groups: list[str] = field(default_factory=list)
    ip_protocols: list[str] = field(default_factory=list)
    destination_addresses: list[str] = field(default_factory=list)
    destination_ip_groups: list[str] = field(default_factory=list)
    destination_fqdns: list[str] = field(default_factory=list)
    destination_ports: list[str] = field(default_factory=list)
    app_protocols: list[tuple[str, int]] = field(default_factory=list)
    target_fqdns: list[str] = field(default_factory=list)
    fqdn_tags: list[str] = field(default_factory=list)
    web_categories: list[str] = field(default_factory=list)
    target_urls: list[str] = field(default_factory=list)
    proposed: str | None = None  # recommendation id, for proposals
    policy: str | None = None  # the name of the policy that holds the rule (a parent's, for inherited rules)
    # IP Group reference -> its addresses, for the groups the policy's IP Groups resolved
    ip_group_members: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def _expand(self, groups: list[str]) -> list[str]:
        out: list[str] = []
        for g in groups:
            out += self.ip_group_members.get(g, [f"ipgroup:{g}"])  # an unresolved group matches nothing
        return out

    @property
    def all_sources(self) -> list[str]:
        """Source addresses with every IP Group replaced by its members."""
        return self.sources + self._expand(self.source_ip_groups) if self.source_ip_groups else self.sources

    @property
    def all_destination_addresses(self) -> list[str]:
        return (self.destination_addresses + self._expand(self.destination_ip_groups) if self.destination_ip_groups
                else self.destination_addresses)

    @property
    def unresolved_ip_groups(self) -> list[str]:
        return [g for g in self.source_ip_groups + self.destination_ip_groups if g not in self.ip_group_members]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule_collection_group, self.rule_collection, self.name)

    @property
    def order(self) -> tuple:
        return (TYPE_ORDER[self.rule_type], -self.depth, self.rcg_priority, self.collection_priority, self.index)

    def describe(self) -> dict[str, Any]:
        return {"rule_collection_group": self.rule_collection_group, "rule_collection": self.rule_collection,
                "rule": self.name, "rule_type": self.rule_type, "action": self.action,
                "sources": self.sources + [f"ipgroup:{ip_group_name(g)}" for g in self.source_ip_groups],
                "destinations": (self.target_fqdns + [f"tag:{t}" for t in self.fqdn_tags]
                                 + self.destination_addresses + self.destination_fqdns
                                 + [f"ipgroup:{ip_group_name(g)}" for g in self.destination_ip_groups]
                                 + [f"category:{c}" for c in self.web_categories]),
                "ports": ([f"{p}:{n}" for p, n in self.app_protocols] if self.rule_type == "application"
                          else [f"{'/'.join(self.ip_protocols)}:{p}" for p in self.destination_ports])}


# ---------------------------------------------------------------- matching

@lru_cache(maxsize=262144)
def _ip(text: str | None):
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _netparse(text: str):
    return ipaddress.ip_network(text, strict=False)


def interval(entry: str) -> tuple[int, int, int] | None:
    """(IP version, first, last address as integers) of an address, CIDR or `a-b` range; None for a
    name (service tag, unresolved IP Group) or `*`."""
    e = entry.strip()
    if "-" in e and not e.startswith("-"):
        lo, hi = (_ip(x.strip()) for x in e.split("-", 1))
        if lo is not None and hi is not None and lo.version == hi.version and lo <= hi:
            return lo.version, int(lo), int(hi)
        return None
    if "/" in e or _ip(e) is not None:
        try:
            n = _netparse(e)
        except (ValueError, TypeError):
            return None
        return n.version, int(n.network_address), int(n.broadcast_address)
    return None


class _Matcher:
    """An address list compiled once: merged intervals per IP version (a lookup is a bisection), the
    names it holds (service tags, unresolved IP Groups) and whether it is `*`."""

    def __init__(self, entries: tuple[str, ...]):
        self.any = any(e.strip() == "*" for e in entries)
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        self.names: list[str] = []
        for e in entries:
            iv = interval(e)
            if iv is not None:
                spans[iv[0]].append((iv[1], iv[2]))
            elif e.strip() != "*":
                self.names.append(e.strip())
        self.starts: dict[int, list[int]] = {}
        self.ends: dict[int, list[int]] = {}
        for v, ivs in spans.items():
            merged: list[list[int]] = []
            for lo, hi in sorted(ivs):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self.starts[v] = [m[0] for m in merged]
            self.ends[v] = [m[1] for m in merged]

    def contains(self, addr) -> bool:
        v, n = addr.version, int(addr)
        i = bisect.bisect_right(self.starts[v], n) - 1
        return i >= 0 and n <= self.ends[v][i]


@lru_cache(maxsize=16384)
def _matcher(entries: tuple[str, ...]) -> _Matcher:
    return _Matcher(entries)


def address_matches(ip: str | None, entries: Iterable[str], service_tags: dict[str, list] | None = None,
                    ip_groups: dict[str, list[str]] | None = None) -> bool | None:
    """True / False, or None when an entry (service tag, IP Group) cannot be resolved."""
    m = _matcher(tuple(entries))
    if m.any:
        return True
    addr = _ip(ip)
    if addr is None:
        return False
    if m.contains(addr):
        return True
    unknown = False
    for e in m.names:
        nets = (service_tags or {}).get(e) or (ip_groups or {}).get(e)
        if nets is None:
            unknown = True
            continue
        if _matcher(tuple(str(n) for n in nets)).contains(addr):
            return True
    return None if unknown else False


def port_matches(port: int | None, entries: Iterable[str]) -> bool:
    for p in entries:
        p = str(p).strip()
        if p == "*":
            return True
        if port is None:
            continue
        if "-" in p:
            lo, _, hi = p.partition("-")
            if int(lo) <= port <= int(hi):
                return True
        elif p.isdigit() and int(p) == port:
            return True
    return False


@dataclass
class Flow:
    kind: str
    protocol: str
    source_ip: str
    destination_port: int | None
    destination_ip: str | None = None
    destination_fqdn: str | None = None


def rule_matches(rule: Rule, flow: Flow, *, service_tags=None, ip_groups=None, dns: dict[str, set[str]] | None = None) -> bool:
    """Does this rule match the flow (unresolvable references count as no match)?"""
    src = address_matches(flow.source_ip, rule.all_sources, None, ip_groups)
    if not src:
        return False
    if rule.rule_type == "network":
        protos = set(rule.ip_protocols)
        p = flow.protocol
        if not ("ANY" in protos or p in protos or (p in APP_PROTOCOLS and "TCP" in protos)):
            return False
        if p != "ICMP" and not port_matches(flow.destination_port, rule.destination_ports):
            return False
        if flow.destination_ip:
            if address_matches(flow.destination_ip, rule.all_destination_addresses, service_tags, ip_groups):
                return True
            names = (dns or {}).get(flow.destination_ip, set())
            return any(n in rule.destination_fqdns for n in names)
        if flow.destination_fqdn:
            return flow.destination_fqdn in rule.destination_fqdns or "*" in rule.destination_addresses
        return False
    if rule.rule_type == "application":
        if flow.protocol not in APP_PROTOCOLS or not flow.destination_fqdn:
            return False
        if not any(pt == flow.protocol and (pn == flow.destination_port or pn == 0) for pt, pn in rule.app_protocols):
            return False
        name = flow.destination_fqdn
        return (any(fqdn_matches(name, t) for t in rule.target_fqdns)
                or any(tag_matches(t, name) for t in rule.fqdn_tags))
    return False


def evaluate(rules: list[Rule], flow: Flow, **kw) -> Rule | None:
    """The first rule (in Azure order) that matches the flow, or None (default deny). DNAT is skipped:
    it applies to inbound traffic to the firewall's public IPs, not to the egress flows analysed here."""
    for r in rules:
        if r.rule_type == "nat":
            continue
        if r.rule_type == "application" and flow.kind != "application" and flow.protocol not in APP_PROTOCOLS:
            continue
        if rule_matches(r, flow, **kw):
            return r
    return None


# ---------------------------------------------------------------- static analysis

def net_size(entries: list[str], service_tags=None) -> float:
    """Addresses a rule's address list covers: CIDRs and ranges counted, `*` the whole space, a service
    tag its listed prefixes (or 2^20 when unknown)."""
    total = 0.0
    for e in entries:
        if e == "*":
            return 2.0**32
        iv = interval(e)
        if iv is not None:
            total += iv[2] - iv[1] + 1
        else:
            nets = (service_tags or {}).get(e)
            total += sum(ipaddress.ip_network(n, strict=False).num_addresses for n in nets) if nets else 2.0**20
    return total


def port_count(entries: list[str]) -> int:
    n = 0
    for p in entries:
        if p.strip() == "*":
            return 65535
        if "-" in p:
            lo, _, hi = p.partition("-")
            n += int(hi) - int(lo) + 1
        elif p.strip().isdigit():
            n += 1
    return max(n, 1)


def permissiveness(rule: Rule, service_tags=None) -> float:
    """0 (one source, one name, one port) .. 100 (any source, anything, any port). IP Groups count with
    their members; an IP Group that could not be resolved counts as a mid-sized source set."""
    import math

    sources = rule.all_sources
    src = math.log2(max(1.0, net_size(sources, service_tags))) / 32 if sources else 0.3
    if rule.rule_type == "application":
        dst = 0.0
        for t in rule.target_fqdns:
            dst = max(dst, 1.0 if t == "*" else 0.5 if t.startswith("*.") else 0.1)
        if rule.fqdn_tags:
            dst = max(dst, 0.4)
        if rule.web_categories:
            dst = max(dst, 0.8)
        dst = min(1.0, dst + 0.01 * len(rule.target_fqdns))
        ports = min(1.0, len(rule.app_protocols) / 4)
    else:
        addrs = rule.all_destination_addresses
        dst = math.log2(max(1.0, net_size(addrs, service_tags))) / 32 if addrs else 0.0
        if rule.destination_fqdns:
            dst = max(dst, min(1.0, 0.1 + 0.01 * len(rule.destination_fqdns)))
        ports = math.log2(port_count(rule.destination_ports)) / 16
        if "ANY" in rule.ip_protocols:
            ports = min(1.0, ports + 0.2)
    return round(100 * (0.3 * src + 0.45 * dst + 0.25 * ports), 1)


def covers_addresses(a: list[str], b: list[str]) -> bool:
    """Does address list `a` hold every address of `b`? Names (service tags) must appear in both."""
    if "*" in a:
        return True
    if "*" in b:
        return False
    m = _matcher(tuple(a))
    for e in b:
        iv = interval(e)
        if iv is None:
            if e.strip() not in m.names:
                return False
            continue
        v, lo, hi = iv
        i = bisect.bisect_right(m.starts[v], lo) - 1
        if i < 0 or m.ends[v][i] < hi:
            return False
    return True


def _covers_ports(a: list[str], b: list[str]) -> bool:
    if any(p.strip() == "*" for p in a):
        return True
    def rng(p):
        lo, _, hi = p.partition("-")
        return int(lo), int(hi or lo)
    try:
        ar = [rng(p) for p in a]
        return all(any(lo <= bl and bh <= hi for lo, hi in ar) for bl, bh in (rng(p) for p in b))
    except ValueError:
        return False


def _covers_fqdns(a: list[str], b: list[str]) -> bool:
    return all(any(fqdn_matches(y.removeprefix("*."), x) if not y.startswith("*.") else
                   (x == "*" or (x.startswith("*.") and (y == x or y.endswith(x[1:])))) for x in a) for y in b)


def _covers(a: Rule, b: Rule) -> bool:
    """Does `a` match every flow `b` can match (same type, Azure's semantics)?"""
    if a.rule_type != b.rule_type or a.unresolved_ip_groups:
        return False
    if not covers_addresses(a.all_sources, b.all_sources):
        return False
    if b.rule_type == "network":
        b_addrs, a_addrs = b.all_destination_addresses, a.all_destination_addresses
        if not (b_addrs or b.destination_fqdns):
            return False
        if not ("ANY" in a.ip_protocols or set(b.ip_protocols) <= set(a.ip_protocols)):
            return False
        if not _covers_ports(a.destination_ports, b.destination_ports):
            return False
        if b_addrs and not covers_addresses(a_addrs, b_addrs):
            return False
        return not b.destination_fqdns or "*" in a_addrs or set(b.destination_fqdns) <= set(a.destination_fqdns)
    if b.fqdn_tags or b.web_categories or b.target_urls or a.web_categories or a.target_urls:
        if not (set(b.fqdn_tags) <= set(a.fqdn_tags) and not b.web_categories and not b.target_urls):
            return False
    return set(b.app_protocols) <= set(a.app_protocols) and _covers_fqdns(a.target_fqdns, b.target_fqdns)


_BLOCKS = 64  # an address list touching more /24 (then /16) blocks than this is indexed as "wide"


def _block_keys(entries: list[str]) -> list[str]:
    """Index keys of an address list: the /24 blocks it touches, else its /16 blocks, else "wide"."""
    if any(e.strip() == "*" for e in entries):
        return ["wide"]
    m = _matcher(tuple(entries))
    if m.starts[6]:
        return ["wide"]
    for shift, label in ((8, "/24"), (16, "/16")):
        keys: set[str] = set()
        for lo, hi in zip(m.starts[4], m.ends[4]):
            if (hi >> shift) - (lo >> shift) >= _BLOCKS:
                keys = set()
                break
            keys.update(f"{label}:{b}" for b in range((lo >> shift), (hi >> shift) + 1))
            if len(keys) > _BLOCKS:
                break
        else:
            if keys:
                return sorted(keys)
            continue
    return ["wide"]


def _point_keys(entries: list[str]) -> list[str] | None:
    """Keys under which a rule holding the first address of `entries` must be indexed (None: no filter)."""
    if not entries:
        return None
    if any(e.strip() == "*" for e in entries):
        return ["wide"]
    iv = interval(entries[0])
    if iv is None:
        return None
    if iv[0] == 6:
        return ["wide"]
    return [f"/24:{iv[1] >> 8}", f"/16:{iv[1] >> 16}", "wide"]


def _port_keys(ports: list[str]) -> list[str]:
    keys: list[str] = []
    for p in ports:
        if p.strip() == "*":
            return ["any"]
        lo, _, hi = p.partition("-")
        lo_i, hi_i = int(lo), int(hi or lo)
        if hi_i - lo_i > 256:
            keys.append("pwide")
        else:
            keys += [f"p:{n}" for n in range(lo_i, hi_i + 1)]
    return keys


def _fqdn_keys(r: Rule) -> tuple[list[str] | None, list[str]]:
    index = list(r.target_fqdns) or ["*"]
    if not r.target_fqdns:
        return ["*"], index
    labels = r.target_fqdns[0].removeprefix("*.").split(".")
    return ["*", r.target_fqdns[0]] + ["*." + ".".join(labels[i:]) for i in range(len(labels))], index


def _dimensions(r: Rule) -> list[tuple[list[str] | None, list[str]]]:
    """Per dimension: the keys an earlier covering rule must be indexed under (None: no filter on this
    dimension), and the keys this rule is indexed under for later ones."""
    src = (_point_keys(r.all_sources), _block_keys(r.all_sources) if r.all_sources else ["wide"])
    if r.rule_type == "application":
        return [_fqdn_keys(r), src]
    ports = r.destination_ports or ["*"]
    first = ports[0].strip()
    port_lookup = ["any"] if first == "*" else [f"p:{int(first.partition('-')[0])}", "pwide", "any"]
    dst_entries = r.all_destination_addresses
    dst_index = _block_keys(dst_entries) if any(interval(e) or e.strip() == "*" for e in dst_entries) else ["names"]
    return [(port_lookup, _port_keys(ports)), src, (_point_keys(dst_entries), dst_index)]


def shadowed_by(rules: list[Rule]) -> dict[tuple[str, str, str], Rule]:
    """Rules that can never match because an earlier rule (Azure order) matches everything they do.

    IP Groups count with their members (a rule with a group that could not be resolved is never
    judged). Earlier rules are found through indexes on target names, ports, source and destination
    address blocks, walking the most selective one, so a policy of tens of thousands of rules is judged
    in about linear time."""
    out: dict[tuple[str, str, str], Rule] = {}
    index: dict[tuple[str, int, str], set[int]] = {}
    for i, b in enumerate(rules):
        if b.rule_type == "nat":
            continue
        dims = _dimensions(b)
        if not b.unresolved_ip_groups:
            lookups = [(d, keys) for d, (keys, _) in enumerate(dims) if keys is not None]
            sets = [[index.get((b.rule_type, d, k), set()) for k in keys] for d, keys in lookups]
            sizes = [sum(len(x) for x in group) for group in sets]
            best = min(range(len(sets)), key=sizes.__getitem__)
            others = [group for n, group in enumerate(sets) if n != best]
            candidates = sorted({j for x in sets[best] for j in x})
            for j in candidates:  # earliest first: the rule named is the one Azure reaches first
                if all(any(j in x for x in group) for group in others) and _covers(rules[j], b):
                    out[b.key] = rules[j]
                    break
        for d, (_, keys) in enumerate(dims):
            for k in keys:
                index.setdefault((b.rule_type, d, k), set()).add(i)
    return out
