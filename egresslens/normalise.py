"""Normalise raw Azure Firewall records into the canonical tables, in DuckDB SQL over whole batches.

Input: a relation ``batch(rid, source, position, record_index, raw)``, ``raw`` one record as JSON text in
any shape: a storage/Event Hub envelope (``properties`` holds the columns, or ``properties.msg`` the
legacy text), a Log Analytics row (columns at the top level, ``Type`` names the table) or an
AzureDiagnostics row (``msg_s``). Output: one staging table per canonical table plus ``stage_rejects``
(records refused, with the reason). All SQL, so the hot path stays columnar.
"""

from __future__ import annotations

import json

import duckdb

from egresslens.schema import EVENT_TABLES, TABLES_BY_NAME, Table

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
# DuckDB struct keys are case-insensitive, so these case variants are read by path instead.
CASE_VARIANTS = ["$.Category", "$.ResourceId", "$.OperationName"]

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

from egresslens.legacy_grammar import (  # noqa: E402  the legacy msg_s grammars
    APP_GROUPS, APP_RE, DNS_ERR_GROUPS, DNS_ERR_RE, DNS_GROUPS, DNS_RE, IDS_GROUPS, IDS_RE, NAT_GROUPS, NAT_RE,
    NET_GROUPS, NET_RE, RULE_TAIL_GROUPS, RULE_TAIL_RE, TI_GROUPS, TI_RE,
)


def _lit(text: str) -> str:
    """A SQL string literal (the patterns above are constants, but quote them properly anyway)."""
    return "'" + text.replace("'", "''") + "'"


def _groups(names: list[str]) -> str:
    return "[" + ", ".join(_lit(n) for n in names) + "]"


def _envelope_structure() -> str:
    props = {f: "VARCHAR" for f in STRUCTURED_FIELDS + ["msg", "Category"]}
    return json.dumps({**{f: "VARCHAR" for f in ENVELOPE_FIELDS}, "properties": props})


def _flat_structure() -> str:
    return json.dumps({f: "VARCHAR" for f in FLAT_FIELDS + STRUCTURED_FIELDS})


def _field(name: str) -> str:
    return f"coalesce(nullif(r.properties.{name}, ''), nullif(t.{name}, ''))"


# -- stage 1: one struct per record, the target table decided ------------------------------------

