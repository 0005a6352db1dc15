"""Read a firewall policy (az list JSON or ARM export) and evaluate flows the way Azure does.

Order: DNAT, then network, then application rules regardless of rule collection group priority;
within a type the parent policy's groups first, then group priority, collection priority and rule
order; first match wins; default deny. Application rules only see HTTP/HTTPS/MSSQL traffic that no
network rule matched. Wildcards: only a left-most ``*.`` (any depth, not the parent itself) or ``*``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from egresslens.recommend.catalogue import tag_matches
from egresslens.recommend.wildcards import fqdn_matches

APP_PROTOCOLS = ("HTTP", "HTTPS", "MSSQL")
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
    parent: bool = False
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

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule_collection_group, self.rule_collection, self.name)

    @property
    def order(self) -> tuple:
        return (TYPE_ORDER[self.rule_type], 0 if self.parent else 1, self.rcg_priority,
                self.collection_priority, self.index)

    def describe(self) -> dict[str, Any]:
        return {"rule_collection_group": self.rule_collection_group, "rule_collection": self.rule_collection,
                "rule": self.name, "rule_type": self.rule_type, "action": self.action,
                "sources": self.sources + [f"ipgroup:{g}" for g in self.source_ip_groups],
                "destinations": (self.target_fqdns + [f"tag:{t}" for t in self.fqdn_tags]
                                 + self.destination_addresses + self.destination_fqdns
                                 + [f"ipgroup:{g}" for g in self.destination_ip_groups]
                                 + [f"category:{c}" for c in self.web_categories]),
                "ports": ([f"{p}:{n}" for p, n in self.app_protocols] if self.rule_type == "application"
                          else [f"{'/'.join(self.ip_protocols)}:{p}" for p in self.destination_ports])}


class PolicyError(ValueError):
    pass


def _props(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("properties", obj) if isinstance(obj.get("properties"), dict) else obj


def _list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else ([] if v in (None, "") else [v])


def _rule_type(r: dict[str, Any]) -> str:
    t = str(r.get("ruleType", "")).lower()
    if t.startswith("application"):
        return "application"
    if t.startswith("nat"):
        return "nat"
    if t.startswith("network"):
        return "network"
    raise PolicyError(f"unknown ruleType {r.get('ruleType')!r} in rule {r.get('name')!r}")


def _groups_from_doc(doc: Any) -> list[tuple[dict[str, Any], bool]]:
    """(rule collection group, is_parent) from az list JSON, a single RCG, or an ARM export."""
    if isinstance(doc, dict) and "resources" in doc:  # ARM export
        out = []
        for res in doc["resources"]:
            if str(res.get("type", "")).lower() == "microsoft.network/firewallpolicies/rulecollectiongroups":
                name = str(res.get("name", ""))
                # ARM names look like "[concat(parameters('p'), '/DefaultNetworkRuleCollectionGroup')]" or "p/g"
                name = name.rstrip("')]").split("/")[-1].strip("'")
                out.append(({"name": name, **_props(res)}, False))
        return out
    if isinstance(doc, dict) and "ruleCollections" in _props(doc):
        return [({"name": doc.get("name"), **_props(doc)}, False)]
    if isinstance(doc, dict) and ("groups" in doc or "parent" in doc):  # {"parent": [...], "groups": [...]}
        return [(g, True) for g in _list(doc.get("parent"))] + [(g, False) for g in _list(doc.get("groups"))]
    if isinstance(doc, list):
        return [({"name": g.get("name"), **_props(g)}, False) for g in doc]
    raise PolicyError("not a policy: expected the JSON list `az network firewall policy rule-collection-group list` prints, or an ARM export")


def parse_policy(doc: Any, parent: Any = None) -> list[Rule]:
    """Normalised rules in Azure's evaluation order."""
    pairs = _groups_from_doc(doc)
    if parent is not None:
        pairs = [(g, True) for g, _ in _groups_from_doc(parent)] + pairs
    rules: list[Rule] = []
    for g, is_parent in pairs:
        gname = str(g.get("name") or "")
        gprio = int(g.get("priority") or 65000)
        for c in _list(g.get("ruleCollections")):
            cprops = _props(c)
            action = cprops.get("action") or {}
            action = action.get("type", "Allow") if isinstance(action, dict) else str(action)
            action = {"allow": "Allow", "deny": "Deny", "dnat": "DNAT"}.get(str(action).lower(), str(action))
            for i, r in enumerate(_list(cprops.get("rules"))):
                rt = _rule_type(r)
                protos = []
                for p in _list(r.get("protocols")):
                    if isinstance(p, dict):
                        protos.append((str(p.get("protocolType", "")).upper(), int(p.get("port") or 0)))
                    else:  # "Https:443" / "Https=443"
                        t, _, n = str(p).replace("=", ":").partition(":")
                        protos.append((t.upper(), int(n or 0)))
                rules.append(Rule(
                    rule_type=rt, name=str(r.get("name") or "").strip(), rule_collection_group=gname, rcg_priority=gprio,
                    rule_collection=str(c.get("name") or ""), collection_priority=int(cprops.get("priority") or 65000),
                    action="DNAT" if rt == "nat" else action, index=i, parent=is_parent,
                    sources=[str(s) for s in _list(r.get("sourceAddresses"))],
                    source_ip_groups=[str(s) for s in _list(r.get("sourceIpGroups"))],
                    ip_protocols=[str(s).upper() for s in _list(r.get("ipProtocols"))],
                    destination_addresses=[str(s) for s in _list(r.get("destinationAddresses"))],
                    destination_ip_groups=[str(s) for s in _list(r.get("destinationIpGroups"))],
                    destination_fqdns=[str(s).lower() for s in _list(r.get("destinationFqdns"))],
                    destination_ports=[str(s) for s in _list(r.get("destinationPorts"))],
                    app_protocols=protos,
                    target_fqdns=[str(s).lower() for s in _list(r.get("targetFqdns"))],
                    fqdn_tags=[str(s) for s in _list(r.get("fqdnTags"))],
                    web_categories=[str(s) for s in _list(r.get("webCategories"))],
                    target_urls=[str(s) for s in _list(r.get("targetUrls"))],
                ))
    rules.sort(key=lambda r: r.order)
    return rules


