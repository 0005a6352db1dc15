"""Your estate read from Azure, read-only: `--firewall-id` (the firewall, then its policy or its
classic rules) and `--policy-id` (a policy), each policy's parent chain, every rule collection group
(following `nextLink`) and every IP Group the rules reference. Needs the Reader role on the
firewalls, policies and IP Groups; nothing is ever written to Azure.

The documents Azure returns go through the same reader as exports (:mod:`egresslens.estate.parse`),
so a read from Azure and an export of the same policy give the same rules.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from egresslens.estate.model import Estate, MAX_PARENT_DEPTH, last_segment, resource_key
from egresslens.estate.parse import parse_documents
from egresslens.estate.rules import MAX_RULES, classic_group, objects, props
from egresslens.sources.arm import ARM_ENDPOINT, ArmClient, ArmError, is_resource_path

_FIREWALL = re.compile(r"/providers/Microsoft\.Network/azureFirewalls/[^/]+/?$", re.IGNORECASE)
_POLICY = re.compile(r"/providers/Microsoft\.Network/firewallPolicies/[^/]+/?$", re.IGNORECASE)
MAX_IP_GROUPS = 1000  # Azure allows 200 per firewall; more references than this is not a real policy


def check_ids(firewall_ids: Iterable[str] = (), policy_ids: Iterable[str] = ()) -> None:
    """ValueError (a usage error) for an id that is not a firewall's or a policy's."""
    for fid in firewall_ids:
        if not (is_resource_path(fid.strip()) and _FIREWALL.search(fid.strip())):
            raise ValueError("--firewall-id must look like /subscriptions/SUB/resourceGroups/RG/providers/"
                             f"Microsoft.Network/azureFirewalls/NAME, got {fid!r}")
    for pid in policy_ids:
        if not (is_resource_path(pid.strip()) and _POLICY.search(pid.strip())):
            raise ValueError("--policy-id must look like /subscriptions/SUB/resourceGroups/RG/providers/"
                             f"Microsoft.Network/firewallPolicies/NAME, got {pid!r}")


def _ip_group_refs(groups: list[dict[str, Any]]) -> set[str]:
    refs: set[str] = set()
    for g in groups:
        for c in objects(props(g).get("ruleCollections"), "ruleCollections"):
            for r in objects(props(c).get("rules"), "rules"):
                r = props(r)
                for key in ("sourceIpGroups", "destinationIpGroups"):
                    v = r.get(key)
                    refs.update(str(x) for x in (v if isinstance(v, list) else []))
    return refs


def read_estate(firewall_ids: Iterable[str] = (), policy_ids: Iterable[str] = (), *, credential=None,
                endpoint: str = ARM_ENDPOINT, scope: str | None = None, retry_total: int = 3,
                retry_backoff_factor: float = 0.8, timeout: float = 30.0, client: ArmClient | None = None) -> Estate:
    """Read firewalls and policies (with parents, rule collection groups and IP Groups) from ARM.
    ArmError with one sentence on any failure, PolicyError when what Azure returned is unreadable."""
    firewall_ids, policy_ids = [f.strip().rstrip("/") for f in firewall_ids], [p.strip().rstrip("/") for p in policy_ids]
    check_ids(firewall_ids, policy_ids)
    arm = client or ArmClient(credential, endpoint, scope=scope, retry_total=retry_total,
                              retry_backoff_factor=retry_backoff_factor, timeout=timeout,
                              hint=", or give the policy as exports with --policy FILE", sdk_moniker="egresslens-estate")
    docs: list[tuple[str, Any]] = []
    try:
        queue: list[str] = list(policy_ids)
        groups_seen: list[dict[str, Any]] = []
        for fid in firewall_ids:
            fw = arm.get(fid, "firewall")
            docs.append((f"azure:{fid}", fw))
            pol = props(fw).get("firewallPolicy")
            if isinstance(pol, dict) and pol.get("id"):
                queue.append(str(pol["id"]).rstrip("/"))
            classic = classic_group(fw)
            if classic:
                groups_seen.append(classic)
        done: set[str] = set()
        levels = 0
        while queue:
            pid = queue.pop(0)
            if resource_key(pid) in done:
                continue
            done.add(resource_key(pid) or pid)
            levels += 1
            if levels > MAX_PARENT_DEPTH * max(1, len(policy_ids) + len(firewall_ids)):
                raise ArmError("the policies' parent chains are longer than any Azure allows: stopped reading.")
            policy = arm.get(pid, "firewall policy")
            docs.append((f"azure:{pid}", policy))
            groups = list(arm.list(f"{pid}/ruleCollectionGroups", "rule collection groups"))
            if len(groups) > MAX_RULES:
                raise ArmError(f"the policy {last_segment(pid)} lists more than {MAX_RULES:,} rule collection groups: stopped.")
            docs.append((f"azure:{pid}/ruleCollectionGroups", {"value": groups}))
            groups_seen += groups
            base = props(policy).get("basePolicy")
            if isinstance(base, dict) and base.get("id"):
                queue.append(str(base["id"]).rstrip("/"))
        refs = sorted(_ip_group_refs(groups_seen))
        if len(refs) > MAX_IP_GROUPS:
            raise ArmError(f"the rules reference {len(refs):,} IP Groups, more than Azure allows: stopped.")
        ip_groups, skipped, missing = [], [], []
        for ref in refs:
            if not is_resource_path(ref):
                skipped.append(ref)
                continue
            try:
                ip_groups.append(arm.get(ref, "IP Group"))
            except ArmError as exc:
                if exc.status != 404:
                    raise
                missing.append(ref)
        if ip_groups:
            docs.append(("azure:ipGroups", {"value": ip_groups}))
    finally:
        if client is None:
            arm.close()
    estate = parse_documents(docs)
    for ref in skipped:
        estate.warn(f"the IP Group reference {ref!r} is not a resource id: not read")
    for ref in missing:
        estate.warn(f"the IP Group {last_segment(ref)} that rules reference was not found in Azure (404)")
    return estate
