"""Canonical rows per event table, in DuckDB SQL over whole batches: the one place that says what a
flow, a DNS query or a threat record is, whichever way its fields were read.

Each statement reads its legacy records from ``legacy`` (the stage's columns and the parsed message
text, egresslens/normalise.py) and its structured records from a relation of ``f_<Field>`` columns
that the caller names: the generic ``stage`` (any record shape) or the fast path's narrow parse of
storage-archive records (`normalise.fast_source`). Every row carries its ``reject_reason`` (NULL when
it is stored) and, when stored, its ``event_id``.
"""

from __future__ import annotations

import re

from egresslens.escape import sql_string as _lit
from egresslens.legacy_grammar import RULE_TAIL_GROUPS, RULE_TAIL_RE
from egresslens.schema import TABLES_BY_NAME, Table




def _groups(names: list[str]) -> str:
    return "[" + ", ".join(_lit(n) for n in names) + "]"


# Shared SQL snippets -------------------------------------------------------------------------------

def _int(expr: str) -> str:
    return f"try_cast(try_cast({expr} AS DOUBLE) AS BIGINT)"


def _bool(expr: str) -> str:
    return (
        f"CASE lower({expr}) WHEN 'true' THEN true WHEN '1' THEN true WHEN 'false' THEN false "
        f"WHEN '0' THEN false END"
    )


def _name(expr: str) -> str:
    """FQDNs and query names: lower case, no trailing dot. `rtrim` with characters to strip costs about as
    much as the rest of a name's canonical form, so it runs only on a name that ends with a dot."""
    return f"nullif(CASE WHEN ends_with({expr}, '.') THEN rtrim(lower({expr}), '.') ELSE lower({expr}) END, '')"


_PROTOCOLS = ("TCP", "UDP", "ICMP", "HTTP", "HTTPS", "MSSQL")


def _proto(expr: str) -> str:
    """`HTTP/1.1` -> `HTTP`; `tcp` -> `TCP`; `ICMP Type=8` -> `ICMP` (the type goes to icmp_type). A name
    already in its canonical form (nearly every one) is taken as it is."""
    known = ", ".join(_lit(p) for p in _PROTOCOLS)
    return (f"CASE WHEN {expr} IN ({known}) THEN {expr} "
            f"ELSE nullif(upper(split_part(split_part(trim({expr}), '/', 1), ' ', 1)), '') END")


def _action(expr: str) -> str:
    """`allow` -> `Allow`, `deny` -> `Deny`, `dnat` -> `DNAT`, in any case; anything else as it is."""
    return (f"CASE WHEN {expr} IN ('Allow', 'Deny', 'DNAT') THEN {expr} WHEN lower({expr}) = 'allow' THEN 'Allow' "
            f"WHEN lower({expr}) = 'deny' THEN 'Deny' WHEN lower({expr}) = 'dnat' THEN 'DNAT' ELSE {expr} END")


def _reason(expr: str) -> str:
    """Trimmed, without trailing dots (`Deny.` -> `Deny`); the dots stripped only where there are some."""
    return f"nullif(CASE WHEN ends_with(trim({expr}), '.') THEN rtrim(trim({expr}), '. ') ELSE trim({expr}) END, '')"


_IPV4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
_IPV6 = r"^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$"


def _not_ip(expr: str, what: str) -> str:
    """A reject clause for an address that is present but not one IPv4/IPv6 address: log text is
    attacker-influenced, and a name, CIDR, `*` or `any` must never reach a rule (it would widen it)."""
    return (f"WHEN nullif({expr}, '') IS NOT NULL AND NOT (regexp_full_match({expr}, {_lit(_IPV4)}) "
            f"OR (regexp_full_match({expr}, {_lit(_IPV6)}) AND NOT contains({expr}, ':::') "
            f"AND length({expr}) - length(replace({expr}, '::', '')) <= 2)) "
            f"THEN '{what} is not an IP address: ' || left({expr}, 100)")