def load_policy(path: str | Path, parent: str | Path | None = None) -> list[Rule]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        pdoc = json.loads(Path(parent).read_text(encoding="utf-8-sig")) if parent else None
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{path}: not JSON ({exc})") from exc
    return parse_policy(doc, pdoc)


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


def address_matches(ip: str | None, entries: Iterable[str], service_tags: dict[str, list] | None = None,
                    ip_groups: dict[str, list[str]] | None = None) -> bool | None:
    """True / False, or None when an entry (service tag, IP Group) cannot be resolved."""
    addr = _ip(ip)
    unknown = False
    for e in entries:
        e = e.strip()
        if e == "*":
            return True
        if addr is None:
            continue
        if "/" in e or _ip(e) is not None:
            try:
                if addr in _netparse(e):
                    return True
            except (ValueError, TypeError):
                pass
            continue
        if "-" in e and all(_ip(x) for x in e.split("-", 1)):
            lo, hi = (ipaddress.ip_address(x) for x in e.split("-", 1))
            if lo.version == addr.version and lo <= addr <= hi:
                return True
            continue
        nets = (service_tags or {}).get(e) or (ip_groups or {}).get(e)
        if nets is None:
            unknown = True
            continue
        if any(addr in (n if not isinstance(n, str) else ipaddress.ip_network(n, strict=False)) for n in nets
               if (n.version if not isinstance(n, str) else ipaddress.ip_network(n, strict=False).version) == addr.version):
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
    src = address_matches(flow.source_ip, rule.sources + rule.source_ip_groups, None, ip_groups)
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
            if address_matches(flow.destination_ip, rule.destination_addresses + rule.destination_ip_groups,
                               service_tags, ip_groups):
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
        try:
            total += ipaddress.ip_network(e, strict=False).num_addresses
        except ValueError:
            if "-" in e and all(_ip(x) for x in e.split("-", 1)):
                lo, hi = (int(ipaddress.ip_address(x)) for x in e.split("-", 1))
                total += max(1, hi - lo + 1)
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
    """0 (one source, one name, one port) .. 100 (any source, anything, any port)."""
    import math

    src = math.log2(max(1.0, net_size(rule.sources, service_tags))) / 32 if rule.sources else 0.3
    if rule.source_ip_groups:
        src = max(src, 0.3)
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
        dst = math.log2(max(1.0, net_size(rule.destination_addresses, service_tags))) / 32 if rule.destination_addresses else 0.0
        if rule.destination_fqdns:
            dst = max(dst, min(1.0, 0.1 + 0.01 * len(rule.destination_fqdns)))
        if rule.destination_ip_groups:
            dst = max(dst, 0.3)
        ports = math.log2(port_count(rule.destination_ports)) / 16
        if "ANY" in rule.ip_protocols:
            ports = min(1.0, ports + 0.2)
    return round(100 * (0.3 * src + 0.45 * dst + 0.25 * ports), 1)


def _covers_addresses(a: list[str], b: list[str]) -> bool:
    if "*" in a:
        return True
    if "*" in b:
        return False
    try:
        an = [ipaddress.ip_network(x, strict=False) for x in a]
        bn = [ipaddress.ip_network(x, strict=False) for x in b]
    except ValueError:
        return set(b) <= set(a)
    return all(any(y.version == x.version and y.subnet_of(x) for x in an) for y in bn)


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


def shadowed_by(rules: list[Rule]) -> dict[tuple[str, str, str], Rule]:
    """Rules that can never match because an earlier rule (Azure order) matches everything they do."""
    out: dict[tuple[str, str, str], Rule] = {}
    for i, b in enumerate(rules):
        if b.rule_type == "nat" or b.source_ip_groups or b.destination_ip_groups:
            continue
        for a in rules[:i]:
            if a.rule_type != b.rule_type or a.source_ip_groups or a.destination_ip_groups:
                continue
            if not _covers_addresses(a.sources, b.sources):
                continue
            if b.rule_type == "network":
                if not (("ANY" in a.ip_protocols or set(b.ip_protocols) <= set(a.ip_protocols))
                        and _covers_ports(a.destination_ports, b.destination_ports)
                        and (_covers_addresses(a.destination_addresses, b.destination_addresses) if b.destination_addresses else True)
                        and set(b.destination_fqdns) <= set(a.destination_fqdns) | ({"*"} if "*" in a.destination_addresses else set())
                        and (b.destination_addresses or b.destination_fqdns)):
                    continue
                if b.destination_fqdns and "*" not in a.destination_addresses and not set(b.destination_fqdns) <= set(a.destination_fqdns):
                    continue
            else:
                if b.fqdn_tags or b.web_categories or b.target_urls or a.web_categories or a.target_urls:
                    if not (set(b.fqdn_tags) <= set(a.fqdn_tags) and not b.web_categories and not b.target_urls):
                        continue
                if not set(b.app_protocols) <= set(a.app_protocols):
                    continue
                if not _covers_fqdns(a.target_fqdns, b.target_fqdns):
                    continue
            out[b.key] = a
            break
    return out
