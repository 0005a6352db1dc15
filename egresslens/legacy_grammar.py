"""The legacy AzureDiagnostics `msg_s` grammars (RE2) the normaliser applies in SQL."""

# Legacy msg_s grammars (RE2). Each names its groups so one regexp_extract yields a struct.
# Greedy classes rather than lazy quantifiers where the text allows: RE2 extracts submatches
# much faster then. Tails keep trailing spaces; they are trimmed in SQL.
APP_RE = (
    r"^(HTTPS|HTTP|MSSQL)\s+request from ([^\s:]*)(?::(\d*))?(?: to ([^\s:]+):(\d+))?\.(?: Url: (.*?)\.)? "
    r"Action: ([A-Za-z]+)\.*\s*(.*)$"
)
APP_GROUPS = ["proto", "src", "sport", "host", "dport", "url", "action", "tail"]
NET_RE = (
    r"^(TCP|UDP|ICMP)(?: Type=(\d+))? request from ([^\s:]+)(?::(\d*))? to ([^\s:]*[^\s:.])(?::(\d*))?\.? "
    r"Action: ([A-Za-z]+)\.*\s*(.*)$"
)
NET_GROUPS = ["proto", "icmp_type", "src", "sport", "dst", "dport", "action", "tail"]
NAT_RE = (
    r"^(TCP|UDP)\s+request from ([^\s:]+):(\d*) to ([^\s:]+):(\d*) was DNAT'ed to ([^\s:]+):(\d*)"
    r"\.*\s*(.*)$"
)
NAT_GROUPS = ["proto", "src", "sport", "dst", "dport", "tip", "tport", "tail"]
TI_RE = (
    r"^(\S+)\s+request from ([^\s:]*)(?::(\d*))?(?: to (\S+?)(?::(\d*))?)?\.(?: Url: (.*?)\.)? "
    r"Action: ([A-Za-z]+)\.*\s*ThreatIntel: (.*?)\.?\s*$"
)
TI_GROUPS = ["proto", "src", "sport", "dst", "dport", "url", "action", "description"]
IDS_RE = (
    r"^(\S+)\s+request from ([^\s:]*)(?::(\d*))? to ([^\s:]*?)(?::(\d*))?\.? Action: ([A-Za-z]+)\.*\s*"
    r"Signature: (\d+)\. IDS: (.*)\. Priority: (\d+)\. Classification: (.*?)\.?\s*$"
)
IDS_GROUPS = ["proto", "src", "sport", "dst", "dport", "action", "sid", "description", "priority", "category"]
DNS_RE = (
    r"^\s*DNS Request: ([^\s:]+):(\d+) [-\x{2013}] (\d+) (\S+) (\S+) (\S+) (\S+) (\d+) (\S+) (\d+) "
    r"(\S+) (\S+) (\d+) ([\d.]+)s\s*$"
)
DNS_GROUPS = ["src", "sport", "qid", "qtype", "qclass", "qname", "proto", "reqsize", "dnssec", "edns", "rcode", "flags", "respsize", "dur"]
DNS_ERR_RE = r"^\s*Error: (\d+) (\S+) ([A-Za-z0-9]+):? (.*?)\s*$"
DNS_ERR_GROUPS = ["errno", "qname", "qtype", "detail"]


# The rule part of a legacy tail: `[Policy: P. Rule Collection Group: G. ]Rule Collection: C.
# Rule[ Name]: R[. Web Category: W]`. One pattern, applied only to tails that name a rule.
RULE_TAIL_RE = (
    r"^(?:Policy: (.*?)\. Rule Collection Group: (.*?)\. )?Rule Collection: (.*?)\. Rule(?: Name)?: (.*?)"
    r"(?:\. Web Category: (.*?)\.?)?$"
)
RULE_TAIL_GROUPS = ["policy", "rcg", "rc", "rule", "web"]