def _bad_port(expr: str, what: str, as_integer: str | None = None) -> str:
    """A reject clause for a port that is present but not an integer from 0 to 65535 (`as_integer`, the port
    already read as an INTEGER, spares reading the text again when it is one)."""
    number = f"try_cast(try_cast({expr} AS DOUBLE) AS BIGINT)"
    if as_integer:
        number = f"coalesce({as_integer}, {number})"
    return (f"WHEN nullif({expr}, '') IS NOT NULL AND coalesce({number} "
            f"NOT BETWEEN 0 AND 65535, true) THEN '{what} is not a port number (0-65535): ' || left({expr}, 40)")



# The rule part of a legacy tail (RULE_TAIL_RE's fields), read by where its markers first occur: the
# same struct `regexp_extract(tail, RULE_TAIL_RE, RULE_TAIL_GROUPS)` gives (every `(.*?)` of that pattern
# ends at the first marker after it from which the rest can match, and the rest can always match from the
# first one), at a quarter of its cost. A tail with a line break (which `.` does not cross) is left to the
# pattern itself. tests/test_normalise.py holds the two equal on generated tails.
_M_GROUP, _M_COLLECTION, _M_RULE, _M_RULE_NAME, _M_WEB = (
    ". Rule Collection Group: ", ". Rule Collection: ", ". Rule: ", ". Rule Name: ", ". Web Category: ")


def _rule_tail_sql() -> str:
    def pos(text: str, marker: str) -> str:
        return f"strpos({text}, {_lit(marker)})"

    empty = "{" + ", ".join(f"{_lit(g)}: ''" for g in RULE_TAIL_GROUPS) + "}"
    fields = {
        "policy": "CASE WHEN rt_new THEN substr(tail, 9, rt_m1 - 9) ELSE '' END",
        "rcg": "CASE WHEN rt_new THEN left(rt_r1, rt_m2 - 1) ELSE '' END",
        "rc": "left(rt_r2, rt_m3 - 1)",
        "rule": "CASE WHEN rt_m4 > 0 THEN left(rt_r3, rt_m4 - 1) ELSE rt_r3 END",
        "web": f"CASE WHEN rt_m4 > 0 THEN regexp_replace(substr(rt_r3, rt_m4 + {len(_M_WEB)}), '[.]$', '') ELSE '' END",
    }
    assert list(fields) == RULE_TAIL_GROUPS
    found = "{" + ", ".join(f"{_lit(k)}: {v}" for k, v in fields.items()) + "}"
    # one step per subquery: each reads the positions the one before found (an alias read in the same
    # SELECT would be expanded in place, and the expression would grow with every step)
    steps = [
        "CASE WHEN NOT (tail LIKE 'Policy: %' OR tail LIKE 'Rule Collection: %') THEN NULL WHEN contains(tail, chr(10)) "
        "THEN 'regex' WHEN tail LIKE 'Policy: %' THEN 'new' ELSE 'old' END AS rt_form",
        f"rt_form = 'new' AS rt_new, CASE WHEN rt_form = 'new' THEN {pos('tail', _M_GROUP)} END AS rt_m1",
        f"CASE WHEN rt_m1 > 0 THEN substr(tail, rt_m1 + {len(_M_GROUP)}) END AS rt_r1",
        f"{pos('rt_r1', _M_COLLECTION)} AS rt_m2",
        f"CASE WHEN rt_form = 'old' THEN substr(tail, {len('Rule Collection: ') + 1}) "
        f"WHEN rt_m2 > 0 THEN substr(rt_r1, rt_m2 + {len(_M_COLLECTION)}) END AS rt_r2",
        f"{pos('rt_r2', _M_RULE)} AS rt_a, {pos('rt_r2', _M_RULE_NAME)} AS rt_b",
        "CASE WHEN rt_a > 0 AND (rt_b = 0 OR rt_a < rt_b) THEN rt_a WHEN rt_b > 0 THEN rt_b END AS rt_m3",
        f"substr(rt_r2, rt_m3 + CASE WHEN rt_m3 = rt_a THEN {len(_M_RULE)} ELSE {len(_M_RULE_NAME)} END) AS rt_r3",
        f"{pos('rt_r3', _M_WEB)} AS rt_m4",
    ]
    relation = "{SOURCE}"
    for step in steps:
        relation = f"(SELECT *, {step} FROM {relation})"
    return f"""
SELECT * EXCLUDE (rt_form, rt_new, rt_m1, rt_r1, rt_m2, rt_r2, rt_a, rt_b, rt_m3, rt_r3, rt_m4),
  CASE WHEN rt_form = 'regex' THEN regexp_extract(tail, {_lit(RULE_TAIL_RE)}, {_groups(RULE_TAIL_GROUPS)})
       WHEN rt_r3 IS NOT NULL THEN {found}
       WHEN rt_form IS NOT NULL THEN {empty} END AS rt
FROM {relation}"""


