"""A simulated estate (`egresslens simulate --firewalls N`): a firewall per region, all but the last
on a child policy of one parent policy, the last with classic rules, IP Groups naming the spokes.

* parent policy `fwp-base`: the AKS platform rules (group `aks-egress`), sourced from the IP Group
  `ipg-aks-nodes` that holds every region's node subnet; DNS proxy on.
* child policy `fwp-<region>` per policy firewall: its DNAT rule and its workload rules (group
  `app-egress`), pods named by the IP Group `ipg-<region>-pods`.
* the classic firewall: the same rules as `applicationRuleCollections`, `networkRuleCollections`
  and `natRuleCollections` on the firewall resource.

Each firewall's traffic is the one-firewall scenario in its own address space (spokes 20 second-octet
values apart), plus a partner API only that region calls; every flow is decided by EgressLens's
evaluator against the rules that firewall really evaluates (parent first, IP Groups resolved). The
exports under `estate/` have the shapes `az` prints (`rule-collection-group list`, `policy show`,
`ip-group list`, `firewall show`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from egresslens import atomic
from egresslens.simulate.base import RESOURCE_GROUP, SUBSCRIPTION
from egresslens.simulate.policy import build_policy

REGIONS = ("westeurope", "northeurope", "swedencentral", "francecentral", "uksouth", "germanywestcentral",
           "norwayeast", "polandcentral", "italynorth", "spaincentral")
PARENT = "fwp-base"
NET = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network"
MAX_FIREWALLS = len(REGIONS)


@dataclass
class Site:
    index: int
    region: str
    classic: bool
    rules: Any = None  # the RuleSet it evaluates (set once the estate is read)

    @property
    def name(self) -> str:
        return f"fw-{self.region}"

    @property
    def octet(self) -> int:
        return 20 * self.index

    @property
    def firewall_id(self) -> str:  # as the logs (and so the store) carry it: lower case
        return f"{NET}/azureFirewalls/{self.name}".lower()

    @property
    def arm_id(self) -> str:
        return f"{NET}/azureFirewalls/{self.name}"

    @property
    def resource_id(self) -> str:  # as Azure writes resourceId into the logs
        return self.arm_id.upper()

    @property
    def policy_name(self) -> str:
        return f"fwp-{self.region}"

    @property
    def public_ip(self) -> str:
        return f"20.93.112.{41 + self.index}"

    @property
    def subnets(self) -> dict[str, str]:
        o = self.octet
        return {"hub-firewall": f"10.0.{self.index * 4}.0/26", "aks-nodes": f"10.{240 - o}.0.0/22",
                "aks-pods": f"10.{244 - o}.0.0/16", "vm-spoke": f"10.{241 - o}.0.0/24"}


def sites(n: int) -> list[Site]:
    if not 2 <= n <= MAX_FIREWALLS:
        raise ValueError(f"--firewalls must be between 2 and {MAX_FIREWALLS}")
    return [Site(i, REGIONS[i], classic=(i == n - 1)) for i in range(n)]


def _ipg_id(name: str) -> str:
    return f"{NET}/ipGroups/{name}"


def _with_ip_group(groups: list[dict], cidr: str, ip_group: str) -> list[dict]:
    """The groups with `cidr` as a source replaced by the IP Group that holds it."""
    out = json.loads(json.dumps(groups))
    for g in out:
        for c in g["ruleCollections"]:
            for r in c["rules"]:
                if cidr in r.get("sourceAddresses", []):
                    r["sourceAddresses"] = [s for s in r["sourceAddresses"] if s != cidr]
                    r["sourceIpGroups"] = r.get("sourceIpGroups", []) + [_ipg_id(ip_group)]
    return out


def _classic(groups: list[dict]) -> dict[str, list[dict]]:
    """Policy groups as a classic firewall's rule collections (priorities keep group, then collection order)."""
    out: dict[str, list[dict]] = {"applicationRuleCollections": [], "networkRuleCollections": [], "natRuleCollections": []}
    for g in groups:
        for c in g["ruleCollections"]:
            prio = int(g["priority"]) * 10 + int(c["priority"]) // 100
            kinds = {r["ruleType"] for r in c["rules"]}
            key = ("natRuleCollections" if "NatRule" in kinds else
                   "applicationRuleCollections" if "ApplicationRule" in kinds else "networkRuleCollections")
            rules = []
            for r in c["rules"]:
                r = {k: v for k, v in r.items() if k not in ("ruleType", "terminateTLS", "httpHeadersToInsert",
                                                              "webCategories", "targetUrls")}
                if "ipProtocols" in r:
                    r["protocols"] = r.pop("ipProtocols")
                rules.append(r)
            action = {"DNAT": "Dnat"}.get(c["action"]["type"], c["action"]["type"])
            out[key].append({"name": c["name"], "id": None, "priority": prio, "action": {"type": action},
                             "rules": rules})
    return out


