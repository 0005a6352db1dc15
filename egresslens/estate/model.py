"""The estate: policies (with their parent chain), firewalls (with their policy or classic rules) and
IP Groups, and the rules each firewall evaluates, in Azure's order with IP Groups resolved.

Keys are lower-case ARM ids when the documents carry them (`az` and ARM output always do), else
`name:<name>` or, for a hand-made export without ids, `file:<path>`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from egresslens.estate.rules import PolicyError, build_rules
from egresslens.recommend.policy import Rule, ip_group_name

MAX_PARENT_DEPTH = 8  # a parent chain longer than this is a loop or a mistake


def last_segment(ref: str | None) -> str:
    return ip_group_name(ref or "")


def resource_key(ref: str | None) -> str | None:
    return ref.strip().rstrip("/").lower() if isinstance(ref, str) and ref.strip() else None


def ip_group_key(gid: str | None, name: str) -> str:
    """How an IP Group is keyed: its id when the id ends in its name, else its name."""
    if gid and last_segment(gid).lower() == name.lower():
        return resource_key(gid) or f"name:{name.lower()}"
    return f"name:{name.lower()}"


@dataclass
class IpGroup:
    id: str
    name: str
    addresses: list[str]
    source: str = ""


@dataclass
class PolicyDoc:
    key: str
    name: str
    id: str | None = None
    parent: str | None = None  # key of the parent (base) policy
    groups: list[dict[str, Any]] = field(default_factory=list)  # rule collection groups, normalised
    dns_proxy: bool | None = None  # dnsSettings.enableProxy
    firewalls: list[str] = field(default_factory=list)  # keys of the firewalls that use it
    source: str = ""
    require_proxy: bool | None = None  # dnsSettings.requireProxyForNetworkRules
    children: list[str] | None = None  # keys of its child policies (`childPolicies`); None when the read did not say



@dataclass
class FirewallDoc:
    key: str
    name: str
    id: str | None = None
    policy: str | None = None  # key of its policy
    classic: dict[str, Any] | None = None  # classic rule collections as one unnamed group
    dns_proxy: bool | None = None  # additionalProperties Network.DNS.EnableProxy
    source: str = ""
    require_proxy: bool | None = None  # additionalProperties Network.DNS.RequireProxyForNetworkRules



class RuleSet(list):
    """The rules one firewall (or one policy) evaluates, sorted in Azure's order, with what they came
    from: the policy chain (root first), the firewall, DNS proxy, and the IP Groups they reference."""

    def __init__(self, rules=(), *, policy: PolicyDoc | None = None, chain: list[PolicyDoc] | None = None,
                 firewall: FirewallDoc | None = None, dns_proxy: bool | None = None, require_proxy: bool | None = None,
                 ip_groups: dict[str, IpGroup] | None = None, warnings: list[str] | None = None,
                 all_ip_groups: list[IpGroup] | None = None):
        super().__init__(sorted(rules, key=lambda r: r.order))
        self.policy = policy
        self.chain = chain or ([policy] if policy else [])
        self.firewall = firewall
        self.dns_proxy = dns_proxy
        self.require_proxy = require_proxy  # requireProxyForNetworkRules: FQDNs in network rules supported when true
        self.ip_groups = ip_groups or {}  # reference -> group, for the groups its rules use
        self.all_ip_groups = all_ip_groups or []  # every IP Group known (a proposal may name one)
        self.warnings = warnings or []

    @property
    def classic(self) -> bool:
        return self.firewall is not None and self.policy is None

    @property
    def target(self) -> str:
        """Where changes go: the policy's name (or the classic firewall's)."""
        if self.policy is not None:
            return self.policy.name
        return self.firewall.name if self.firewall else ""


@dataclass
class Estate:
    policies: dict[str, PolicyDoc] = field(default_factory=dict)
    firewalls: dict[str, FirewallDoc] = field(default_factory=dict)
    ip_groups: dict[str, IpGroup] = field(default_factory=dict)  # by lower-case id (or name:<name>)
    sources: list[str] = field(default_factory=list)  # files or Azure ids read
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.policies or self.firewalls)

    # -- lookups ----------------------------------------------------------------------------------
    def ip_group(self, ref: str) -> IpGroup | None:
        """An IP Group by id; by name when the id is not known (exports differ in id spelling)."""
        g = self.ip_groups.get(resource_key(ref) or "")
        if g is not None:
            return g
        name = last_segment(ref).lower()
        named = [g for g in self.ip_groups.values() if g.name.lower() == name]
        return named[0] if len(named) == 1 else None

    def firewall(self, ref: str) -> FirewallDoc | None:
        """A firewall by ARM id or name (case-insensitive), as `--firewall` and the store name it."""
        key = resource_key(ref) or ""
        if key in self.firewalls:
            return self.firewalls[key]
        name = last_segment(key)
        named = [f for f in self.firewalls.values() if f.name.lower() == name]
        return named[0] if len(named) == 1 else None

    def policy(self, ref: str) -> PolicyDoc | None:
        key = resource_key(ref) or ""
        if key in self.policies:
            return self.policies[key]
        named = [p for p in self.policies.values() if p.name.lower() == last_segment(key)]
        return named[0] if len(named) == 1 else None

    def chain(self, key: str) -> list[PolicyDoc]:
        """The policy and its ancestors, root first."""
        out: list[PolicyDoc] = []
        seen: set[str] = set()
        k: str | None = key
        while k is not None:
            if k in seen or len(out) > MAX_PARENT_DEPTH:
                raise PolicyError(f"the parent chain of policy {self.policies[key].name} loops or is longer than "
                                  f"{MAX_PARENT_DEPTH} levels")
            seen.add(k)
            p = self.policies.get(k)
            if p is None:
                self.warn(f"the parent policy {last_segment(k)} was not given: its rules are not evaluated "
                          "(give its export too, or read it from Azure with --policy-id)")
                break
            out.append(p)
            k = p.parent
        return out[::-1]

    def leaves(self) -> list[PolicyDoc]:
        """Policies no other policy inherits from (the ones firewalls use directly)."""
        parents = {p.parent for p in self.policies.values() if p.parent}
        return [p for k, p in self.policies.items() if k not in parents]

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- rules --------------------------------------------------------------------------------------
    def _resolve(self, rules: list[Rule]) -> dict[str, IpGroup]:
        used: dict[str, IpGroup] = {}
        for r in rules:
            members: dict[str, list[str]] = {}
            for ref in r.source_ip_groups + r.destination_ip_groups:
                g = self.ip_group(ref)
                if g is None:
                    self.warn(f"IP Group {last_segment(ref)} (used by {r.rule_collection_group}/{r.rule_collection}/"
                              f"{r.name}) was not given: that rule is judged only where its other addresses decide")
                    continue
                members[ref] = list(g.addresses)
                used[ref] = g
            r.ip_group_members = members
        return used

    def rules_for_policy(self, key: str, firewall: FirewallDoc | None = None) -> RuleSet:
        chain = self.chain(key)
        counter = [0]
        rules: list[Rule] = []
        for depth, p in enumerate(reversed(chain)):
            own_rules = build_rules(p.groups, depth=depth, counter=counter)
            for r in own_rules:
                r.policy = p.name
            rules += own_rules
        used = self._resolve(rules)
        own = self.policies[key]

        def setting(name: str) -> bool | None:  # the policy's own, else the nearest ancestor's, the firewall's last
            value = next((getattr(p, name) for p in reversed(chain) if getattr(p, name) is not None), None)
            return getattr(firewall, name) if firewall is not None and getattr(firewall, name) is not None else value

        return RuleSet(rules, policy=own, chain=chain, firewall=firewall, dns_proxy=setting("dns_proxy"),
                       require_proxy=setting("require_proxy"), ip_groups=used,
                       warnings=list(self.warnings), all_ip_groups=list(self.ip_groups.values()))

    def rules_for_firewall(self, ref: str) -> RuleSet | None:
        fw = self.firewall(ref)
        if fw is None:
            return None
        if fw.policy is not None:
            if fw.policy not in self.policies:
                self.warn(f"firewall {fw.name} uses policy {last_segment(fw.policy)}, which was not given")
                return None
            return self.rules_for_policy(fw.policy, fw)
        if fw.classic is None:
            return None
        rules = build_rules([fw.classic])
        used = self._resolve(rules)
        return RuleSet(rules, firewall=fw, dns_proxy=fw.dns_proxy, require_proxy=fw.require_proxy, ip_groups=used,
                       warnings=list(self.warnings),
                       all_ip_groups=list(self.ip_groups.values()))

    def default_rules(self) -> RuleSet | None:
        """The one picture when the estate has a single target: the only firewall's rules, else the only
        policy nothing inherits from. None when there are several (each firewall then needs its own)."""
        with_rules = [f for f in self.firewalls.values() if f.classic is not None or f.policy in self.policies]
        if len(with_rules) == 1:
            return self.rules_for_firewall(with_rules[0].key)
        leaves = self.leaves()
        if len(leaves) == 1 and len(with_rules) <= 1:
            return self.rules_for_policy(leaves[0].key)
        return None

    def validate(self) -> None:
        """Build every policy's and classic firewall's rules once: PolicyError for anything unreadable."""
        for k in self.policies:
            self.rules_for_policy(k)
        for f in self.firewalls.values():
            if f.classic is not None:
                build_rules([f.classic])

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"policies": [asdict(p) for p in self.policies.values()],
                "firewalls": [asdict(f) for f in self.firewalls.values()],
                "ip_groups": [asdict(g) for g in self.ip_groups.values()],
                "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Estate":
        e = cls()
        for p in doc.get("policies") or []:
            e.policies[p["key"]] = PolicyDoc(**p)
        for f in doc.get("firewalls") or []:
            e.firewalls[f["key"]] = FirewallDoc(**f)
        for g in doc.get("ip_groups") or []:
            e.ip_groups[ip_group_key(g["id"], g["name"])] = IpGroup(**g)
        e.sources = list(doc.get("sources") or [])
        return e

    def merge(self, other: "Estate") -> None:
        """Add another read: a policy seen twice keeps the groups of both reads, the newer settings."""
        for k, p in other.policies.items():
            mine = self.policies.get(k)
            if mine is None:
                self.policies[k] = p
                continue
            names = {g.get("name") for g in p.groups}
            mine.groups = [g for g in mine.groups if g.get("name") not in names] + p.groups
            mine.parent = p.parent or mine.parent
            mine.dns_proxy = p.dns_proxy if p.dns_proxy is not None else mine.dns_proxy
            mine.require_proxy = p.require_proxy if p.require_proxy is not None else mine.require_proxy
            mine.children = p.children if p.children is not None else mine.children
            mine.firewalls = sorted(set(mine.firewalls) | set(p.firewalls))
            mine.id = mine.id or p.id
        for k, f in other.firewalls.items():
            mine = self.firewalls.get(k)
            if mine is None:
                self.firewalls[k] = f
            else:
                mine.policy = f.policy or mine.policy
                mine.classic = f.classic if f.classic is not None else mine.classic
                mine.dns_proxy = f.dns_proxy if f.dns_proxy is not None else mine.dns_proxy
                mine.require_proxy = f.require_proxy if f.require_proxy is not None else mine.require_proxy
        self.ip_groups.update(other.ip_groups)
        self.sources += [s for s in other.sources if s not in self.sources]
        for w in other.warnings:
            self.warn(w)
        self.link()

    def link(self) -> None:
        """Connect both directions: a policy listing its firewalls, a firewall naming its policy."""
        for p in self.policies.values():
            for fk in p.firewalls:
                f = self.firewalls.get(fk)
                if f is None:
                    self.firewalls[fk] = FirewallDoc(key=fk, name=last_segment(fk), id=fk, policy=p.key, source=p.source)
                elif f.policy is None and f.classic is None:
                    f.policy = p.key
        for f in self.firewalls.values():
            p = self.policies.get(f.policy or "")
            if p is not None and f.key not in p.firewalls:
                p.firewalls.append(f.key)