_RULE_TAIL_SQL = _rule_tail_sql()


# -- canonical rows per table ----------------------------------------------------------------------

_SNI_MISSING = "(target = 'application' AND coalesce(f_ActionReason, '') LIKE 'SNI TLS extension%')"

_FLOW_QUERY = f"""
WITH legacy_rows AS (
  SELECT l.rid, l.ts AS time, l.firewall, l.target AS kind, l.log_format,
    coalesce(l.app.proto, l.net.proto, l.nat.proto) AS protocol,
    l.net.icmp_type AS icmp_type,
    coalesce(l.app.src, l.net.src, l.nat.src) AS source_ip,
    coalesce(l.app.sport, l.net.sport, l.nat.sport) AS source_port,
    coalesce(l.net.dst, l.nat.dst) AS destination_ip,
    l.app.host AS destination_fqdn,
    coalesce(l.app.dport, l.net.dport, l.nat.dport) AS destination_port,
    l.app.url AS target_url,
    CASE WHEN l.target = 'nat' THEN 'DNAT' ELSE coalesce(l.app.action, l.net.action) END AS action,
    rtrim(coalesce(l.app.tail, l.net.tail, l.nat.tail)) AS tail,
    l.nat.tip AS translated_ip, l.nat.tport AS translated_port,
    coalesce(l.app.proto, l.net.proto, l.nat.proto) IS NULL OR (l.target = 'nat' AND l.nat.tip = '') AS unparsed
  FROM legacy l
  WHERE l.target IN ('application', 'network', 'nat')
), legacy_tails AS (
  -- each tail field extracted once; the older form puts `policy:group:collection` in Rule Collection
  SELECT *, nullif(rt.policy, '') AS t_policy, nullif(rt.rcg, '') AS t_rcg, nullif(rt.rc, '') AS t_rc,
         nullif(rt.rule, '') AS t_rule, nullif(rt.web, '') AS t_web
  FROM ({_RULE_TAIL_SQL.replace("{SOURCE}", "legacy_rows")})
), legacy_canon AS (
  SELECT rid, time, firewall, kind, log_format, protocol, icmp_type,
    source_ip, source_port, destination_ip, destination_fqdn, destination_port, target_url, action,
    CASE
      WHEN tail LIKE 'No rule matched%' THEN 'Default Action'
      WHEN tail LIKE 'Reason: %' THEN substr(tail, 9)
      WHEN tail LIKE 'Failed to resolve %' THEN tail
    END AS action_reason,
    CASE WHEN old_form THEN rc_parts[1] ELSE t_policy END AS policy,
    CASE WHEN old_form THEN rc_parts[2] ELSE t_rcg END AS rule_collection_group,
    CASE WHEN old_form THEN rc_parts[3] ELSE t_rc END AS rule_collection,
    t_rule AS rule,
    t_web AS web_category,
    translated_ip, translated_port,
    CASE WHEN kind = 'application' THEN upper(protocol) = 'HTTPS' AND nullif(target_url, '') IS NOT NULL END AS is_tls_inspected,
    CASE WHEN kind = 'application' THEN false END AS is_explicit_proxy,
    unparsed
  FROM (SELECT *, string_split(t_rc, ':') AS rc_parts,
               t_policy IS NULL AND len(string_split(t_rc, ':')) = 3 AS old_form FROM legacy_tails)
), structured_canon AS (
  SELECT rid, ts AS time, firewall, target AS kind, log_format,
    f_Protocol AS protocol, nullif(regexp_extract(f_Protocol, '(?i)type=(\\d+)', 1), '') AS icmp_type,
    f_SourceIp AS source_ip, f_SourcePort AS source_port,
    CASE WHEN target <> 'application' THEN f_DestinationIp END AS destination_ip,
    CASE WHEN target = 'application' THEN f_Fqdn END AS destination_fqdn,
    -- SNI-missing requests: legacy text names no port, so the structured one is dropped (one event)
    CASE WHEN NOT {_SNI_MISSING} THEN f_DestinationPort END AS destination_port,
    CASE WHEN target = 'application' THEN coalesce(f_TargetUrl, f_Url) END AS target_url,
    -- structured SNI-missing rows carry an empty Action and the reason: the firewall denied them
    CASE WHEN target = 'nat' THEN 'DNAT' WHEN {_SNI_MISSING} THEN coalesce(f_Action, 'Deny') ELSE f_Action END AS action,
    f_ActionReason AS action_reason, f_Policy AS policy, f_RuleCollectionGroup AS rule_collection_group,
    f_RuleCollection AS rule_collection, f_Rule AS rule,
    CASE WHEN target = 'application' THEN f_WebCategory END AS web_category,
    CASE WHEN target = 'nat' THEN f_TranslatedIp END AS translated_ip,
    CASE WHEN target = 'nat' THEN f_TranslatedPort END AS translated_port,
    CASE WHEN target = 'application' THEN coalesce({_bool('f_IsTlsInspected')}, false) END AS is_tls_inspected,
    CASE WHEN target = 'application' THEN coalesce({_bool('f_IsExplicitProxyRequest')}, false) END AS is_explicit_proxy,
    f_Protocol IS NULL AS unparsed
  FROM {{STRUCTURED}}
), unioned AS (
  {{ROWS}}
)
SELECT rid, log_format, unparsed,
  time, firewall, kind,
  c_protocol AS protocol,
  try_cast(icmp_type AS INTEGER) AS icmp_type,
  nullif(source_ip, '') AS source_ip,
  -- port 0 is how structured logs write "no port" (ICMP, SNI-missing requests)
  CASE WHEN c_protocol = 'ICMP' THEN NULL ELSE nullif(c_source_port, 0) END AS source_port,
  nullif(destination_ip, '') AS destination_ip,
  {_name('destination_fqdn')} AS destination_fqdn,
  CASE WHEN c_protocol = 'ICMP' THEN NULL ELSE nullif(c_destination_port, 0) END AS destination_port,
  nullif(target_url, '') AS target_url,
  {_action('action')} AS action,
  CASE WHEN lower(action) = 'deny' AND nullif(rtrim(rule), '') IS NULL AND c_reason IS NULL
       THEN 'Default Action' ELSE c_reason END AS action_reason,
  nullif(trim(policy), '') AS policy,
  nullif(trim(rule_collection_group), '') AS rule_collection_group,
  nullif(trim(rule_collection), '') AS rule_collection,
  nullif(trim(rule), '') AS rule,
  nullif(trim(web_category), '') AS web_category,
  nullif(translated_ip, '') AS translated_ip,
  try_cast(nullif(translated_port, '') AS INTEGER) AS translated_port,
  is_tls_inspected, is_explicit_proxy,
  -- why a record that reached this table is still refused
  CASE
    WHEN unparsed AND log_format = 'structured' THEN 'structured ' || kind || ' rule record without a Protocol column'
    WHEN unparsed THEN 'unrecognised ' || kind || ' rule log text'
    WHEN time IS NULL THEN 'missing or unparseable time'
    WHEN nullif(source_ip, '') IS NULL AND coalesce(action_reason, '') NOT LIKE 'SNI TLS extension%' THEN 'missing source address'
    {_not_ip('source_ip', 'source address')}
    {_not_ip('destination_ip', 'destination address')}
    {_not_ip('translated_ip', 'translated address')}
    WHEN c_action IS NULL THEN 'missing or unknown action: ' || coalesce(action, 'none')
    WHEN nullif(source_port, '') IS NOT NULL AND c_source_port IS NULL THEN 'source port is not an integer: ' || source_port
    WHEN nullif(destination_port, '') IS NOT NULL AND c_destination_port IS NULL THEN 'destination port is not an integer: ' || destination_port
    {_bad_port('source_port', 'source port', 'c_source_port')}
    {_bad_port('destination_port', 'destination port', 'c_destination_port')}
    {_bad_port('translated_port', 'translated port')}
  END AS reject_reason
FROM (
  -- what several columns (or the checks) read, computed once
  SELECT *, {_proto('protocol')} AS c_protocol, {_reason('action_reason')} AS c_reason,
    try_cast(nullif(source_port, '') AS INTEGER) AS c_source_port,
    try_cast(nullif(destination_port, '') AS INTEGER) AS c_destination_port,
    CASE WHEN action IN ('Allow', 'Deny', 'DNAT') THEN action WHEN lower(action) IN ('allow', 'deny', 'dnat') THEN lower(action) END
      AS c_action
  FROM unioned
)
"""

