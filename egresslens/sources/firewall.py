"""Read an Azure Firewall's SNAT capacity inputs from its ARM resource (and an attached NAT Gateway).

Reads through :class:`egresslens.sources.arm.ArmClient`, the ARM client every read shares (auth,
sovereign clouds, retries on 429 with ``Retry-After``, one-sentence errors).

What is read (api-version 2024-05-01):

* public IPs = ``properties.ipConfigurations`` that carry a ``publicIPAddress`` (one public IP
  each) plus ``properties.hubIPAddresses.publicIPs.count`` on a Virtual WAN secured hub. The
  ``managementIpConfiguration`` (forced tunnelling, Basic SKU) carries no user traffic and is not
  counted.
* instances = ``properties.autoscaleConfiguration.minCapacity`` when set, else 2: Azure Firewall
  runs at least two backend instances and scales out only under load, so the minimum is the
  capacity you can count on (a conservative estimate).
* NAT Gateway: the subnet of the first ip configuration (``AzureFirewallSubnet``) is read; when it
  has ``properties.natGateway`` the gateway is read and its public IPs counted: each
  ``publicIpAddresses`` entry is one IP, each ``publicIpPrefixes`` entry is read for its
  ``prefixLength`` (a /28 is 16 IPs).

Errors become :class:`FirewallResourceError` with one sentence (no token, no traceback).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from egresslens.sources.arm import API_VERSION, ARM_ENDPOINT, ARM_SCOPE, ArmClient, ArmError, scope_for  # noqa: F401

DEFAULT_INSTANCES = 2

_FIREWALL_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9A-Za-z-]+)/resourceGroups/(?P<rg>[-\w.()]+)"
    r"/providers/Microsoft\.Network/azureFirewalls/(?P<name>[-\w.]+)/?$", re.IGNORECASE)


class FirewallResourceError(ArmError):
    """Reading the firewall (or its NAT Gateway) failed; the message is one sentence for the user."""


@dataclass
class FirewallCapacity:
    firewall_id: str
    public_ips: int  # IPs that SNAT through the firewall itself
    public_ips_detail: str
    instances: int
    instances_detail: str
    nat_gateway_id: str | None = None
    nat_gateway_ips: int = 0
    nat_gateway_detail: str = "no NAT Gateway on the firewall subnet"
    sku: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_firewall_id(firewall_id: str) -> tuple[str, str, str]:
    """(subscription, resource group, name) of an ``.../azureFirewalls/NAME`` id; ValueError otherwise."""
    m = _FIREWALL_ID.match(firewall_id.strip())
    if not m:
        raise ValueError("--firewall-id must look like /subscriptions/SUB/resourceGroups/RG/providers/"
                         f"Microsoft.Network/azureFirewalls/NAME, got {firewall_id!r}")
    return m["sub"], m["rg"], m["name"]


def _props(doc: dict[str, Any]) -> dict[str, Any]:
    p = doc.get("properties")
    return p if isinstance(p, dict) else {}


def read_firewall(firewall_id: str, *, credential=None, endpoint: str = ARM_ENDPOINT, scope: str | None = None,
                  check_nat_gateway: bool = True, retry_total: int = 3, retry_backoff_factor: float = 0.8,
                  timeout: float = 30.0) -> FirewallCapacity:
    """Public IPs, instances and NAT Gateway IPs of one firewall, each with where it came from.

    ``credential``: any azure-core token credential; default ``DefaultAzureCredential()``."""
    parse_firewall_id(firewall_id)  # ValueError for a malformed id
    fw_id = firewall_id.strip().rstrip("/")
    arm = ArmClient(credential, endpoint, scope=scope, retry_total=retry_total, retry_backoff_factor=retry_backoff_factor,
                    timeout=timeout, error=FirewallResourceError, hint=", or pass --public-ips/--instances",
                    sdk_moniker="egresslens-firewall")
    try:
        fw = arm.get(fw_id, "firewall")
        p = _props(fw)
        notes: list[str] = []
        configs = [c for c in (p.get("ipConfigurations") or []) if isinstance(c, dict)]
        with_ip = [c for c in configs if (_props(c).get("publicIPAddress") or {}).get("id")]
        hub = (((p.get("hubIPAddresses") or {}).get("publicIPs") or {}).get("count"))
        hub_n = int(hub) if isinstance(hub, (int, float, str)) and str(hub).isdigit() else 0
        n_ips = len(with_ip) + hub_n
        parts = [f"{len(with_ip)} ipConfigurations with a public IP"]
        if hub_n:
            parts.append(f"{hub_n} secured-hub public IPs (hubIPAddresses.publicIPs.count)")
        ip_detail = " + ".join(parts)
        if p.get("managementIpConfiguration"):
            notes.append("The management IP configuration (forced tunnelling) carries no user traffic: not counted.")

        auto = p.get("autoscaleConfiguration") or {}
        min_cap = auto.get("minCapacity") if isinstance(auto, dict) else None
        if isinstance(min_cap, int) and min_cap >= DEFAULT_INSTANCES:
            instances, inst_detail = min_cap, "autoscaleConfiguration.minCapacity"
        else:
            instances = DEFAULT_INSTANCES
            inst_detail = ("default 2: autoscaleConfiguration.minCapacity not set, and Azure Firewall runs at least "
                           "two instances (it scales out only under load, so the minimum is what you can count on)")
        sku = ((p.get("sku") or {}).get("tier")) if isinstance(p.get("sku"), dict) else None
        cap = FirewallCapacity(fw_id, n_ips, ip_detail, instances, inst_detail, sku=sku, notes=notes)

        if check_nat_gateway:
            subnets = []
            for c in configs:
                sid = ((_props(c).get("subnet") or {}).get("id"))
                if sid and sid.lower() not in {s.lower() for s in subnets}:
                    subnets.append(sid)
            for sid in subnets:
                ng = (_props(arm.get(sid, "firewall subnet")).get("natGateway") or {}).get("id")
                if not ng:
                    continue
                gw = _props(arm.get(ng, "NAT Gateway"))
                ips = [x for x in (gw.get("publicIpAddresses") or []) if isinstance(x, dict) and x.get("id")]
                prefixes = [x["id"] for x in (gw.get("publicIpPrefixes") or []) if isinstance(x, dict) and x.get("id")]
                from_prefixes = 0
                for pid in prefixes:
                    length = _props(arm.get(pid, "public IP prefix")).get("prefixLength")
                    if not isinstance(length, int):
                        raise FirewallResourceError(f"The public IP prefix {pid} has no prefixLength; "
                                                    "pass --nat-gateway-ips.")
                    from_prefixes += 2 ** ((32 if length <= 32 else 128) - length)
                total = len(ips) + from_prefixes
                detail = f"NAT Gateway {ng.rstrip('/').rsplit('/', 1)[-1]}: {len(ips)} public IPs"
                if prefixes:
                    detail += f" + {from_prefixes} from {len(prefixes)} prefix(es)"
                cap.nat_gateway_id, cap.nat_gateway_ips, cap.nat_gateway_detail = ng, total, detail
                break
        else:
            cap.nat_gateway_detail = "not read (given explicitly)"
        return cap
    finally:
        arm.close()
