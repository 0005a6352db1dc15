"""Rule collection groups (as Azure and its exports write them) to the rules the evaluator reads.

Every value is checked as it is read: a document that is not what Azure writes (a priority that is
no number, a port that is no port or range, a list where an object belongs) raises
:class:`PolicyError` with one sentence naming the rule, never a traceback and never a silently
widened rule. Classic rules (`applicationRuleCollections`, `networkRuleCollections`,
`natRuleCollections` on a firewall without a policy) are read into the same shape: one group
without a name.
"""

from __future__ import annotations

import re
from typing import Any

from egresslens.recommend.policy import Rule

MAX_RULES = 100_000  # rules in one read (files or Azure); Azure's own limits keep real estates far below
_PORT = re.compile(r"^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$")
APP_PROTOCOL_NAMES = {"http": "HTTP", "https": "HTTPS", "mssql": "MSSQL"}
IP_PROTOCOL_NAMES = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "any": "ANY"}
CLASSIC_KINDS = {"applicationRuleCollections": "application", "networkRuleCollections": "network",
                 "natRuleCollections": "nat"}


class PolicyError(ValueError):
    """The policy cannot be read; the message is one sentence for the user."""


def props(obj: dict[str, Any]) -> dict[str, Any]:
    """An ARM object's `properties` (merged over the object), or the object itself (az CLI output)."""
    p = obj.get("properties")
    return {**obj, **p} if isinstance(p, dict) else obj


def _where(group: str, coll: str, rule: str | None = None) -> str:
    parts = [p for p in (group, coll, rule) if p]
    return "/".join(parts) or "(unnamed)"


def text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise PolicyError(f"{what} is a {type(value).__name__}, not text")