_DNS_QUERY = f"""
WITH legacy_rows AS (
  SELECT l.rid, l.ts AS time, l.firewall, l.log_format,
    coalesce(l.dns.src, '') AS source_ip, l.dns.sport AS source_port, l.dns.qid AS query_id,
    coalesce(l.dns.qtype, l.dns_err.qtype) AS query_type, l.dns.qclass AS query_class,
    coalesce(l.dns.qname, l.dns_err.qname) AS query_name, l.dns.proto AS protocol,
    l.dns.reqsize AS request_size, l.dns.dnssec AS dnssec_ok, l.dns.edns AS edns0_buffer_size,
    l.dns.rcode AS response_code, l.dns.flags AS response_flags, l.dns.respsize AS response_size,
    l.dns.dur AS duration_s, l.dns_err.errno AS error_number,
    regexp_extract(l.dns_err.detail, '([^:]*)$', 1) AS error_message,
    coalesce(l.dns.qname, l.dns_err.qname, '') = '' AS unparsed
  FROM legacy l
  WHERE l.target = 'dns'
), structured_rows AS (
  SELECT rid, ts AS time, firewall, log_format,
    f_SourceIp AS source_ip, f_SourcePort AS source_port, f_QueryId AS query_id, f_QueryType AS query_type,
    f_QueryClass AS query_class, f_QueryName AS query_name, f_Protocol AS protocol,
    f_RequestSize AS request_size, f_DnssecOkBit AS dnssec_ok, f_EDNS0BufferSize AS edns0_buffer_size,
    f_ResponseCode AS response_code, f_ResponseFlags AS response_flags, f_ResponseSize AS response_size,
    f_RequestDurationSecs AS duration_s, f_ErrorNumber AS error_number, f_ErrorMessage AS error_message,
    f_QueryName IS NULL AS unparsed
  FROM {{STRUCTURED}}
), unioned AS (
  SELECT *, (nullif(trim(error_message), '') IS NOT NULL OR coalesce({_int('error_number')}, 0) <> 0) AS failed
  FROM ({{ROWS}})
)
SELECT rid, log_format, unparsed, time, firewall,
  -- a failed query keeps its client when named (structured rows; legacy error lines name none)
  nullif(source_ip, '') AS source_ip,
  nullif(try_cast(source_port AS INTEGER), 0) AS source_port,
  CASE WHEN NOT failed THEN try_cast(query_id AS INTEGER) END AS query_id,
  nullif(upper(CASE WHEN ends_with(query_type, ':') THEN rtrim(query_type, ':') ELSE query_type END), '') AS query_type,
  CASE WHEN NOT failed THEN nullif(upper(query_class), '') END AS query_class,
  {_name('query_name')} AS query_name,
  nullif(lower(protocol), '') AS protocol,
  CASE WHEN NOT failed THEN try_cast(request_size AS INTEGER) END AS request_size,
  CASE WHEN NOT failed THEN {_bool('dnssec_ok')} END AS dnssec_ok,
  CASE WHEN NOT failed THEN try_cast(edns0_buffer_size AS INTEGER) END AS edns0_buffer_size,
  CASE WHEN NOT failed THEN nullif(upper(response_code), '') END AS response_code,
  CASE WHEN NOT failed THEN nullif(nullif(response_flags, '-'), '') END AS response_flags,
  CASE WHEN NOT failed THEN try_cast(response_size AS INTEGER) END AS response_size,
  CASE WHEN NOT failed THEN try_cast(duration_s AS DOUBLE) END AS duration_s,
  CASE WHEN failed THEN try_cast({_int('error_number')} AS INTEGER) END AS error_number,
  CASE WHEN failed THEN nullif(trim(error_message), '') END AS error_message,
  CASE
    WHEN unparsed THEN 'unrecognised DNS proxy log text'
    WHEN time IS NULL THEN 'missing or unparseable time'
    WHEN NOT failed AND nullif(source_ip, '') IS NULL THEN 'missing source address'
    {_not_ip('source_ip', 'source address')}
    {_bad_port('source_port', 'source port')}
  END AS reject_reason
FROM unioned
"""