def _stage_sql(guarded: bool) -> str:
    """The stage statement. Unguarded, a record that is not JSON fails the whole statement, and the
    batch is staged again guarded: `try()` doubles the parse's cost, so only such batches pay for it."""
    if guarded:
        parse = "try(json_transform(raw, {envelope}))"
        reparse = "CASE WHEN r.properties IS NULL THEN try(json_transform(raw, {flat})) END"
    else:
        parse = "json_transform(raw, {envelope})"
        reparse = "CASE WHEN r.properties IS NULL THEN json_transform(raw, {flat}) END"
    fields = ",\n      ".join(f"{_field(f)} AS f_{f}" for f in STRUCTURED_FIELDS)
    envelope = _lit(_envelope_structure())
    flat = _lit(_flat_structure())
    variants = "[" + ", ".join(_lit(p) for p in CASE_VARIANTS) + "]"
    legacy_target = """
      CASE
        WHEN regexp_matches(msg, '^\\s*DNS Request:') OR regexp_matches(msg, '^\\s*Error: \\d+ ') THEN 'dns'
        WHEN contains(msg, ' was DNAT''ed to ') THEN 'nat'
        WHEN contains(msg, ' ThreatIntel: ') THEN 'threat_intel'
        WHEN contains(msg, ' Signature: ') AND contains(msg, ' IDS: ') THEN 'idps'
        WHEN regexp_matches(msg, '^(HTTPS|HTTP|MSSQL)\\s+request') THEN 'application'
        WHEN regexp_matches(msg, '^(TCP|UDP|ICMP)[ ]') THEN 'network'
      END"""
    targets = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in STRUCTURED_TARGETS.items())
    return f"""
CREATE OR REPLACE TEMP TABLE stage AS
WITH parsed AS (
  -- one JSON parse per record, into the envelope shape; invalid JSON gives NULL here and a
  -- reason in stage_rejects
  SELECT rid, raw, {parse.format(envelope=envelope)} AS r
  FROM batch
), flat AS (
  -- records without `properties` are Log Analytics rows: parse those again in the flat shape
  SELECT *, {reparse.format(flat=flat)} AS t
  FROM parsed
), varied AS (
  SELECT *,
    CASE WHEN t IS NOT NULL AND (nullif(t.Type, 'AzureDiagnostics') IS NULL OR t._ResourceId IS NULL
                                 OR t.Type = 'AZFWIdpsSignature')  -- its classification column is Category
              OR (r.properties IS NOT NULL AND r.resourceId IS NULL)
         THEN try(json_extract_string(raw, {variants})) END AS v
  FROM flat
), shaped AS (
  SELECT rid, r, t, v,
    coalesce(nullif(r.time, ''), nullif(t.TimeGenerated, '')) AS time_text,
    coalesce(nullif(r.category, ''), nullif(nullif(t.Type, ''), 'AzureDiagnostics'),
             CASE WHEN v[1] LIKE 'AzureFirewall%' OR v[1] LIKE 'AZFW%' THEN v[1] END) AS log_category,
    coalesce(nullif(r.properties.msg, ''), nullif(t.msg_s, '')) AS msg,
    lower(coalesce(nullif(r.resourceId, ''), nullif(t._ResourceId, ''), nullif(v[2], ''), nullif(t.Resource, ''))) AS firewall,
    CASE WHEN r.category = 'AZFWIdpsSignature' THEN nullif(r.properties.Category, '')
         WHEN t.Type = 'AZFWIdpsSignature' THEN nullif(v[1], '') END AS f_Category,
    {fields}
  FROM varied
)
SELECT * EXCLUDE (r, t, v),
  coalesce(try_cast(time_text AS TIMESTAMPTZ)::TIMESTAMP,
           try_strptime(time_text, ['%m/%d/%Y, %I:%M:%S.%g %p', '%m/%d/%Y, %I:%M:%S %p', '%m/%d/%Y %I:%M:%S %p'])) AS ts,
  CASE WHEN msg IS NOT NULL THEN 'legacy' ELSE 'structured' END AS log_format,
  CASE WHEN msg IS NOT NULL THEN {legacy_target}
       ELSE CASE log_category {targets} END END AS target
FROM shaped
"""


# -- stage 2: the legacy grammars applied to the lines of each target ----------------------------

def _legacy_sql() -> str:
    return f"""
CREATE OR REPLACE TEMP TABLE legacy AS
SELECT rid,
  CASE target WHEN 'application' THEN regexp_extract(msg, {_lit(APP_RE)}, {_groups(APP_GROUPS)}) END AS app,
  CASE target WHEN 'network' THEN regexp_extract(msg, {_lit(NET_RE)}, {_groups(NET_GROUPS)}) END AS net,
  CASE target WHEN 'nat' THEN regexp_extract(msg, {_lit(NAT_RE)}, {_groups(NAT_GROUPS)}) END AS nat,
  CASE target WHEN 'threat_intel' THEN regexp_extract(msg, {_lit(TI_RE)}, {_groups(TI_GROUPS)}) END AS ti,
  CASE target WHEN 'idps' THEN regexp_extract(msg, {_lit(IDS_RE)}, {_groups(IDS_GROUPS)}) END AS ids,
  CASE WHEN target = 'dns' AND NOT regexp_matches(msg, '^\\s*Error: ')
       THEN regexp_extract(msg, {_lit(DNS_RE)}, {_groups(DNS_GROUPS)}) END AS dns,
  CASE WHEN target = 'dns' AND regexp_matches(msg, '^\\s*Error: ')
       THEN regexp_extract(msg, {_lit(DNS_ERR_RE)}, {_groups(DNS_ERR_GROUPS)}) END AS dns_err
FROM stage WHERE log_format = 'legacy' AND target IS NOT NULL
"""


