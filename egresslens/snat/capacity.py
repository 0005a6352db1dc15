"""SNAT port capacity: the model. Per-destination demand estimated from connection logs (`analyse`)
is compared with the ports the firewall (or an attached NAT Gateway) can hand out.

Model (documented in README.md, "SNAT capacity"):

* capacity for one destination = ports per public IP (2,496) x public IPs that contribute ports x
  backend instances (at least 2). Which public IPs contribute is a setting: ``all`` (NAT Gateway
  integration page: 2,496 x up to 250 IPs) or ``first-five`` (firewall metrics page: "SNAT ports are
  currently added only for the first five public IP addresses"). Every result prints the rule.
  With a NAT Gateway attached: 64,512 ports x its public IPs (up to 16).
* ports are reusable across *different* destinations, so demand is counted per destination
  (IP or FQDN, port, protocol) and compared with the full capacity.
* demand = connections started per minute x hold time (default the 4-minute idle timeout): each
  allowed flow is assumed to hold one port for the whole hold time (conservative; Azure Firewall
  documents no reuse rule). Computed as a rolling sum of per-minute connection counts.
* application-rule traffic is always SNAT-ed; network-rule traffic to RFC 1918 (configurable
  ``no_snat_ranges``) never is; DNAT and ICMP flows use no SNAT ports and are ignored; denied flows
  never leave.
* application flows carry no destination IP: their destination key is the FQDN.

Raw `flows` give true per-minute rates. Hours only present as hourly rollups (`flow_rollups`) are
spread evenly over their 60 minutes; the result says so in ``rate_basis`` and ``notes``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egresslens.analyse import parse_duration

# --- facts (sources in README.md, "SNAT capacity") -----------------------------------------------------
PORTS_PER_PUBLIC_IP = 2_496  # Azure Firewall, per public IP per backend instance
MIN_INSTANCES = 2
MAX_PUBLIC_IPS = 250
FIRST_FIVE_LIMIT = 5
NAT_GATEWAY_PORTS_PER_IP = 64_512
NAT_GATEWAY_MAX_IPS = 16
DEFAULT_HOLD_TIME_S = 240.0  # north-south idle timeout, 4 minutes
MAX_HOLD_TIME_S = 86_400.0  # a day: a longer hold time is a typo, and overflows the minute arithmetic
DEFAULT_WARNING = 0.80  # Azure Monitor baseline alert: SNATPortUtilization > 80 %
DEFAULT_CRITICAL = 0.95  # above 95 % FirewallHealth reports Degraded ("SNAT port")
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
PORT_RULES = ("all", "first-five")

# Azure PaaS public endpoints a private endpoint can replace (destination name suffixes).
PAAS_ENDPOINTS: tuple[tuple[str, str], ...] = (
    (r"\.(blob|file|queue|table|dfs|web)\.core\.windows\.net$", "Azure Storage"),
    (r"\.blob\.storage\.azure\.net$", "Azure Storage"),
    (r"\.(vault|vaultcore)\.azure\.net$", "Azure Key Vault"),
    (r"\.database\.windows\.net$", "Azure SQL"),
    (r"\.azurecr\.io$", "Azure Container Registry"),
)


def paas_service(destination: str | None) -> str | None:
    """The Azure PaaS service a destination name belongs to (storage, Key Vault, SQL, ACR), if any."""
    if not destination:
        return None
    name = destination.lower().rstrip(".")
    for pattern, service in PAAS_ENDPOINTS:
        if re.search(pattern, name):
            return service
    return None


@dataclass(frozen=True)
class SnatConfig:
    """Capacity and alerting settings. Fractions are 0..1 (a TOML value above 1 is read as percent)."""

    public_ips: int = 1
    instances: int = MIN_INSTANCES
    nat_gateway_ips: int = 0  # > 0: a NAT Gateway on AzureFirewallSubnet does the SNAT
    hold_time_s: float = DEFAULT_HOLD_TIME_S
    port_rule: str = "all"  # "all" public IPs add ports, or only the "first-five"
    warning: float = DEFAULT_WARNING
    critical: float = DEFAULT_CRITICAL
    target: float | None = None  # utilisation a fix must bring the peak under; default = warning
    no_snat_ranges: tuple[str, ...] = RFC1918
    trend_minutes: int = 15
    top_sources: int = 5
    nat_gateway_ports_per_ip: int = NAT_GATEWAY_PORTS_PER_IP

    def __post_init__(self) -> None:
        if self.port_rule not in PORT_RULES:
            raise ValueError(f"port_rule must be one of {PORT_RULES}, got {self.port_rule!r}")
        if self.public_ips < 1 or self.public_ips > MAX_PUBLIC_IPS:
            raise ValueError(f"public_ips must be 1..{MAX_PUBLIC_IPS}, got {self.public_ips}")
        if self.instances < MIN_INSTANCES:
            raise ValueError(f"instances must be at least {MIN_INSTANCES} (Azure Firewall never runs fewer)")
        if not 0 <= self.nat_gateway_ips <= NAT_GATEWAY_MAX_IPS:
            raise ValueError(f"nat_gateway_ips must be 0..{NAT_GATEWAY_MAX_IPS}")
        if not 0 < self.hold_time_s <= MAX_HOLD_TIME_S:
            raise ValueError(f"hold_time must be more than 0 and at most {MAX_HOLD_TIME_S:,.0f} s (a day), "
                             f"not {self.hold_time_s:g} s")
        if not 0 < self.warning <= self.critical <= 1.5:
            raise ValueError("thresholds must satisfy 0 < warning <= critical")
        if self.target is not None and not 0 < self.target <= 1:
            raise ValueError("target must be in (0, 1]")
        for cidr in self.no_snat_ranges:
            ipaddress.ip_network(cidr, strict=False)

    @property
    def effective_target(self) -> float:
        return self.target if self.target is not None else self.warning

    @property
    def uses_nat_gateway(self) -> bool:
        return self.nat_gateway_ips > 0

    def contributing_ips(self, public_ips: int | None = None) -> int:
        n = self.public_ips if public_ips is None else public_ips
        return min(n, FIRST_FIVE_LIMIT) if self.port_rule == "first-five" else n

    def capacity(self, public_ips: int | None = None, nat_gateway_ips: int | None = None) -> int:
        """SNAT ports available to one destination."""
        ng = self.nat_gateway_ips if nat_gateway_ips is None else nat_gateway_ips
        if ng > 0:
            return self.nat_gateway_ports_per_ip * ng
        return PORTS_PER_PUBLIC_IP * self.contributing_ips(public_ips) * self.instances

    def describe(self) -> str:
        if self.uses_nat_gateway:
            return (f"NAT Gateway: {self.nat_gateway_ips} public IP(s) x {self.nat_gateway_ports_per_ip:,} ports "
                    f"= {self.capacity():,} ports per destination")
        rule = ("all public IPs contribute ports" if self.port_rule == "all"
                else "only the first five public IPs contribute ports")
        return (f"Azure Firewall: {self.contributing_ips()} of {self.public_ips} public IP(s) x "
                f"{PORTS_PER_PUBLIC_IP:,} ports x {self.instances} instances = {self.capacity():,} ports per destination "
                f"(per-IP rule '{self.port_rule}': {rule})")


def load_config(path: str | Path | None = None, **overrides: Any) -> SnatConfig:
    """Settings from a TOML file (top level or a ``[snat]`` table), then non-None ``overrides``.

    Keys: public_ips, instances, nat_gateway_ips, hold_time (seconds or "4m"), port_rule
    ("all" / "first-five"), no_snat_ranges, trend_minutes, top_sources, and thresholds either flat
    (warning, critical, target) or in a ``[thresholds]`` / ``[snat.thresholds]`` table.
    """
    values = config_file_values(path)
    for key, v in overrides.items():
        if v is not None:
            values[key] = v
    return SnatConfig(**values)


def config_file_values(path: str | Path | None) -> dict[str, Any]:
    """The settings a TOML file sets (SnatConfig field names), without defaults; see :func:`load_config`."""
    values: dict[str, Any] = {}
    if path is not None:
        data = tomllib.loads(Path(path).read_text())
        data = data.get("snat", data)
        thresholds = data.get("thresholds", {})
        for key in ("public_ips", "instances", "nat_gateway_ips", "trend_minutes", "top_sources",
                    "nat_gateway_ports_per_ip"):
            if key in data:
                values[key] = int(data[key])
        if "port_rule" in data or "ip_rule" in data:
            values["port_rule"] = str(data.get("port_rule", data.get("ip_rule"))).replace("_", "-").lower()
        hold = data.get("hold_time", data.get("hold_time_s"))
        if hold is not None:
            values["hold_time_s"] = seconds(hold)
        if "no_snat_ranges" in data:
            values["no_snat_ranges"] = tuple(data["no_snat_ranges"])
        for key in ("warning", "critical", "target"):
            v = thresholds.get(key, data.get(key))
            if v is not None:
                values[key] = _fraction(v)
    return values


def seconds(value: Any) -> float:
    """Seconds from a number, `90`, `90s`, or a duration (`4m`); ValueError past a day (MAX_HOLD_TIME_S)."""
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = str(value).strip().lower()
        if text.removesuffix("s").replace(".", "", 1).isdigit():
            out = float(text.removesuffix("s"))
        else:
            out = parse_duration(text).total_seconds()
    if not 0 < out <= MAX_HOLD_TIME_S:  # NaN and infinities fail this too
        raise ValueError(f"a hold time must be more than 0 and at most {MAX_HOLD_TIME_S:,.0f} s (a day), not {value!r}")
    return out


def _fraction(value: Any) -> float:
    v = float(str(value).rstrip("%"))
    return v / 100 if v > 1.5 else v


def ips_needed(peak_ports: float, config: SnatConfig) -> int | None:
    """Smallest public IP count (on the firewall) that brings `peak_ports` under the target, or None
    when no count within the limit (250, or five under the first-five rule) does."""
    target = config.effective_target
    limit = FIRST_FIVE_LIMIT if config.port_rule == "first-five" else MAX_PUBLIC_IPS
    per_ip = PORTS_PER_PUBLIC_IP * config.instances
    n = max(1, math.ceil(peak_ports / (target * per_ip)))
    while n <= limit and peak_ports / (per_ip * n) >= target:
        n += 1
    return n if n <= limit else None


def nat_gateway_ips_needed(peak_ports: float, config: SnatConfig) -> int | None:
    target = config.effective_target
    per_ip = config.nat_gateway_ports_per_ip
    n = max(1, math.ceil(peak_ports / (target * per_ip)))
    while n <= NAT_GATEWAY_MAX_IPS and peak_ports / (per_ip * n) >= target:
        n += 1
    return n if n <= NAT_GATEWAY_MAX_IPS else None


def utilisation(peak_ports: float, config: SnatConfig, *, public_ips: int | None = None,
                nat_gateway_ips: int | None = None) -> float:
    """Recompute utilisation of a demand (ports) under other capacity settings."""
    return peak_ports / config.capacity(public_ips=public_ips, nat_gateway_ips=nat_gateway_ips)