_THREAT_QUERY = f"""
WITH legacy_rows AS (
  SELECT l.rid, l.ts AS time, l.firewall, l.log_format, l.target AS kind,
    coalesce(l.ti.proto, l.ids.proto) AS protocol,
    coalesce(l.ti.src, l.ids.src) AS source_ip, coalesce(l.ti.sport, l.ids.sport) AS source_port,
    CASE WHEN l.target = 'idps' THEN l.ids.dst
         WHEN regexp_matches(l.ti.dst, '^\\d+\\.\\d+\\.\\d+\\.\\d+$') THEN l.ti.dst END AS destination_ip,
    coalesce(l.ti.dport, l.ids.dport) AS destination_port,
    CASE WHEN l.target = 'threat_intel' AND NOT regexp_matches(coalesce(l.ti.dst, ''), '^\\d+\\.\\d+\\.\\d+\\.\\d+$')
         THEN l.ti.dst END AS fqdn,
    l.ti.url AS target_url,
    coalesce(l.ti.action, l.ids.action) AS action,
    coalesce(l.ti.description, l.ids.description) AS description,
    l.ids.sid AS signature_id, l.ids.category AS category, l.ids.priority AS severity,
    CASE WHEN l.target = 'threat_intel' THEN false END AS is_tls_inspected,
    coalesce(l.ti.proto, l.ids.proto, '') = '' AS unparsed
  FROM legacy l
  WHERE l.target IN ('threat_intel', 'idps')
), structured_rows AS (
  SELECT rid, ts AS time, firewall, log_format, target AS kind,
    f_Protocol AS protocol, f_SourceIp AS source_ip, f_SourcePort AS source_port,
    f_DestinationIp AS destination_ip, f_DestinationPort AS destination_port, f_Fqdn AS fqdn,
    coalesce(f_TargetUrl, f_Url) AS target_url, f_Action AS action,
    -- structured threat-intel descriptions keep the `ThreatIntel: ` prefix the legacy grammar strips
    regexp_replace(coalesce(f_ThreatDescription, f_Description), '^ThreatIntel:\\s*', '') AS description,
    f_SignatureId AS signature_id,
    f_Category AS category, f_Severity AS severity,
    CASE WHEN target = 'threat_intel' THEN coalesce({_bool('f_IsTlsInspected')}, false) END AS is_tls_inspected,
    f_Protocol IS NULL AS unparsed
  FROM {{STRUCTURED}}
)
SELECT rid, log_format, unparsed, time, firewall, kind,
  {_proto('protocol')} AS protocol,
  nullif(source_ip, '') AS source_ip,
  try_cast(nullif(source_port, '') AS INTEGER) AS source_port,
  nullif(destination_ip, '') AS destination_ip,
  try_cast(nullif(destination_port, '') AS INTEGER) AS destination_port,
  {_name('fqdn')} AS fqdn,
  nullif(target_url, '') AS target_url,
  lower(action) AS action,
  nullif(trim(description), '') AS description,
  nullif(signature_id, '') AS signature_id,
  nullif(trim(category), '') AS category,
  try_cast({_int('severity')} AS INTEGER) AS severity,
  is_tls_inspected,
  CASE
    WHEN unparsed THEN 'unrecognised ' || kind || ' log text'
    WHEN time IS NULL THEN 'missing or unparseable time'
    WHEN action IS NULL THEN 'missing action'
    WHEN nullif(source_ip, '') IS NULL THEN 'missing source address'
    {_not_ip('source_ip', 'source address')}
    {_not_ip('destination_ip', 'destination address')}
    {_bad_port('source_port', 'source port')}
    {_bad_port('destination_port', 'destination port')}
  END AS reject_reason
FROM ({{ROWS}})
"""