# Shared SQL snippets -------------------------------------------------------------------------------



def _int(expr: str) -> str:
    return f"try_cast(try_cast({expr} AS DOUBLE) AS BIGINT)"


def _bool(expr: str) -> str:
    return (
        f"CASE lower({expr}) WHEN 'true' THEN true WHEN '1' THEN true WHEN 'false' THEN false "
        f"WHEN '0' THEN false END"
    )


def _name(expr: str) -> str:
    """FQDNs and query names: lower case, no trailing dot."""
    return f"nullif(rtrim(lower({expr}), '.'), '')"


def _proto(expr: str) -> str:
    """`HTTP/1.1` -> `HTTP`; `tcp` -> `TCP`; `ICMP Type=8` -> `ICMP` (the type goes to icmp_type)."""
    return f"nullif(upper(split_part(split_part(trim({expr}), '/', 1), ' ', 1)), '')"


def _reason(expr: str) -> str:
    return f"nullif(rtrim(trim({expr}), '. '), '')"


_IPV4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
_IPV6 = r"^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$"


def _not_ip(expr: str, what: str) -> str:
    """A reject clause for an address that is present but not one IPv4/IPv6 address: log text is
    attacker-influenced, and a name, CIDR, `*` or `any` must never reach a rule (it would widen it)."""
    return (f"WHEN nullif({expr}, '') IS NOT NULL AND NOT (regexp_full_match({expr}, {_lit(_IPV4)}) "
            f"OR (regexp_full_match({expr}, {_lit(_IPV6)}) AND NOT contains({expr}, ':::') "
            f"AND length({expr}) - length(replace({expr}, '::', '')) <= 2)) "
            f"THEN '{what} is not an IP address: ' || left({expr}, 100)")


def _bad_port(expr: str, what: str) -> str:
    """A reject clause for a port that is present but not an integer from 0 to 65535."""
    return (f"WHEN nullif({expr}, '') IS NOT NULL AND coalesce(try_cast(try_cast({expr} AS DOUBLE) AS BIGINT) "
            f"NOT BETWEEN 0 AND 65535, true) THEN '{what} is not a port number (0-65535): ' || left({expr}, 40)")


# -- stage 3: canonical rows per table --------------------------------------------------------------

_SNI_MISSING = "(target = 'application' AND coalesce(f_ActionReason, '') LIKE 'SNI TLS extension%')"

