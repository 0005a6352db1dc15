"""Policy documents to an :class:`~egresslens.estate.model.Estate`, recognised by their shape and read
within bounds.

Shapes (one file may hold several, `--policy` may be given many times):

* rule collection groups: `az network firewall policy rule-collection-group list` (a JSON list), one
  group (`... rule-collection-group show`), the REST API's `{"value": [...], "nextLink": ...}`;
* a policy: `az network firewall policy show` (its parent in `basePolicy`, DNS proxy in
  `dnsSettings.enableProxy` and `requireProxyForNetworkRules`, the firewalls that use it in
  `firewalls`, its child policies in `childPolicies`);
* IP Groups: `az network ip-group list` / `show`;
* a firewall: `az network firewall show` (its policy in `firewallPolicy`, or classic rules in
  `applicationRuleCollections`, `networkRuleCollections`, `natRuleCollections`, with DNS proxy in
  `additionalProperties` `Network.DNS.EnableProxy` and `Network.DNS.RequireProxyForNetworkRules`);
* an ARM template export holding any of these as `resources`;
* `{"parent": [groups], "groups": [groups]}`: a child policy and its parent in one file.

Bounds: a file larger than :data:`MAX_FILE_BYTES` is refused before it is read, JSON nested deeper
than :data:`MAX_DEPTH` is refused, and a read of more than
:data:`~egresslens.estate.rules.MAX_RULES` rules is refused, each with :class:`PolicyError` (exit
code 3 on the command line) and one sentence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from egresslens.estate.model import (Estate, FirewallDoc, IpGroup, PolicyDoc, RuleSet, ip_group_key, last_segment,
                                     resource_key)
from egresslens.estate.rules import MAX_RULES, PolicyError, classic_group, objects, props, text, texts

MAX_FILE_BYTES = 32 * 1024 * 1024  # measured at this size (40,000 rules): recommend about 30 s and 1 GB, report 16 s
MAX_DEPTH = 64  # real exports nest about 10 deep
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_RULES", "PolicyError", "load_files", "load_policy",
           "parse_documents", "parse_policy"]

_RCG_SPLIT = re.compile(r"/(?:rulecollectiongroups|rulegroups)/", re.IGNORECASE)


def _depth(data: bytes) -> int:
    """How deep `[` and `{` nest (text inside strings ignored), computed without recursion."""
    import numpy as np

    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    a = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((a == 0x5B) | (a == 0x7B), 1, -1), dtype=np.int64).max())


def read_json(path: str | Path) -> Any:
    """A policy file's JSON, within the size and depth bounds; PolicyError otherwise."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise PolicyError(f"{path} is {size / 2**20:,.0f} MiB: policy files above {MAX_FILE_BYTES // 2**20} MiB are "
                          "refused (export one policy at a time, or read it from Azure with --policy-id)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise PolicyError(f"{path}: JSON nested deeper than {MAX_DEPTH} levels is not a policy export")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"{path}: not JSON ({str(exc).splitlines()[0][:120]})") from None


# -- shapes ----------------------------------------------------------------------------------------

def _type(item: dict[str, Any]) -> str:
    return str(item.get("type") or "").lower()


def _kind(item: dict[str, Any]) -> str | None:
    t = _type(item)
    p = props(item)
    if t.endswith("/rulecollectiongroups") or "ruleCollections" in p:
        return "rcg"
    if t == "microsoft.network/ipgroups" or "ipAddresses" in p:
        return "ipgroup"
    if t == "microsoft.network/azurefirewalls" or any(k in p for k in (
            "applicationRuleCollections", "networkRuleCollections", "natRuleCollections", "ipConfigurations",
            "firewallPolicy", "hubIPAddresses")):
        return "firewall"
    if t == "microsoft.network/firewallpolicies" or any(k in p for k in (
            "basePolicy", "childPolicies", "ruleCollectionGroups", "dnsSettings", "threatIntelMode")):
        return "policy"
    return None