def _simple_select(name: str, target: str, exprs: dict[str, str], required: str) -> str:
    """Structured-only tables: a projection of the stage with types cast."""
    cols = ",\n  ".join(f"{expr} AS {col}" for col, expr in exprs.items())
    return f"""
SELECT rid, log_format, ts AS time, firewall,
  {cols},
  CASE WHEN ts IS NULL THEN 'missing or unparseable time'
       WHEN {required} IS NULL THEN 'missing ' || {_lit(required.removeprefix('f_'))}
       {_not_ip('f_SourceIp', 'source address')}
       {_not_ip('f_DestinationIp', 'destination address')} END AS reject_reason
FROM stage WHERE target = {_lit(target)}
"""


_RULE_COLS = {
    "policy": "f_Policy",
    "rule_collection_group": "f_RuleCollectionGroup",
    "rule_collection": "f_RuleCollection",
    "rule": "f_Rule",
}
_FLOW5 = {
    "protocol": _proto("f_Protocol"),
    "source_ip": "f_SourceIp",
    "source_port": "try_cast(f_SourcePort AS INTEGER)",
    "destination_ip": "f_DestinationIp",
    "destination_port": "try_cast(f_DestinationPort AS INTEGER)",
}

_SIMPLE = {
    "fqdn_resolution_failures": (
        "fqdn_failure",
        {"fqdn": _name("f_Fqdn"), "error": "f_Error", "server_ip": "f_ServerIp",
         "server_port": "try_cast(f_ServerPort AS INTEGER)", **_RULE_COLS},
        "f_Fqdn",
    ),
    "fat_flows": ("fat_flow", {**_FLOW5, "flow_rate_mbps": "try_cast(f_FlowRate AS DOUBLE)"}, "f_SourceIp"),
    "flow_traces": (
        "flow_trace",
        {**_FLOW5, "action": "f_Action", "action_reason": "f_ActionReason", "flag": "upper(f_Flag)"},
        "f_SourceIp",
    ),
    "application_rule_aggregations": (
        "app_agg",
        {"source_ip": "f_SourceIp", "protocol": _proto("f_Protocol"),
         "destination_port": "try_cast(f_DestinationPort AS INTEGER)", "fqdn": _name("f_Fqdn"),
         "target_url": "f_TargetUrl", "action": "f_Action", "action_reason": "f_ActionReason", **_RULE_COLS,
         "hits": _int("f_ApplicationRuleCount")},
        "f_ApplicationRuleCount",
    ),
    "network_rule_aggregations": (
        "net_agg",
        {"source_ip": "f_SourceIp", "protocol": _proto("f_Protocol"), "destination_ip": "f_DestinationIp",
         "destination_port": "try_cast(f_DestinationPort AS INTEGER)", "action": "f_Action",
         "action_reason": "f_ActionReason", **_RULE_COLS, "is_default_rule": _bool("f_IsDefaultRule"),
         "hits": _int("f_NetworkRuleCount")},
        "f_NetworkRuleCount",
    ),
    "nat_rule_aggregations": (
        "nat_agg",
        {"source_ip": "f_SourceIp", "protocol": _proto("f_Protocol"), "translated_ip": "f_TranslatedIp",
         "translated_port": "try_cast(f_TranslatedPort AS INTEGER)", **_RULE_COLS, "hits": _int("f_NatRuleCount")},
        "f_NatRuleCount",
    ),
}