_FLOW_SELECT = f"""
CREATE OR REPLACE TEMP TABLE canon_flows AS
WITH legacy_rows AS (
  SELECT s.rid, s.ts AS time, s.firewall, s.target AS kind, s.log_format,
    coalesce(l.app.proto, l.net.proto, l.nat.proto) AS protocol,
    l.net.icmp_type AS icmp_type,
    coalesce(l.app.src, l.net.src, l.nat.src) AS source_ip,
    coalesce(l.app.sport, l.net.sport, l.nat.sport) AS source_port,
    coalesce(l.net.dst, l.nat.dst) AS destination_ip,
    l.app.host AS destination_fqdn,
    coalesce(l.app.dport, l.net.dport, l.nat.dport) AS destination_port,
    l.app.url AS target_url,
    CASE WHEN s.target = 'nat' THEN 'DNAT' ELSE coalesce(l.app.action, l.net.action) END AS action,
    rtrim(coalesce(l.app.tail, l.net.tail, l.nat.tail)) AS tail,
    l.nat.tip AS translated_ip, l.nat.tport AS translated_port,
    coalesce(l.app.proto, l.net.proto, l.nat.proto) IS NULL OR (s.target = 'nat' AND l.nat.tip = '') AS unparsed
  FROM stage s JOIN legacy l USING (rid)
  WHERE s.target IN ('application', 'network', 'nat')
), legacy_tails AS (
  -- each tail field extracted once; the older form puts `policy:group:collection` in Rule Collection
  SELECT *, nullif(rt.policy, '') AS t_policy, nullif(rt.rcg, '') AS t_rcg, nullif(rt.rc, '') AS t_rc,
         nullif(rt.rule, '') AS t_rule, nullif(rt.web, '') AS t_web
  FROM (SELECT *, CASE WHEN tail LIKE 'Policy: %' OR tail LIKE 'Rule Collection: %'
                       THEN regexp_extract(tail, {_lit(RULE_TAIL_RE)}, {_groups(RULE_TAIL_GROUPS)}) END AS rt
        FROM legacy_rows)
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
  FROM stage WHERE log_format = 'structured' AND target IN ('application', 'network', 'nat')
), unioned AS (
  SELECT * FROM legacy_canon UNION ALL BY NAME SELECT * FROM structured_canon
)
SELECT rid, log_format, unparsed,
  time, firewall, kind,
  {_proto('protocol')} AS protocol,
  try_cast(icmp_type AS INTEGER) AS icmp_type,
  nullif(source_ip, '') AS source_ip,
  -- port 0 is how structured logs write "no port" (ICMP, SNI-missing requests)
  CASE WHEN {_proto('protocol')} = 'ICMP' THEN NULL ELSE nullif(try_cast(nullif(source_port, '') AS INTEGER), 0) END AS source_port,
  nullif(destination_ip, '') AS destination_ip,
  {_name('destination_fqdn')} AS destination_fqdn,
  CASE WHEN {_proto('protocol')} = 'ICMP' THEN NULL ELSE nullif(try_cast(nullif(destination_port, '') AS INTEGER), 0) END AS destination_port,
  nullif(target_url, '') AS target_url,
  CASE lower(action) WHEN 'allow' THEN 'Allow' WHEN 'deny' THEN 'Deny' WHEN 'dnat' THEN 'DNAT' ELSE action END AS action,
  CASE WHEN lower(action) = 'deny' AND nullif(rtrim(rule), '') IS NULL AND {_reason('action_reason')} IS NULL
       THEN 'Default Action' ELSE {_reason('action_reason')} END AS action_reason,
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
    WHEN lower(action) NOT IN ('allow', 'deny', 'dnat') OR action IS NULL THEN 'missing or unknown action: ' || coalesce(action, 'none')
    WHEN nullif(source_port, '') IS NOT NULL AND try_cast(source_port AS INTEGER) IS NULL THEN 'source port is not an integer: ' || source_port
    WHEN nullif(destination_port, '') IS NOT NULL AND try_cast(destination_port AS INTEGER) IS NULL THEN 'destination port is not an integer: ' || destination_port
    {_bad_port('source_port', 'source port')}
    {_bad_port('destination_port', 'destination port')}
    {_bad_port('translated_port', 'translated port')}
  END AS reject_reason
FROM unioned
"""

