"""SNAT port capacity: the model (`capacity`), demand and findings from connection logs (`analyse`),
and the platform metric beside the estimate (`metric`)."""

from egresslens.snat.analyse import SnatResult, analyse_snat
from egresslens.snat.capacity import (
    DEFAULT_CRITICAL,
    DEFAULT_HOLD_TIME_S,
    DEFAULT_WARNING,
    FIRST_FIVE_LIMIT,
    MAX_PUBLIC_IPS,
    MIN_INSTANCES,
    NAT_GATEWAY_MAX_IPS,
    NAT_GATEWAY_PORTS_PER_IP,
    PORT_RULES,
    PORTS_PER_PUBLIC_IP,
    RFC1918,
    SnatConfig,
    config_file_values,
    ips_needed,
    load_config,
    nat_gateway_ips_needed,
    paas_service,
    seconds,
    utilisation,
)

__all__ = [
    "DEFAULT_CRITICAL", "DEFAULT_HOLD_TIME_S", "DEFAULT_WARNING", "FIRST_FIVE_LIMIT", "MAX_PUBLIC_IPS",
    "MIN_INSTANCES", "NAT_GATEWAY_MAX_IPS", "NAT_GATEWAY_PORTS_PER_IP", "PORT_RULES", "PORTS_PER_PUBLIC_IP",
    "RFC1918", "SnatConfig", "SnatResult", "analyse_snat", "config_file_values", "ips_needed", "load_config",
    "nat_gateway_ips_needed", "paas_service", "seconds", "utilisation",
]
