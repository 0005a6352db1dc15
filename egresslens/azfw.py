"""The names Azure Firewall logs use: categories, Log Analytics tables and columns, and which canonical
table each category's records fill. Readers route files by these, the normaliser parses by them."""

from __future__ import annotations

# Column names a record may carry, in properties or at the top level.
STRUCTURED_FIELDS = (
    "Protocol SourceIp SourcePort DestinationIp DestinationPort Fqdn TargetUrl Url Action Policy "
    "RuleCollectionGroup RuleCollection Rule ActionReason IsTlsInspected WebCategory "
    "IsExplicitProxyRequest TranslatedIp TranslatedPort QueryId QueryType QueryClass QueryName "
    "RequestSize DnssecOkBit EDNS0BufferSize ResponseCode ResponseFlags ResponseSize "
    "RequestDurationSecs ErrorNumber ErrorMessage ThreatDescription SignatureId Description Severity "
    "Error ServerIp ServerPort FlowRate Flag ApplicationRuleCount NetworkRuleCount NatRuleCount "
    "IsDefaultRule"
).split()
# Storage / Event Hub envelope: columns under `properties`.
ENVELOPE_FIELDS = "time category operationName resourceId".split()
# Log Analytics rows (query API, exports): columns at the top level.
FLAT_FIELDS = "TimeGenerated Type _ResourceId Resource msg_s".split()

# Structured category or Log Analytics table name -> canonical target.
STRUCTURED_TARGETS = {
    "AZFWApplicationRule": "application",
    "AZFWNetworkRule": "network",
    "AZFWNatRule": "nat",
    "AZFWDnsQuery": "dns",
    "AZFWThreatIntel": "threat_intel",
    "AZFWIdpsSignature": "idps",
    "AZFWFqdnResolveFailure": "fqdn_failure",
    "AZFWInternalFqdnResolutionFailure": "fqdn_failure",
    "AZFWFatFlow": "fat_flow",
    "AZFWFlowTrace": "flow_trace",
    "AZFWApplicationRuleAggregation": "app_agg",
    "AZFWNetworkRuleAggregation": "net_agg",
    "AZFWNatRuleAggregation": "nat_agg",
}
LEGACY_CATEGORIES = ("AzureFirewallApplicationRule", "AzureFirewallNetworkRule", "AzureFirewallDnsProxy")
# Log Analytics tables a CSV export may be named after (`AZFWNetworkRule.csv`).
LOG_TABLES = frozenset(STRUCTURED_TARGETS) | {"AzureDiagnostics"}

# The categories whose records are read by the fast routes, by the table they fill (`normalise`), and the
# route of legacy records (the AzureFirewall* categories, whose columns are message text).
FAST_CATEGORIES = {
    "flows": ("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule"),
    "dns_queries": ("AZFWDnsQuery",),
    "threats": ("AZFWThreatIntel", "AZFWIdpsSignature"),
}
LEGACY = "legacy"
ROUTES = {**FAST_CATEGORIES, LEGACY: LEGACY_CATEGORIES}