_CANON_TABLE = {
    "flows": "canon_flows",
    "dns_queries": "canon_dns",
    "threats": "canon_threats",
    **{name: f"canon_{name}" for name in _SIMPLE},
}


# Which stage targets each canonical statement reads.
TARGETS_OF = {
    "flows": {"application", "network", "nat"},
    "dns_queries": {"dns"},
    "threats": {"threat_intel", "idps"},
    **{name: {target} for name, (target, _, _) in _SIMPLE.items()},
}


def canonical_columns(table: Table) -> list[str]:
    """The columns that define an event (everything but bookkeeping)."""
    return [c for c in table.column_names if c not in ("event_id", "log_format", "ingest_run_id")]


def staged_source(name: str) -> str:
    """The structured records of one table in the generic ``stage``."""
    targets = ", ".join(_lit(t) for t in sorted(TARGETS_OF[name]))
    return f"(SELECT * FROM stage WHERE log_format = 'structured' AND target IN ({targets}))"


def structured_fields(name: str) -> list[str]:
    """The ``f_<Field>`` columns the table's statement reads from its structured source."""
    return sorted(set(re.findall(r"\bf_([A-Za-z0-9]+)", _query(name))))


def _query(name: str) -> str:
    if name == "flows":
        return _FLOW_QUERY
    if name == "dns_queries":
        return _DNS_QUERY
    if name == "threats":
        return _THREAT_QUERY
    return _simple_select(name, *_SIMPLE[name])