_DNS_SELECT = f"""
CREATE OR REPLACE TEMP TABLE canon_dns AS
WITH legacy_rows AS (
  SELECT s.rid, s.ts AS time, s.firewall, s.log_format,
    coalesce(l.dns.src, '') AS source_ip, l.dns.sport AS source_port, l.dns.qid AS query_id,
    coalesce(l.dns.qtype, l.dns_err.qtype) AS query_type, l.dns.qclass AS query_class,
    coalesce(l.dns.qname, l.dns_err.qname) AS query_name, l.dns.proto AS protocol,
    l.dns.reqsize AS request_size, l.dns.dnssec AS dnssec_ok, l.dns.edns AS edns0_buffer_size,
    l.dns.rcode AS response_code, l.dns.flags AS response_flags, l.dns.respsize AS response_size,
    l.dns.dur AS duration_s, l.dns_err.errno AS error_number,
    regexp_extract(l.dns_err.detail, '([^:]*)$', 1) AS error_message,
    coalesce(l.dns.qname, l.dns_err.qname, '') = '' AS unparsed
  FROM stage s JOIN legacy l USING (rid)
  WHERE s.target = 'dns'
), structured_rows AS (
  SELECT rid, ts AS time, firewall, log_format,
    f_SourceIp AS source_ip, f_SourcePort AS source_port, f_QueryId AS query_id, f_QueryType AS query_type,
    f_QueryClass AS query_class, f_QueryName AS query_name, f_Protocol AS protocol,
    f_RequestSize AS request_size, f_DnssecOkBit AS dnssec_ok, f_EDNS0BufferSize AS edns0_buffer_size,
    f_ResponseCode AS response_code, f_ResponseFlags AS response_flags, f_ResponseSize AS response_size,
    f_RequestDurationSecs AS duration_s, f_ErrorNumber AS error_number, f_ErrorMessage AS error_message,
    f_QueryName IS NULL AS unparsed
  FROM stage WHERE log_format = 'structured' AND target = 'dns'
), unioned AS (
  SELECT *, (nullif(trim(error_message), '') IS NOT NULL OR coalesce({_int('error_number')}, 0) <> 0) AS failed
  FROM (SELECT * FROM legacy_rows UNION ALL BY NAME SELECT * FROM structured_rows)
)
SELECT rid, log_format, unparsed, time, firewall,
  -- a failed query keeps its client when named (structured rows; legacy error lines name none)
  nullif(source_ip, '') AS source_ip,
  nullif(try_cast(source_port AS INTEGER), 0) AS source_port,
  CASE WHEN NOT failed THEN try_cast(query_id AS INTEGER) END AS query_id,
  nullif(upper(rtrim(query_type, ':')), '') AS query_type,
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

_THREAT_SELECT = f"""
CREATE OR REPLACE TEMP TABLE canon_threats AS
WITH legacy_rows AS (
  SELECT s.rid, s.ts AS time, s.firewall, s.log_format, s.target AS kind,
    coalesce(l.ti.proto, l.ids.proto) AS protocol,
    coalesce(l.ti.src, l.ids.src) AS source_ip, coalesce(l.ti.sport, l.ids.sport) AS source_port,
    CASE WHEN s.target = 'idps' THEN l.ids.dst
         WHEN regexp_matches(l.ti.dst, '^\\d+\\.\\d+\\.\\d+\\.\\d+$') THEN l.ti.dst END AS destination_ip,
    coalesce(l.ti.dport, l.ids.dport) AS destination_port,
    CASE WHEN s.target = 'threat_intel' AND NOT regexp_matches(coalesce(l.ti.dst, ''), '^\\d+\\.\\d+\\.\\d+\\.\\d+$')
         THEN l.ti.dst END AS fqdn,
    l.ti.url AS target_url,
    coalesce(l.ti.action, l.ids.action) AS action,
    coalesce(l.ti.description, l.ids.description) AS description,
    l.ids.sid AS signature_id, l.ids.category AS category, l.ids.priority AS severity,
    CASE WHEN s.target = 'threat_intel' THEN false END AS is_tls_inspected,
    coalesce(l.ti.proto, l.ids.proto, '') = '' AS unparsed
  FROM stage s JOIN legacy l USING (rid)
  WHERE s.target IN ('threat_intel', 'idps')
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
  FROM stage WHERE log_format = 'structured' AND target IN ('threat_intel', 'idps')
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
FROM (SELECT * FROM legacy_rows UNION ALL BY NAME SELECT * FROM structured_rows)
"""


def _simple_select(name: str, target: str, exprs: dict[str, str], required: str) -> str:
    """Structured-only tables: a projection of the stage with types cast."""
    cols = ",\n  ".join(f"{expr} AS {col}" for col, expr in exprs.items())
    return f"""
CREATE OR REPLACE TEMP TABLE canon_{name} AS
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

# Reason prefix for an AZFW category this version does not know (`ingest` sums them up per run).
UNKNOWN_CATEGORY = "unknown Azure Firewall log category (newer than this EgressLens?): "

# Readers mark a line that is not UTF-8 (bad bytes as \xNN) so it is quarantined, never repaired.
INVALID_UTF8 = "\x00"

_REJECTS_SQL = f"""
CREATE OR REPLACE TEMP TABLE stage_rejects AS
SELECT s.rid,
  CASE
    WHEN starts_with(b.raw, chr(0)) THEN 'invalid UTF-8 (the bytes that are not UTF-8 are shown as \\xNN)'
    WHEN NOT json_valid(b.raw) THEN 'not valid JSON (truncated or corrupt record)'
    WHEN json_type(b.raw) <> 'OBJECT' THEN 'record is not a JSON object'
    WHEN s.log_format = 'legacy' THEN 'unrecognised Azure Firewall message text'
    WHEN s.log_category IS NULL THEN 'no category or table name: not an Azure Firewall log record'
    WHEN s.log_category IN ({", ".join(_lit(c) for c in LEGACY_CATEGORIES)})
      THEN s.log_category || ' record without its message text (properties.msg or msg_s)'
    WHEN s.log_category LIKE 'AZFW%' THEN {_lit(UNKNOWN_CATEGORY)} || s.log_category
    ELSE 'not an Azure Firewall log category: ' || s.log_category
  END AS reason
FROM stage s JOIN batch b USING (rid) WHERE s.target IS NULL
"""


def canonical_columns(table: Table) -> list[str]:
    """The columns that define an event (everything but bookkeeping)."""
    return [c for c in table.column_names if c not in ("event_id", "log_format", "ingest_run_id")]


# Which stage targets each canonical staging statement reads.
_TARGETS_OF = {
    "flows": {"application", "network", "nat"},
    "dns_queries": {"dns"},
    "threats": {"threat_intel", "idps"},
    **{name: {target} for name, (target, _, _) in _SIMPLE.items()},
}


def normalise_batch(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Turn the registered relation `batch` into `canon_*` staging tables and `stage_rejects`.

    Returns the names of the event tables that have records in this batch: only their staging tables
    are (re)built, so a batch of one category pays for one canonical statement, not nine."""
    try:
        con.execute(_stage_sql(guarded=False))
    except (duckdb.Error, UnicodeDecodeError):  # the error message may quote bytes that are not UTF-8
        con.execute(_stage_sql(guarded=True))
    present = {t for (t,) in con.execute("SELECT DISTINCT target FROM stage WHERE target IS NOT NULL").fetchall()}
    con.execute(_legacy_sql())
    built = []
    for name, targets in _TARGETS_OF.items():
        if not targets & present:
            continue
        if name == "flows":
            statement = _FLOW_SELECT
        elif name == "dns_queries":
            statement = _DNS_SELECT
        elif name == "threats":
            statement = _THREAT_SELECT
        else:
            statement = _simple_select(name, *_SIMPLE[name])
        con.execute(_with_event_id(statement, TABLES_BY_NAME[name]))
        built.append(name)
    con.execute(_REJECTS_SQL)
    return built


def _with_event_id(statement: str, table: Table) -> str:
    """A `CREATE ... canon_x AS <query>` statement whose rows also carry their `event_id` (NULL on rows
    that are refused), so the insert that follows reads it instead of computing it."""
    head, query = statement.split(" AS\n", 1)
    return (f"{head} AS SELECT CASE WHEN reject_reason IS NULL THEN {event_id_sql(table)} END AS event_id, * "
            f"FROM (\n{query}\n)")


def canon_table(table: Table) -> str:
    return _CANON_TABLE[table.name]


def event_id_sql(table: Table, alias: str = "") -> str:
    """MD5 over the canonical columns, NULL-safe and order-sensitive."""
    prefix = f"{alias}." if alias else ""
    parts = ", ".join(
        f"coalesce(CAST({prefix}{c} AS VARCHAR), chr(0))" for c in canonical_columns(table)
    )
    return f"md5(concat_ws(chr(31), {_lit(table.name)}, {parts}))"