def _items(doc: Any, source: str) -> list[tuple[dict[str, Any], bool | None]]:
    """(item, is_parent) pairs of a document; is_parent None unless the `{parent, groups}` shape says."""
    if isinstance(doc, dict) and "resources" in doc:
        return [(r, None) for r in objects(doc.get("resources"), f"{source}: resources")]
    if isinstance(doc, dict) and isinstance(doc.get("value"), list) and not _kind(doc):
        return [(r, None) for r in objects(doc["value"], f"{source}: value")]
    if isinstance(doc, dict) and ("groups" in doc or "parent" in doc) and not _kind(doc):
        return ([(g, True) for g in objects(doc.get("parent"), f"{source}: parent")]
                + [(g, False) for g in objects(doc.get("groups"), f"{source}: groups")])
    if isinstance(doc, dict):
        return [(doc, None)]
    if isinstance(doc, list):
        return [(g, None) for g in objects(doc, source)]
    raise PolicyError(f"{source} is a JSON {type(doc).__name__}, not a policy export (expected the JSON of "
                      "`az network firewall policy rule-collection-group list`, `az network ip-group list`, "
                      "`az network firewall show` or an ARM export)")


def _arm_name(name: str) -> tuple[str | None, str]:
    """(parent name, own name) of an ARM export's `p/g` or `[concat(parameters('p'), '/g')]`."""
    if name.startswith("["):
        inner = name.rstrip("]").rstrip(")")
        own = inner.rsplit("/", 1)[-1].strip("' ")
        return None, own
    parent, _, own = name.rpartition("/")
    return (parent or None), own


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return None


def parse_documents(docs: Iterable[tuple[str, Any]]) -> Estate:
    """An estate from (source, parsed JSON) pairs; PolicyError for anything that is not an export."""
    estate = Estate()
    for source, doc in docs:
        estate.merge(_parse_one(source, doc))
    estate.link()
    estate.validate()
    return estate


def _parse_one(source: str, doc: Any) -> Estate:
    e = Estate(sources=[source])
    anon: dict[bool, PolicyDoc] = {}

    def anonymous(parent: bool) -> PolicyDoc:
        if parent not in anon:
            key = f"file:{source}" + ("#parent" if parent else "")
            name = Path(source).stem + (" (parent)" if parent else "")
            anon[parent] = e.policies.setdefault(key, PolicyDoc(key=key, name=name, source=source))
        return anon[parent]

    arm_policies: dict[str, str] = {}
    items = _items(doc, source)
    for item, is_parent in items:
        if _kind(item) == "policy":
            _policy(e, item, source, arm_policies)
    for i, (item, is_parent) in enumerate(items):
        kind = _kind(item) if is_parent is None else "rcg"
        if kind == "policy":
            continue
        if kind == "rcg":
            _group(e, item, source, is_parent, anonymous, arm_policies)
        elif kind == "ipgroup":
            p = props(item)
            gid = text(item.get("id"), "IP Group id")
            name = text(item.get("name"), "IP Group name") or last_segment(gid)
            e.ip_groups[ip_group_key(gid, name)] = IpGroup(id=gid or name, name=name, source=source,
                                       addresses=texts(p.get("ipAddresses"), f"IP Group {name}: ipAddresses"))
        elif kind == "firewall":
            _firewall(e, item, source)
        elif _type(item):
            continue  # other resources of an ARM export (public IPs, workspaces)
        else:
            raise PolicyError(f"{source}: item {i + 1} is neither a rule collection group, a policy, an IP Group nor "
                              "a firewall")
    if True in anon and False in anon:
        anon[False].parent = anon[True].key
    return e


def _policy(e: Estate, item: dict[str, Any], source: str, arm_policies: dict[str, str]) -> None:
    p = props(item)
    pid = text(item.get("id"), "policy id")
    name = text(item.get("name"), "policy name")
    if name.startswith("["):
        name = _arm_name(name)[1]
    key = resource_key(pid) or f"name:{(name or Path(source).stem).lower()}"
    base = p.get("basePolicy")
    parent = resource_key(base.get("id")) if isinstance(base, dict) else None
    dns = p.get("dnsSettings")
    fws = [resource_key(f.get("id")) for f in objects(p.get("firewalls"), f"policy {name}: firewalls")]
    doc = e.policies.setdefault(key, PolicyDoc(key=key, name=name or last_segment(key), id=pid or None, source=source))
    doc.parent = parent or doc.parent
    doc.dns_proxy = _bool(dns.get("enableProxy")) if isinstance(dns, dict) else doc.dns_proxy
    doc.require_proxy = _bool(dns.get("requireProxyForNetworkRules")) if isinstance(dns, dict) else doc.require_proxy
    if "childPolicies" in p:  # Azure lists a policy's children; an export without the key says nothing of them
        kids = [resource_key(c.get("id")) for c in objects(p.get("childPolicies"), f"policy {name}: childPolicies")]
        doc.children = sorted({k for k in kids if k})
    doc.firewalls = sorted(set(doc.firewalls) | {f for f in fws if f})
    arm_policies[doc.name] = key