def canonical_sql(name: str, structured: str | None = None, *, append: bool = False) -> str:
    """The statement that fills ``canon_<table>`` (creates it, or appends to it) with
    :func:`canonical_select`'s rows."""
    target = _CANON_TABLE[name]
    head = f"INSERT INTO {target}" if append else f"CREATE OR REPLACE TEMP TABLE {target} AS"
    return f"{head} {canonical_select(name, structured)}"


# The relations each table's statement unions, {ROWS}: its legacy rows and its structured rows.
_ROWS = {"flows": ("legacy_canon", "structured_canon"), "dns_queries": ("legacy_rows", "structured_rows"),
         "threats": ("legacy_rows", "structured_rows")}


def canonical_select(name: str, structured: str | None = None, *, legacy: bool = True) -> str:
    """The table's canonical rows from the legacy stage and from `structured` (default: the generic stage),
    each with its event id (NULL when refused) and `reject_reason`. `legacy` False: `structured` alone, for
    a source that holds no legacy record (files read whole, of one table's structured categories); the same
    rows and types, without planning the legacy branch (0.02-0.05 s a statement)."""
    table = TABLES_BY_NAME[name]
    query = _query(name)
    if name in _ROWS:  # (before the source goes in: a file's name may hold any text)
        legacy_rows, structured_rows = _ROWS[name]
        query = query.replace("{ROWS}", (f"SELECT * FROM {legacy_rows} UNION ALL BY NAME " if legacy else "")
                              + f"SELECT * FROM {structured_rows}")
    query = query.replace("{STRUCTURED}", structured or staged_source(name))
    return (f"SELECT CASE WHEN reject_reason IS NULL THEN {event_id_sql(table)} END AS event_id, * "
            f"FROM (\n{query}\n)")


def canon_table(table: Table) -> str:
    return _CANON_TABLE[table.name]


def event_id_sql(table: Table, alias: str = "") -> str:
    """MD5 over the canonical columns, NULL-safe and order-sensitive, held as a UUID: the digest read as a
    little-endian 128-bit number (`md5_number`), which spares writing the digest as hex text and reading
    it back. The text is the table's name and each column as text (NULL as chr(0)), joined by chr(31):
    `concat_ws(chr(31), ...)` as it was first written, built with `concat` and the separators spelled out
    (the same text, no NULL to skip: 7 % less CPU for the id)."""
    prefix = f"{alias}." if alias else ""
    parts = "".join(
        f", chr(31), coalesce(CAST({prefix}{c} AS VARCHAR), chr(0))" for c in canonical_columns(table)
    )
    return f"md5_number(concat({_lit(table.name)}{parts}))::UUID"