def _rcg_list(policy: str, groups: list[dict]) -> list[dict]:
    return [{**g, "id": f"{NET}/firewallPolicies/{policy}/ruleCollectionGroups/{g['name']}",
             "resourceGroup": RESOURCE_GROUP, "type": "Microsoft.Network/FirewallPolicies/RuleCollectionGroups"}
            for g in groups]


@dataclass
class EstateDocs:
    files: dict[str, Any] = field(default_factory=dict)  # file name under estate/ -> the JSON written


DNS_SETTINGS = {"enableProxy": True, "requireProxyForNetworkRules": True}  # as the portal sets DNS proxy


def estate_documents(all_sites: list[Site]) -> EstateDocs:
    """The exports of the simulated estate, as `az` prints them."""
    docs = EstateDocs()
    policy_sites = [s for s in all_sites if not s.classic]
    node_cidrs = [s.subnets["aks-nodes"] for s in all_sites]
    ip_groups = [{"id": _ipg_id("ipg-aks-nodes"), "name": "ipg-aks-nodes", "ipAddresses": node_cidrs,
                  "resourceGroup": RESOURCE_GROUP, "type": "Microsoft.Network/ipGroups"}]
    policies = [{"id": f"{NET}/firewallPolicies/{PARENT}", "name": PARENT, "basePolicy": None,
                 "childPolicies": [{"id": f"{NET}/firewallPolicies/{s.policy_name}"} for s in policy_sites],
                 "dnsSettings": DNS_SETTINGS, "firewalls": [], "resourceGroup": RESOURCE_GROUP,
                 "sku": {"tier": "Standard"}, "threatIntelMode": "Alert", "type": "Microsoft.Network/FirewallPolicies"}]
    firewalls = []
    base_groups = None
    for s in all_sites:
        sub = s.subnets
        groups = build_policy(node_cidr=sub["aks-nodes"], pod_cidr=sub["aks-pods"], vm_cidr=sub["vm-spoke"],
                              hot_fqdn="api.payments-example.com", firewall_public_ip=s.public_ip,
                              dnat_target=(f"10.{241 - s.octet}.0.10", 8443))
        pods_group = f"ipg-{s.region}-pods"
        ip_groups.append({"id": _ipg_id(pods_group), "name": pods_group, "ipAddresses": [sub["aks-pods"]],
                          "resourceGroup": RESOURCE_GROUP, "type": "Microsoft.Network/ipGroups"})
        groups = _with_ip_group(groups, sub["aks-pods"], pods_group)
        aks = [g for g in groups if g["name"] == "aks-egress"]
        own = [g for g in groups if g["name"] != "aks-egress"]
        fw: dict[str, Any] = {"id": s.arm_id, "name": s.name, "location": s.region, "resourceGroup": RESOURCE_GROUP,
                              "type": "Microsoft.Network/azureFirewalls", "sku": {"name": "AZFW_VNet", "tier": "Standard"},
                              "threatIntelMode": "Alert"}
        if s.classic:
            fw.update(_classic(_with_ip_group(aks, sub["aks-nodes"], "ipg-aks-nodes") + own))
            fw["additionalProperties"] = {"Network.DNS.EnableProxy": "true",
                                          "Network.DNS.RequireProxyForNetworkRules": "true"}
        else:
            if base_groups is None:  # the parent's platform rules, for every region's nodes at once
                base_groups = _with_ip_group(aks, sub["aks-nodes"], "ipg-aks-nodes")
                for g in base_groups:
                    for c in g["ruleCollections"]:
                        for r in c["rules"]:
                            r["sourceAddresses"] = [a for a in r["sourceAddresses"] if a not in node_cidrs]
            fw["firewallPolicy"] = {"id": f"{NET}/firewallPolicies/{s.policy_name}"}
            policies.append({"id": f"{NET}/firewallPolicies/{s.policy_name}", "name": s.policy_name,
                             "basePolicy": {"id": f"{NET}/firewallPolicies/{PARENT}"}, "childPolicies": [],
                             "dnsSettings": DNS_SETTINGS, "firewalls": [{"id": s.arm_id}],
                             "resourceGroup": RESOURCE_GROUP, "sku": {"tier": "Standard"}, "threatIntelMode": "Alert",
                             "type": "Microsoft.Network/FirewallPolicies"})
            docs.files[f"rcg-{s.policy_name}.json"] = _rcg_list(s.policy_name, own)
        firewalls.append(fw)
    docs.files[f"rcg-{PARENT}.json"] = _rcg_list(PARENT, base_groups or [])
    docs.files["policies.json"] = policies
    docs.files["ip-groups.json"] = ip_groups
    docs.files["firewalls.json"] = firewalls
    return docs


