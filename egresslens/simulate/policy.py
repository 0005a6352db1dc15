"""The simulated firewall policy and an evaluator that decides Allow/Deny the way Azure Firewall does.

The simulator never hard-codes which flow is allowed: every (source, destination) pair is run
through :func:`evaluate` against the policy that is also written as ``policy.json``, so the rule
names in the logs always agree with the policy (DNAT, then network, then application rules; RCG
priority, then collection priority, then rule order; first match wins; default deny).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from egresslens.recommend.wildcards import fqdn_matches  # one definition of Azure's wildcard semantics

POLICY_NAME = "fw-policy"

# Members of the Microsoft-managed FQDN tag, as the simulator models it (see aks-egress.md).
FQDN_TAGS: dict[str, tuple[str, ...]] = {
    "AzureKubernetesService": (
        "*.hcp.westeurope.azmk8s.io",
        "mcr.microsoft.com",
        "*.data.mcr.microsoft.com",
        "mcr-0001.mcr-msedge.net",
        "management.azure.com",
        "login.microsoftonline.com",
        "packages.microsoft.com",
        "acs-mirror.azureedge.net",
        "packages.aks.azure.com",
    ),
}


@dataclass(frozen=True)
class Verdict:
    """Outcome of rule processing for one flow."""

    action: str  # Allow | Deny | DNAT
    action_reason: str | None
    policy: str | None
    rule_collection_group: str | None
    rule_collection: str | None
    rule: str | None


DEFAULT_DENY = Verdict("Deny", "Default Action", None, None, None, None)


def build_policy(
    *,
    node_cidr: str,
    pod_cidr: str,
    vm_cidr: str,
    hot_fqdn: str,
    firewall_public_ip: str,
    dnat_target: tuple[str, int],
    required_ntp: bool = False,
) -> list[dict[str, Any]]:
    """The firewall policy as ``az network firewall policy rule-collection-group list`` prints it.
    `required_ntp`: `aksfwnr` also holds the required NTP rule (UDP 123 to the region's AzureCloud tag),
    which the nodes' traffic never matches (they reach Ubuntu's NTP servers)."""

    def app_rule(name, sources, fqdns=(), tags=(), protocols=(("Https", 443),), web_categories=()):
        return {
            "ruleType": "ApplicationRule",
            "name": name,
            "description": None,
            "sourceAddresses": list(sources),
            "sourceIpGroups": [],
            "protocols": [{"protocolType": p, "port": port} for p, port in protocols],
            "targetFqdns": list(fqdns),
            "targetUrls": [],
            "fqdnTags": list(tags),
            "webCategories": list(web_categories),
            "terminateTLS": False,
            "destinationAddresses": [],
            "httpHeadersToInsert": [],
        }

    def net_rule(name, protocols, sources, ports, addresses=(), fqdns=()):
        return {
            "ruleType": "NetworkRule",
            "name": name,
            "description": None,
            "ipProtocols": list(protocols),
            "sourceAddresses": list(sources),
            "sourceIpGroups": [],
            "destinationAddresses": list(addresses),
            "destinationIpGroups": [],
            "destinationFqdns": list(fqdns),
            "destinationPorts": list(ports),
        }

    def filt(name, priority, rules, action="Allow"):
        return {
            "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
            "name": name,
            "priority": priority,
            "action": {"type": action},
            "rules": rules,
        }

    def rcg(name, priority, collections):
        return {
            "name": name,
            "priority": priority,
            "provisioningState": "Succeeded",
            "ruleCollections": collections,
        }

    dnat_ip, dnat_port = dnat_target
    return [
        rcg(
            "dnat-inbound",
            100,
            [
                {
                    "ruleCollectionType": "FirewallPolicyNatRuleCollection",
                    "name": "inbound-web",
                    "priority": 100,
                    "action": {"type": "DNAT"},
                    "rules": [
                        {
                            "ruleType": "NatRule",
                            "name": "web-to-appgw",
                            "description": None,
                            "ipProtocols": ["TCP"],
                            "sourceAddresses": ["*"],
                            "sourceIpGroups": [],
                            "destinationAddresses": [firewall_public_ip],
                            "destinationPorts": ["443"],
                            "translatedAddress": dnat_ip,
                            "translatedFqdn": None,
                            "translatedPort": str(dnat_port),
                        }
                    ],
                }
            ],
        ),
        rcg(
            "aks-egress",
            200,
            [
                filt(
                    "aksfwnr",
                    100,
                    [
                        net_rule("apiudp", ["UDP"], [node_cidr], ["1194"], addresses=["AzureCloud.westeurope"]),
                        net_rule("apitcp", ["TCP"], [node_cidr], ["9000"], addresses=["AzureCloud.westeurope"]),
                        net_rule("allow-icmp-hub", ["ICMP"], [node_cidr, vm_cidr], ["*"], addresses=["10.0.0.0/16"]),
                    ] + ([net_rule("apintp", ["UDP"], [node_cidr], ["123"], addresses=["AzureCloud.westeurope"])]
                         if required_ntp else []),
                ),
                filt(
                    "aksfwar",
                    200,
                    [
                        app_rule(
                            "allow-aks-fqdn-tag",
                            [node_cidr],
                            tags=["AzureKubernetesService"],
                            protocols=(("Http", 80), ("Https", 443)),
                        )
                    ],
                ),
            ],
        ),
        rcg(
            "app-egress",
            300,
            [
                filt(
                    "legacy-network",
                    100,
                    [
                        # Kept for a mail relay that was decommissioned: no traffic matches any more.
                        net_rule("allow-smtp-relay", ["TCP"], [vm_cidr], ["25"], addresses=["198.51.100.25"]),
                    ],
                ),
                filt(
                    "workload-apps",
                    200,
                    [
                        app_rule("allow-api-github", ["*"], fqdns=["api.github.com"]),
                        app_rule("allow-github-wildcard", [pod_cidr], fqdns=["*.github.com"]),
                        app_rule("allow-payments-api", [pod_cidr], fqdns=[hot_fqdn]),
                        app_rule("allow-legacy-ftp-mirror", [vm_cidr], fqdns=["mirror.legacy-example.org"],
                                 protocols=(("Http", 80), ("Https", 443))),
                    ],
                ),
            ],
        ),
    ]


def _in(ip: str, prefixes: list[str], service_tags: dict[str, list[str]]) -> bool:
    addr = ipaddress.ip_address(ip)
    for p in prefixes:
        if p == "*":
            return True
        for q in service_tags.get(p, [p]):
            if "/" in q and addr in ipaddress.ip_network(q, strict=False):
                return True
            if "/" not in q and q == ip:
                return True
    return False


def _port_ok(port: int | None, ports: list[str]) -> bool:
    for p in ports:
        if p == "*":
            return True
        if port is None:
            continue
        if "-" in p:
            lo, hi = p.split("-")
            if int(lo) <= port <= int(hi):
                return True
        elif int(p) == port:
            return True
    return False


def evaluate(
    policy: list[dict[str, Any]],
    *,
    kind: str,
    protocol: str,
    source_ip: str,
    destination_port: int | None,
    destination_ip: str | None = None,
    destination_fqdn: str | None = None,
    service_tags: dict[str, list[str]] | None = None,
    dns: dict[str, list[str]] | None = None,
) -> Verdict:
    """Decide one flow. Network rules are tried before application rules; DNAT is not evaluated."""
    tags = service_tags or {}
    dns = dns or {}
    groups = sorted(policy, key=lambda g: g["priority"])

    def ordered(rule_type):
        for g in groups:
            for c in sorted(g["ruleCollections"], key=lambda c: c["priority"]):
                if c["ruleCollectionType"] != "FirewallPolicyFilterRuleCollection":
                    continue
                for r in c["rules"]:
                    if r["ruleType"] == rule_type:
                        yield g, c, r

    def verdict(g, c, r):
        action = c["action"]["type"]
        return Verdict(action, None, POLICY_NAME, g["name"], c["name"], r["name"])

    dst_ips = [destination_ip] if destination_ip else dns.get(destination_fqdn or "", [])
    for g, c, r in ordered("NetworkRule"):
        if protocol not in r["ipProtocols"] and "Any" not in r["ipProtocols"]:
            if not (protocol in ("HTTP", "HTTPS") and "TCP" in r["ipProtocols"]):
                continue
        if not _in(source_ip, r["sourceAddresses"], {}):
            continue
        if protocol != "ICMP" and not _port_ok(destination_port, r["destinationPorts"]):
            continue
        targets = list(r["destinationAddresses"])
        for name in r.get("destinationFqdns", []):
            targets.extend(dns.get(name.lower(), []))
        if any(_in(ip, targets, tags) for ip in dst_ips):
            return verdict(g, c, r)

    if kind != "application" or destination_fqdn is None:
        return DEFAULT_DENY
    for g, c, r in ordered("ApplicationRule"):
        if not any(p["protocolType"].upper() == protocol and p["port"] == destination_port for p in r["protocols"]):
            continue
        if not _in(source_ip, r["sourceAddresses"], {}):
            continue
        patterns = list(r["targetFqdns"])
        for t in r["fqdnTags"]:
            patterns.extend(FQDN_TAGS.get(t, ()))
        if any(fqdn_matches(destination_fqdn, p) for p in patterns):
            return verdict(g, c, r)
    return DEFAULT_DENY


def rule_names(policy: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(rule collection group, rule collection, rule) for every rule in the policy."""
    return [
        (g["name"], c["name"], r["name"])
        for g in policy
        for c in g["ruleCollections"]
        for r in c["rules"]
    ]
