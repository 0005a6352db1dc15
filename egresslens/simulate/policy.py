"""The simulated firewall policy and an evaluator that decides Allow/Deny the way Azure Firewall does.

The simulator never hard-codes which flow is allowed: every (source, destination) pair is run
through :func:`evaluate` (EgressLens's own evaluator) against the policy that is also written as
``policy.json``, so the rule names in the logs always agree with the policy (DNAT, then network, then
application rules; RCG priority, then collection priority, then rule order; first match wins;
default deny).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from egresslens.recommend.wildcards import fqdn_matches  # noqa: F401 - re-exported: Azure's wildcard semantics
from egresslens.simulate.batch import BATCH_RULE

POLICY_NAME = "fw-policy"

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
    batch_fqdn: str | None = None,
) -> list[dict[str, Any]]:
    """The firewall policy as ``az network firewall policy rule-collection-group list`` prints it.
    `required_ntp`: `aksfwnr` also holds the required NTP rule (UDP 123 to the region's AzureCloud tag),
    which the nodes' traffic never matches (they reach Ubuntu's NTP servers). `batch_fqdn`: the VM spoke
    may reach this storage account (its nightly backup, egresslens.simulate.batch)."""

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
                    ] + ([app_rule(BATCH_RULE, [vm_cidr], fqdns=[batch_fqdn])] if batch_fqdn else []),
                ),
            ],
        ),
    ]


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
    rules=None,
) -> Verdict:
    """Decide one flow with the one evaluator EgressLens has (:func:`egresslens.recommend.policy.evaluate`).
    `rules`: the policy already read (a RuleSet), to skip reading it per flow; `dns`: name -> addresses."""
    from egresslens.estate import parse_policy
    from egresslens.recommend.policy import Flow
    from egresslens.recommend.policy import evaluate as first_match

    rules = rules if rules is not None else parse_policy(policy)
    by_ip: dict[str, set[str]] = {}
    for name, ips in (dns or {}).items():
        for ip in ips:
            by_ip.setdefault(ip, set()).add(name)
    r = first_match(rules, Flow(kind, protocol, source_ip, destination_port, destination_ip, destination_fqdn),
                    service_tags=service_tags or {}, dns=by_ip)
    if r is None:
        return DEFAULT_DENY
    own = getattr(rules, "policy", None)
    named = own is not None and not own.key.startswith("file:")  # an export without ids names no policy
    name = r.policy if named else (None if getattr(rules, "classic", False) else POLICY_NAME)
    return Verdict(r.action, None, name, r.rule_collection_group or None, r.rule_collection, r.name)


def rule_names(policy: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(rule collection group, rule collection, rule) for every rule in the policy."""
    return [
        (g["name"], c["name"], r["name"])
        for g in policy
        for c in g["ruleCollections"]
        for r in c["rules"]
    ]