def texts(value: Any, what: str) -> list[str]:
    """A list of strings (a single string is a list of one; null is empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    if not isinstance(value, list):
        raise PolicyError(f"{what} is a {type(value).__name__}, not a list")
    return [text(v, what) for v in value]


def objects(value: Any, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{what} is a {type(value).__name__}, not a list")
    for i, v in enumerate(value):
        if not isinstance(v, dict):
            raise PolicyError(f"{what}: item {i + 1} is a {type(v).__name__}, not an object")
    return value


def integer(value: Any, what: str, default: int, lo: int = 0, hi: int = 65535) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(str(value).strip())
    except ValueError:
        raise PolicyError(f"{what} {value!r} is not a number") from None
    if not lo <= n <= hi:
        raise PolicyError(f"{what} {n} is outside {lo}..{hi}")
    return n


def ports(value: Any, what: str) -> list[str]:
    out = []
    for p in texts(value, what):
        p = p.strip()
        if p == "*":
            out.append(p)
            continue
        m = _PORT.match(p)
        if not m or not all(0 <= int(x) <= 65535 for x in m.groups() if x) or (m[2] and int(m[2]) < int(m[1])):
            raise PolicyError(f"{what}: {p!r} is not a port (1-65535), a range like 8000-8080, or *")
        out.append(f"{int(m[1])}-{int(m[2])}" if m[2] else str(int(m[1])))
    return out


def _ip_protocols(value: Any, what: str) -> list[str]:
    out = []
    for p in texts(value, what):
        name = IP_PROTOCOL_NAMES.get(p.strip().lower())
        if name is None:
            raise PolicyError(f"{what}: {p!r} is not TCP, UDP, ICMP or Any")
        out.append(name)
    return out


def _app_protocols(value: Any, what: str) -> list[tuple[str, int]]:
    out = []
    entries = value if isinstance(value, list) else texts(value, what)
    for p in entries:
        if isinstance(p, dict):
            kind, port = text(p.get("protocolType"), what), p.get("port")
        else:  # "Https:443" / "Https=443" (az CLI arguments)
            kind, _, port = text(p, what).replace("=", ":").partition(":")
        name = APP_PROTOCOL_NAMES.get(kind.strip().lower())
        if name is None:
            raise PolicyError(f"{what}: {kind!r} is not Http, Https or Mssql")
        out.append((name, integer(port, f"{what}: port", 0)))
    return out


def _action(value: Any, what: str) -> str:
    a = value.get("type", "Allow") if isinstance(value, dict) else (value or "Allow")
    a = text(a, what)
    return {"allow": "Allow", "deny": "Deny", "dnat": "DNAT", "snat": "DNAT"}.get(a.lower(), a)


def _rule_type(r: dict[str, Any], classic_kind: str | None, what: str) -> str:
    if classic_kind:
        return classic_kind
    t = text(r.get("ruleType"), what).lower()
    for kind in ("application", "network", "nat"):
        if t.startswith(kind):
            return kind
    raise PolicyError(f"{what}: unknown ruleType {r.get('ruleType')!r} (expected ApplicationRule, NetworkRule or NatRule)")


def build_rules(groups: list[dict[str, Any]], *, depth: int = 0, counter: list[int] | None = None) -> list[Rule]:
    """Rules of normalised groups (`{"name", "priority", "ruleCollections"}`), not yet sorted.
    `depth`: 0 for the policy itself, 1 for its parent, 2 for the parent's parent."""
    counter = counter if counter is not None else [0]
    out: list[Rule] = []
    for g in groups:
        gname = text(g.get("name"), "rule collection group name")
        gprio = integer(g.get("priority"), f"rule collection group {gname or '(unnamed)'}: priority", 65000)
        for c in objects(g.get("ruleCollections"), f"rule collection group {gname}: ruleCollections"):
            cp = props(c)
            cname = text(c.get("name"), "rule collection name")
            where = _where(gname, cname)
            classic_kind = cp.get("_classic")
            cprio = integer(cp.get("priority"), f"rule collection {where}: priority", 65000)
            action = _action(cp.get("action"), f"rule collection {where}: action")
            for i, r0 in enumerate(objects(cp.get("rules"), f"rule collection {where}: rules")):
                r = props(r0)
                rname = text(r.get("name"), "rule name").strip()
                what = f"rule {_where(gname, cname, rname)}"
                rt = _rule_type(r, classic_kind, what)
                protos_key = "protocols" if classic_kind else "ipProtocols"
                counter[0] += 1
                if counter[0] > MAX_RULES:
                    raise PolicyError(f"more than {MAX_RULES:,} rules: larger than any policy Azure accepts "
                                      "(read one policy at a time)")
                out.append(Rule(
                    rule_type=rt, name=rname, rule_collection_group=gname, rcg_priority=gprio,
                    rule_collection=cname, collection_priority=cprio, action="DNAT" if rt == "nat" else action,
                    index=i, parent=depth > 0, depth=depth,
                    sources=texts(r.get("sourceAddresses"), f"{what}: sourceAddresses"),
                    source_ip_groups=texts(r.get("sourceIpGroups"), f"{what}: sourceIpGroups"),
                    ip_protocols=_ip_protocols(r.get(protos_key), f"{what}: {protos_key}") if rt != "application" else [],
                    destination_addresses=texts(r.get("destinationAddresses"), f"{what}: destinationAddresses"),
                    destination_ip_groups=texts(r.get("destinationIpGroups"), f"{what}: destinationIpGroups"),
                    destination_fqdns=[s.lower() for s in texts(r.get("destinationFqdns"), f"{what}: destinationFqdns")],
                    destination_ports=ports(r.get("destinationPorts"), f"{what}: destinationPorts"),
                    app_protocols=_app_protocols(r.get("protocols"), f"{what}: protocols") if rt == "application" else [],
                    target_fqdns=[s.lower() for s in texts(r.get("targetFqdns"), f"{what}: targetFqdns")],
                    fqdn_tags=texts(r.get("fqdnTags"), f"{what}: fqdnTags"),
                    web_categories=texts(r.get("webCategories"), f"{what}: webCategories"),
                    target_urls=texts(r.get("targetUrls"), f"{what}: targetUrls"),
                ))
    return out


def classic_group(firewall: dict[str, Any]) -> dict[str, Any] | None:
    """A firewall's classic rule collections as one group without a name, or None when it has none."""
    p = props(firewall)
    cols = []
    for key, kind in CLASSIC_KINDS.items():
        for c in objects(p.get(key), key):
            cols.append({**props(c), "name": c.get("name"), "_classic": kind})
    return {"name": "", "priority": 100, "ruleCollections": cols} if cols else None