def _group(e: Estate, item: dict[str, Any], source: str, is_parent: bool | None, anonymous, arm_policies) -> None:
    p = props(item)
    gid = text(item.get("id"), "rule collection group id")
    name = text(item.get("name"), "rule collection group name")
    pkey = None
    if gid and _RCG_SPLIT.search(gid):
        pkey = resource_key(_RCG_SPLIT.split(gid)[0])
    if _type(item).endswith("/rulecollectiongroups") and "/" in name:  # ARM export: "policy/group"
        parent_name, name = _arm_name(name)
        if parent_name and not parent_name.startswith("["):
            pkey = pkey or arm_policies.get(parent_name) or f"name:{parent_name.lower()}"
    elif name.startswith("["):
        name = _arm_name(name)[1]
    if pkey is None and len(arm_policies) == 1 and is_parent is None:
        pkey = next(iter(arm_policies.values()))
    if is_parent is not None or pkey is None:
        pol = anonymous(bool(is_parent))
    else:
        pol = e.policies.setdefault(pkey, PolicyDoc(key=pkey, name=last_segment(pkey), id=None, source=source))
        if pol.id is None and pkey.startswith("/subscriptions/"):
            pol.id = _RCG_SPLIT.split(gid)[0] if gid else pkey
    group = {"name": name, "priority": p.get("priority"), "ruleCollections": p.get("ruleCollections")}
    objects(group["ruleCollections"], f"rule collection group {name}: ruleCollections")
    pol.groups = [g for g in pol.groups if g.get("name") != name] + [group]


def _firewall(e: Estate, item: dict[str, Any], source: str) -> None:
    p = props(item)
    fid = text(item.get("id"), "firewall id")
    name = text(item.get("name"), "firewall name") or last_segment(fid)
    key = resource_key(fid) or f"name:{name.lower()}"
    pol = p.get("firewallPolicy")
    extra = p.get("additionalProperties") if isinstance(p.get("additionalProperties"), dict) else {}
    e.firewalls[key] = FirewallDoc(
        key=key, name=name, id=fid or None, source=source,
        policy=resource_key(pol.get("id")) if isinstance(pol, dict) else None,
        classic=classic_group(item), dns_proxy=_bool(extra.get("Network.DNS.EnableProxy")),
        require_proxy=_bool(extra.get("Network.DNS.RequireProxyForNetworkRules")))


# -- entry points ----------------------------------------------------------------------------------

def load_files(paths: Iterable[str | Path]) -> Estate:
    """One estate from every file given (`--policy` repeated), each recognised by its shape."""
    return parse_documents((str(p), read_json(p)) for p in paths)


def parse_policy(doc: Any, parent: Any = None) -> RuleSet:
    """The rules of one policy document (and its parent's), in Azure's order."""
    docs = [("policy", doc)] + ([("parent policy", parent)] if parent is not None else [])
    return _single(docs, parent is not None)


def load_policy(path: str | Path, parent: str | Path | None = None) -> RuleSet:
    """The rules of one policy file (and its parent's file), in Azure's order."""
    docs = [(str(path), read_json(path))] + ([(str(parent), read_json(parent))] if parent else [])
    return _single(docs, parent is not None)


def _single(docs: list[tuple[str, Any]], with_parent: bool) -> RuleSet:
    estates = [_parse_one(s, d) for s, d in docs]
    child = estates[0]
    estate = Estate()
    for x in estates:
        estate.merge(x)
    if with_parent:  # the second document is the first one's parent, whatever their ids say
        kids = [k for k in child.policies if k in estate.policies]
        parents = [p.key for p in estates[1].leaves()]
        for k in kids:
            if parents and estate.policies[k].parent is None and k not in parents:
                estate.policies[k].parent = parents[0]
    estate.link()
    estate.validate()
    rules = estate.default_rules()
    if rules is None:
        leaves = [p.key for p in estate.leaves() if p.key in child.policies] or [p.key for p in estate.leaves()]
        if not leaves:
            fws = [f for f in child.firewalls.values() if f.classic is not None]
            if fws:
                return estate.rules_for_firewall(fws[0].key) or RuleSet()
            raise PolicyError("no rule collection groups and no classic rules found in the policy export")
        rules = estate.rules_for_policy(leaves[0])
    return rules
