"""Read an Azure Firewall's SNAT capacity inputs from its ARM resource (and an attached NAT Gateway).

Uses azure-core's pipeline directly (no azure-mgmt-network dependency): a `PipelineClient` with
`BearerTokenCredentialPolicy` (scope ``{arm}/.default``), a retry policy (GET is retried on 408,
429, 500, 502, 503 and 504, honouring ``Retry-After``) and azure-core's redacting logging policy,
so tokens never reach a log. Credentials default to azure-identity's ``DefaultAzureCredential``;
any object with ``get_token`` works (tests pass a fake one).

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

ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
API_VERSION = "2024-05-01"
DEFAULT_INSTANCES = 2

_FIREWALL_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9A-Za-z-]+)/resourceGroups/(?P<rg>[-\w.()]+)"
    r"/providers/Microsoft\.Network/azureFirewalls/(?P<name>[-\w.]+)/?$", re.IGNORECASE)
_SUB_RESOURCE_ID = re.compile(r"^/subscriptions/[^/?#]+/resourceGroups/[^/?#]+/providers/Microsoft\.Network/"
                              r"[A-Za-z]+/[^/?#]+(/subnets/[^/?#]+)?/?$", re.IGNORECASE)


class FirewallResourceError(Exception):
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


def scope_for(endpoint: str) -> str:
    """Token scope for an ARM endpoint (sovereign clouds use their own audience)."""
    if endpoint.startswith("https://"):
        return endpoint.rstrip("/") + "/.default"
    return ARM_SCOPE  # loopback stand-ins


class _Arm:
    def __init__(self, credential, endpoint: str, *, scope: str | None, retry_total: int,
                 retry_backoff_factor: float, timeout: float) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (BearerTokenCredentialPolicy, HeadersPolicy, HttpLoggingPolicy,
                                                  RetryPolicy, UserAgentPolicy)

        self.endpoint = endpoint.rstrip("/")
        self.insecure = self.endpoint.startswith("http://")
        policies = [
            HeadersPolicy({"Accept": "application/json"}),
            UserAgentPolicy(sdk_moniker="egresslens-firewall"),
            RetryPolicy(retry_total=retry_total, retry_backoff_factor=retry_backoff_factor, retry_backoff_max=30),
            BearerTokenCredentialPolicy(credential, scope or scope_for(self.endpoint)),
            HttpLoggingPolicy(),  # redacts Authorization
        ]
        self.client = PipelineClient(base_url=self.endpoint, policies=policies)
        self.timeout = timeout

    def close(self) -> None:
        self.client.close()

    def get(self, resource_id: str, what: str) -> dict[str, Any]:
        from azure.core.exceptions import (ClientAuthenticationError, ServiceRequestError, ServiceResponseError)

        from egresslens.sources.azure_errors import cause
        from azure.core.rest import HttpRequest

        if not _SUB_RESOURCE_ID.match(resource_id) and not _FIREWALL_ID.match(resource_id):
            raise FirewallResourceError(f"Unexpected {what} id {resource_id!r} in the ARM response.")
        req = HttpRequest("GET", f"{self.endpoint}{resource_id}", params={"api-version": API_VERSION})
        kwargs: dict[str, Any] = {"connection_timeout": self.timeout, "read_timeout": self.timeout}
        if self.insecure:
            kwargs["enforce_https"] = False
        try:
            resp = self.client.send_request(req, **kwargs)
        except ClientAuthenticationError as exc:
            raise FirewallResourceError(
                "No usable Azure credential to read the firewall: sign in with `az login`, or set AZURE_TENANT_ID, "
                f"AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or use a managed / workload identity) ({cause(exc)}).") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise FirewallResourceError(
                f"Azure Resource Manager at {self.endpoint} did not answer reading the {what} "
                f"({cause(exc)}); check --arm-endpoint and the network, or pass --public-ips/--instances.") from None
        status = resp.status_code
        if status in (401, 403):
            raise FirewallResourceError(
                f"Azure Resource Manager refused to read the {what} ({status}): the signed-in identity needs the "
                f"Reader role on it (or its resource group){' and a fresh sign-in (az login)' if status == 401 else ''}.")
        if status == 404:
            raise FirewallResourceError(f"The {what} {resource_id} was not found (404): check the id, the subscription "
                                        "and --arm-endpoint for sovereign clouds.")
        if status >= 400:
            raise FirewallResourceError(f"Azure Resource Manager answered {status} reading the {what} {resource_id}"
                                        f"{_arm_message(resp)}.")
        try:
            doc = resp.json()
        except ValueError:
            raise FirewallResourceError(f"Azure Resource Manager returned no JSON for the {what} {resource_id}.") from None
        if not isinstance(doc, dict):
            raise FirewallResourceError(f"Azure Resource Manager returned an unexpected body for the {what}.")
        return doc


def _arm_message(resp) -> str:
    try:
        err = resp.json().get("error") or {}
        msg = err.get("message") or err.get("code")
        return f": {str(msg).splitlines()[0]}" if msg else ""
    except Exception:
        return ""


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
    if credential is None:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:  # pragma: no cover - azure-identity is a dependency
            raise FirewallResourceError("azure-identity is not installed: pip install azure-identity.") from None
        credential = DefaultAzureCredential()
    arm = _Arm(credential, endpoint, scope=scope, retry_total=retry_total,
               retry_backoff_factor=retry_backoff_factor, timeout=timeout)
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