def build(n: int) -> tuple[list[Site], EstateDocs]:
    """The sites with the rules each evaluates, read back from the exports by EgressLens's own reader."""
    from egresslens.estate import parse_documents

    all_sites = sites(n)
    docs = estate_documents(all_sites)
    estate = parse_documents((name, doc) for name, doc in docs.files.items())
    for s in all_sites:
        s.rules = estate.rules_for_firewall(s.arm_id)
    return all_sites, docs


def simulate_estate_to_dir(out_dir: str | Path, firewalls: int, hours: int = 24, events_per_hour: int = 100_000,
                           seed: int = 7, fmt: str = "structured", layout: str = "storage",
                           start: datetime | None = None, hot_share: float = 0.35, incident: bool = False) -> dict[str, Any]:
    """Logs of every firewall (each under `<out>/logs/<firewall name>/`), the exports under `<out>/estate/`
    and `<out>/truth.json`."""
    from egresslens.simulate.render import FORMATS, LAYOUTS, write_hours
    from egresslens.simulate.scenario import (_naive_utc, _World, build_truth, check_args, default_start, iter_hours,
                                              used_rules)

    check_args(hours, events_per_hour, hot_share)
    if fmt not in FORMATS or layout not in LAYOUTS:
        raise ValueError(f"fmt must be one of {FORMATS} and layout one of {LAYOUTS}")
    start = _naive_utc(start) if start is not None else default_start(hours)
    out = Path(out_dir)
    all_sites, docs = build(firewalls)
    counts = {"flows": 0, "dns_queries": 0, "threats": 0}
    paths: list[Path] = []
    truths = []
    for s in all_sites:
        world = _World(seed + s.index, incident, site=s)
        used: set[tuple[str, str, str]] = set()

        def hours_iter(world=world, used=used):
            for h, flows, dns, threats in iter_hours(hours, max(1, events_per_hour // len(all_sites)), seed + world.site.index,
                                                     start, hot_share, world):
                counts["flows"] += flows.height
                counts["dns_queries"] += dns.height
                counts["threats"] += threats.height
                used.update(used_rules(flows))
                yield h, start + timedelta(hours=h), {"flows": flows, "dns_queries": dns, "threats": threats}

        files, _ = write_hours(hours_iter(), out / "logs" / s.name, seed=seed + s.index, fmt=fmt, layout=layout,
                               resource_id=s.resource_id)
        paths += files
        truth = build_truth(world, used, start, hours, hot_share)
        truth.update(name=s.name, region=s.region, classic=s.classic, policy_name=None if s.classic else s.policy_name,
                     parent_policy=None if s.classic else PARENT,
                     partner_fqdn=f"api.{s.region}.partner-example.com")
        truths.append(truth)
    est = out / "estate"
    est.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.files.items():
        atomic.write_text(est / name, json.dumps(doc, indent=2) + "\n")
        paths.append(est / name)
    tp = out / "truth.json"
    atomic.write_text(tp, json.dumps({"firewalls": truths, "parent_policy": PARENT,
                                      "start": truths[0]["start"], "end": truths[0]["end"]}, indent=2) + "\n")
    paths.append(tp)
    return {"counts": counts, "files": [str(p) for p in paths], "bytes": sum(p.stat().st_size for p in paths),
            "start": truths[0]["start"], "end": truths[0]["end"], "fmt": fmt, "layout": layout, "seed": seed,
            "firewalls": [s.name for s in all_sites]}
