"""Your firewalls as they are: policies (with their parents), classic rules, IP Groups, and which
firewall uses what, read from exports (`parse`) or from Azure (`arm`), kept as dated snapshots in the
store (`snapshots`), and turned into the rules each firewall evaluates (`model`).

    from egresslens.estate import load_files
    estate = load_files(["rcgs.json", "ip-groups.json", "firewall.json"])
    rules = estate.rules_for_firewall("fw-hub-weu")   # parent's groups first, IP Groups resolved
"""

from egresslens.estate.model import Estate, FirewallDoc, IpGroup, PolicyDoc, RuleSet
from egresslens.estate.parse import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_RULES,
    PolicyError,
    load_files,
    load_policy,
    parse_documents,
    parse_policy,
)

__all__ = ["Estate", "FirewallDoc", "IpGroup", "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_RULES", "PolicyDoc",
           "PolicyError", "RuleSet", "load_files", "load_policy", "parse_documents", "parse_policy"]
