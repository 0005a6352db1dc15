"""The canonical store's tables: the contract that every feature and users' own SQL rely on.

Kept as data so the DDL, the README's table reference and the tests all come from one place.
Semantics that hold for every table:

* ``time`` is a ``TIMESTAMP`` in UTC (microsecond precision; a 7th fractional digit is truncated).
* ``firewall`` is the lower-case ARM resource id when the record carries one, else the lower-case
  firewall name.
* Empty strings in the source become ``NULL``; names (FQDNs, query names) are lower case without a
  trailing dot; rule names are trimmed.
* ``event_id`` is a deterministic key over the canonical fields (their MD5 as a UUID: 16 bytes, DuckDB's
  ``md5_number(...)::UUID``), so the same event delivered twice, or once as legacy text and once
  structured, is stored once.
* ``log_format`` is ``structured`` (AZFW* tables / properties columns) or ``legacy``
  (AzureDiagnostics ``msg_s`` text).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    doc: str


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _t(name: str, doc: str, *cols: tuple[str, str, str]) -> Table:
    return Table(name, doc, tuple(Column(*c) for c in cols))


_EVENT = (
    ("event_id", "UUID", "deterministic key over the canonical fields (their MD5, as a UUID)"),
    ("time", "TIMESTAMP", "event time, UTC"),
    ("firewall", "VARCHAR", "lower-case ARM id of the firewall, or its name"),
)
_TAIL = (
    ("log_format", "VARCHAR", "`structured` or `legacy`"),
    ("ingest_run_id", "BIGINT", "the ingest run that stored the row (see `ingest_runs`)"),
)
_RULE = (
    ("policy", "VARCHAR", "firewall policy name"),
    ("rule_collection_group", "VARCHAR", "rule collection group"),
    ("rule_collection", "VARCHAR", "rule collection"),
    ("rule", "VARCHAR", "rule name, trimmed"),
)

FLOWS = _t(
    "flows",
    "One row per application, network or NAT rule log event.",
    *_EVENT,
    ("kind", "VARCHAR", "`application`, `network` or `nat`"),
    ("protocol", "VARCHAR", "upper case: HTTP, HTTPS, MSSQL, TCP, UDP, ICMP"),
    ("icmp_type", "INTEGER", "ICMP type when the legacy text gives it (structured logs do not)"),
    ("source_ip", "VARCHAR", "client address"),
    ("source_port", "INTEGER", "client port (NULL for ICMP)"),
    ("destination_ip", "VARCHAR", "destination address (network and NAT rules)"),
    ("destination_fqdn", "VARCHAR", "requested name (application rules), lower case, no trailing dot"),
    ("destination_port", "INTEGER", "destination port (NULL for ICMP and SNI-missing requests)"),
    ("target_url", "VARCHAR", "URL when HTTP or TLS-inspected: scheme, host and path; query values dropped unless EGRESSLENS_KEEP_URL_QUERY=1"),
    ("action", "VARCHAR", "`Allow`, `Deny` or `DNAT`"),
    ("action_reason", "VARCHAR", "`Default Action` when no rule matched, SNI missing, resolution failure text"),
    *_RULE,
    ("web_category", "VARCHAR", "web category of the destination, when logged"),
    ("translated_ip", "VARCHAR", "DNAT target address"),
    ("translated_port", "INTEGER", "DNAT target port"),
    ("is_tls_inspected", "BOOLEAN", "TLS inspection applied (legacy: inferred from a URL on HTTPS)"),
    ("is_explicit_proxy", "BOOLEAN", "request came through the explicit proxy (legacy: false)"),
    *_TAIL,
)

THREATS = _t(
    "threats",
    "Threat-intelligence and IDPS events.",
    *_EVENT,
    ("kind", "VARCHAR", "`threat_intel` or `idps`"),
    ("protocol", "VARCHAR", "upper case, version suffix removed (`HTTP/1.1` -> `HTTP`)"),
    ("source_ip", "VARCHAR", "client address"),
    ("source_port", "INTEGER", "client port"),
    ("destination_ip", "VARCHAR", "destination address, when known"),
    ("destination_port", "INTEGER", "destination port"),
    ("fqdn", "VARCHAR", "destination name, lower case, when known"),
    ("target_url", "VARCHAR", "URL, when logged (query values dropped, as in `flows`)"),
    ("action", "VARCHAR", "lower case: `alert`, `deny` or `drop`"),
    ("description", "VARCHAR", "threat description or IDPS signature description"),
    ("signature_id", "VARCHAR", "IDPS signature id"),
    ("category", "VARCHAR", "IDPS classification"),
    ("severity", "INTEGER", "IDPS severity / priority, 1 high .. 4 informational"),
    ("is_tls_inspected", "BOOLEAN", "TLS inspection applied (threat intel, structured only)"),
    *_TAIL,
)

DNS_QUERIES = _t(
    "dns_queries",
    "DNS proxy queries, upstream failures included as rows with `error_message`.",
    *_EVENT,
    ("source_ip", "VARCHAR", "client address (NULL on upstream-failure rows)"),
    ("source_port", "INTEGER", "client port"),
    ("query_id", "INTEGER", "DNS message id"),
    ("query_type", "VARCHAR", "A, AAAA, TXT, ... (trailing colon of failure rows removed)"),
    ("query_class", "VARCHAR", "IN"),
    ("query_name", "VARCHAR", "lower case, no trailing dot"),
    ("protocol", "VARCHAR", "lower case udp / tcp"),
    ("request_size", "INTEGER", "request bytes"),
    ("dnssec_ok", "BOOLEAN", "DNSSEC OK bit"),
    ("edns0_buffer_size", "INTEGER", "EDNS0 buffer size"),
    ("response_code", "VARCHAR", "NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ..."),
    ("response_flags", "VARCHAR", "comma list like `qr,rd,ra` (NULL when none)"),
    ("response_size", "INTEGER", "response bytes"),
    ("duration_s", "DOUBLE", "request duration in seconds"),
    ("error_number", "INTEGER", "upstream error number (failure rows)"),
    ("error_message", "VARCHAR", "upstream error, e.g. `i/o timeout` (failure rows)"),
    *_TAIL,
)

FQDN_RESOLUTION_FAILURES = _t(
    "fqdn_resolution_failures",
    "The firewall failed to resolve an FQDN used in a rule (AZFWInternalFqdnResolutionFailure).",
    *_EVENT,
    ("fqdn", "VARCHAR", "name that failed, lower case"),
    ("error", "VARCHAR", "resolver error"),
    ("server_ip", "VARCHAR", "DNS server asked"),
    ("server_port", "INTEGER", "DNS server port"),
    *_RULE,
    *_TAIL,
)

FAT_FLOWS = _t(
    "fat_flows",
    "Top flows, at least 1 Mbps, sampled every 3 minutes (AZFWFatFlow).",
    *_EVENT,
    ("protocol", "VARCHAR", "upper case"),
    ("source_ip", "VARCHAR", ""),
    ("source_port", "INTEGER", ""),
    ("destination_ip", "VARCHAR", ""),
    ("destination_port", "INTEGER", ""),
    ("flow_rate_mbps", "DOUBLE", "flow rate in Mbps"),
    *_TAIL,
)

FLOW_TRACES = _t(
    "flow_traces",
    "TCP flags per flow (AZFWFlowTrace, opt-in).",
    *_EVENT,
    ("protocol", "VARCHAR", "upper case"),
    ("source_ip", "VARCHAR", ""),
    ("source_port", "INTEGER", ""),
    ("destination_ip", "VARCHAR", ""),
    ("destination_port", "INTEGER", ""),
    ("action", "VARCHAR", "Allow / Deny"),
    ("action_reason", "VARCHAR", ""),
    ("flag", "VARCHAR", "SYN-ACK, FIN, FIN-ACK, RST, INVALID"),
    *_TAIL,
)

APPLICATION_RULE_AGGREGATIONS = _t(
    "application_rule_aggregations",
    "Hourly application-rule aggregates written by the firewall for Policy Analytics.",
    *_EVENT,
    ("source_ip", "VARCHAR", ""),
    ("protocol", "VARCHAR", "upper case"),
    ("destination_port", "INTEGER", ""),
    ("fqdn", "VARCHAR", "lower case"),
    ("target_url", "VARCHAR", "query values dropped, as in `flows`"),
    ("action", "VARCHAR", "Allow / Deny"),
    ("action_reason", "VARCHAR", ""),
    *_RULE,
    ("hits", "BIGINT", "ApplicationRuleCount"),
    *_TAIL,
)

NETWORK_RULE_AGGREGATIONS = _t(
    "network_rule_aggregations",
    "Hourly network-rule aggregates written by the firewall for Policy Analytics.",
    *_EVENT,
    ("source_ip", "VARCHAR", ""),
    ("protocol", "VARCHAR", "upper case"),
    ("destination_ip", "VARCHAR", ""),
    ("destination_port", "INTEGER", ""),
    ("action", "VARCHAR", "Allow / Deny"),
    ("action_reason", "VARCHAR", ""),
    *_RULE,
    ("is_default_rule", "BOOLEAN", ""),
    ("hits", "BIGINT", "NetworkRuleCount"),
    *_TAIL,
)

NAT_RULE_AGGREGATIONS = _t(
    "nat_rule_aggregations",
    "Hourly NAT-rule aggregates written by the firewall for Policy Analytics.",
    *_EVENT,
    ("source_ip", "VARCHAR", ""),
    ("protocol", "VARCHAR", "upper case"),
    ("translated_ip", "VARCHAR", ""),
    ("translated_port", "INTEGER", ""),
    *_RULE,
    ("hits", "BIGINT", "NatRuleCount"),
    *_TAIL,
)

FLOW_ROLLUPS = _t(
    "flow_rollups",
    "Hourly flow aggregates computed in Log Analytics (`ingest loganalytics --mode summary`).",
    ("rollup_id", "VARCHAR", "deterministic key over the grouping columns"),
    ("hour", "TIMESTAMP", "start of the hour, UTC"),
    ("firewall", "VARCHAR", "lower-case ARM id of the firewall, or its name"),
    ("kind", "VARCHAR", "`application`, `network` or `nat`"),
    ("protocol", "VARCHAR", "upper case"),
    ("source_ip", "VARCHAR", "client address"),
    ("destination_ip", "VARCHAR", "destination address (network and NAT rules)"),
    ("destination_fqdn", "VARCHAR", "requested name (application rules)"),
    ("destination_port", "INTEGER", "destination port"),
    ("action", "VARCHAR", "`Allow`, `Deny` or `DNAT`"),
    ("action_reason", "VARCHAR", "as in `flows`"),
    *_RULE,
    ("hits", "BIGINT", "events in the hour"),
    ("first_seen", "TIMESTAMP", "first event in the hour"),
    ("last_seen", "TIMESTAMP", "last event in the hour"),
    ("ingest_run_id", "BIGINT", "run that stored the row"),
)

DNS_ROLLUPS = _t(
    "dns_rollups",
    "Hourly DNS-proxy aggregates computed in Log Analytics (`--mode summary`).",
    ("rollup_id", "VARCHAR", "deterministic key over the grouping columns"),
    ("hour", "TIMESTAMP", "start of the hour, UTC"),
    ("firewall", "VARCHAR", "lower-case ARM id of the firewall, or its name"),
    ("source_ip", "VARCHAR", "client address"),
    ("query_name", "VARCHAR", "lower case, no trailing dot"),
    ("query_type", "VARCHAR", "A, AAAA, TXT, ..."),
    ("response_code", "VARCHAR", "NOERROR, NXDOMAIN, ..."),
    ("queries", "BIGINT", "queries in the hour"),
    ("errors", "BIGINT", "upstream failures in the hour"),
    ("total_duration_s", "DOUBLE", "sum of durations"),
    ("max_duration_s", "DOUBLE", "slowest query"),
    ("first_seen", "TIMESTAMP", "first query in the hour"),
    ("last_seen", "TIMESTAMP", "last query in the hour"),
    ("ingest_run_id", "BIGINT", "run that stored the row"),
)

METRICS = _t(
    "metrics",
    "Azure Firewall platform metrics (SNATPortUtilization, Throughput, rule hits, health), one row per time grain.",
    ("metric_id", "VARCHAR", "deterministic key over firewall, metric, dimension and time"),
    ("time", "TIMESTAMP", "start of the time grain, UTC"),
    ("firewall", "VARCHAR", "lower-case ARM id of the firewall"),
    ("metric", "VARCHAR", "metric name, e.g. `SNATPortUtilization`"),
    ("dimension", "VARCHAR", "dimension values as `Name=value` pairs joined by `;` (NULL when none)"),
    ("unit", "VARCHAR", "Percent, BitsPerSecond, Count, ..."),
    ("grain_s", "INTEGER", "time grain in seconds"),
    ("average", "DOUBLE", ""),
    ("minimum", "DOUBLE", ""),
    ("maximum", "DOUBLE", ""),
    ("total", "DOUBLE", ""),
    ("count", "DOUBLE", ""),
    ("ingest_run_id", "BIGINT", "run that stored the row"),
)

QUARANTINE = _t(
    "quarantine",
    "Every record that could not be parsed, kept with its raw text and the reason.",
    ("quarantine_id", "VARCHAR", "deterministic key over source, position and raw text"),
    ("source", "VARCHAR", "file path, blob name or query window"),
    ("position", "BIGINT", "line number (1-based) or record index within the source"),
    ("raw", "VARCHAR", "the record's raw text"),
    ("reason", "VARCHAR", "why it could not be parsed"),
    ("ingest_run_id", "BIGINT", "run that quarantined it"),
    ("quarantined_at", "TIMESTAMP", "when, UTC"),
)

INGEST_RUNS = _t(
    "ingest_runs",
    "One row per ingest run. Invariant: records_read = stored + duplicates + quarantined.",
    ("run_id", "BIGINT", "run number"),
    ("started_at", "TIMESTAMP", "UTC"),
    ("finished_at", "TIMESTAMP", "UTC, NULL while running or after a crash"),
    ("source_kind", "VARCHAR", "`files`, `loganalytics`, `storage`, ..."),
    ("sources", "VARCHAR", "what was read (paths, workspace, container)"),
    ("status", "VARCHAR", "`running`; `completed`; `failed` (an error stopped it); `interrupted` (Ctrl-C or a kill: "
               "its committed batches are kept and the next run resumes after them)"),
    ("records_read", "BIGINT", "records read"),
    ("stored", "BIGINT", "new rows stored"),
    ("duplicates", "BIGINT", "records already in the store (or repeated within the run)"),
    ("quarantined", "BIGINT", "records sent to quarantine"),
    ("message", "VARCHAR", "error of a failed run, or the files a run skipped and why"),
)

INGEST_SOURCES = _t(
    "ingest_sources",
    "Progress per input (file, blob, query window) so an interrupted run resumes where it stopped.",
    ("source", "VARCHAR", "absolute path, blob name or window key"),
    ("size", "BIGINT", "bytes when last seen"),
    ("mtime_ns", "BIGINT", "modification time when last seen (files)"),
    ("records_done", "BIGINT", "records committed so far"),
    ("offset_done", "BIGINT", "bytes (uncompressed) committed so far"),
    ("complete", "BOOLEAN", "the whole source has been committed"),
    ("updated_at", "TIMESTAMP", "UTC"),
)

STORAGE_BLOBS = Table(
    "storage_blobs",
    "What `ingest storage` last saw of each blob, to skip unchanged blobs and spot rewritten ones.",
    tuple(Column(*c) for c in (
        ("source", "VARCHAR", "`<account>/<container>/<blob name>`, as in `ingest_sources`"),
        ("etag", "VARCHAR", "etag when last listed"),
        ("fmt", "VARCHAR", "`jsonl`, `document` or `gzip`"),
        ("head_len", "INTEGER", "bytes fingerprinted at the start of the blob"),
        ("head_md5", "VARCHAR", "MD5 of those bytes"),
        ("updated_at", "TIMESTAMP", "UTC"),
    )),
    primary_key=("source",),
)

POLICY_SNAPSHOTS = _t(
    "policy_snapshots",
    "Each read of the estate (policies with their parents, classic rules, IP Groups) whose content differed "
    "from the read before it; analyses of a window use the snapshot in force at its end.",
    ("snapshot_id", "VARCHAR", "key of the snapshot"),
    ("taken_at", "TIMESTAMP", "when this content was first read, UTC"),
    ("confirmed_at", "TIMESTAMP", "when the same content was last read again, UTC"),
    ("source", "VARCHAR", "`azure: <ids>` or the export files read"),
    ("digest", "VARCHAR", "hash of the content (equal digests: equal estates)"),
    ("policies", "INTEGER", "policies in the snapshot"),
    ("firewalls", "INTEGER", "firewalls in the snapshot"),
    ("ip_groups", "INTEGER", "IP Groups in the snapshot"),
    ("rules", "INTEGER", "rules in the snapshot (each policy's own, classic firewalls' rules)"),
    ("estate", "VARCHAR", "the whole snapshot as JSON (what `egresslens.estate.Estate.from_dict` reads)"),
)

POLICY_RULES = _t(
    "policy_rules",
    "The rules of each snapshot, one row per rule of each policy (its own, not inherited) or classic firewall.",
    ("snapshot_id", "VARCHAR", "the snapshot (see `policy_snapshots`)"),
    ("policy", "VARCHAR", "policy name, or the firewall's name for classic rules"),
    ("parent_policy", "VARCHAR", "the policy's parent (base) policy, when it has one"),
    ("rule_collection_group", "VARCHAR", "rule collection group (empty for classic rules)"),
    ("rule_collection", "VARCHAR", "rule collection"),
    ("rule", "VARCHAR", "rule name"),
    ("rule_type", "VARCHAR", "`application`, `network` or `nat`"),
    ("action", "VARCHAR", "`Allow`, `Deny` or `DNAT`"),
    ("rule_collection_group_priority", "INTEGER", "group priority"),
    ("rule_collection_priority", "INTEGER", "collection priority"),
    ("position", "INTEGER", "the rule's place in its collection, from 0"),
    ("sources", "VARCHAR[]", "source addresses and `ipgroup:<name>` references"),
    ("destinations", "VARCHAR[]", "target FQDNs, `tag:` FQDN tags, addresses, FQDNs, `ipgroup:` and `category:` entries"),
    ("ports", "VARCHAR[]", "`Https:443` (application) or `TCP:443` (network) entries"),
    ("rule_digest", "VARCHAR", "hash of everything above but the names (equal digests: an unchanged rule)"),
)

IP_GROUP_MEMBERS = _t(
    "ip_group_members",
    "The members of each IP Group in each snapshot.",
    ("snapshot_id", "VARCHAR", "the snapshot"),
    ("ip_group", "VARCHAR", "IP Group name"),
    ("ip_group_id", "VARCHAR", "its ARM id"),
    ("address", "VARCHAR", "an address, CIDR or range"),
)

EVENT_TABLES: tuple[Table, ...] = (
    FLOWS,
    THREATS,
    DNS_QUERIES,
    FQDN_RESOLUTION_FAILURES,
    FAT_FLOWS,
    FLOW_TRACES,
    APPLICATION_RULE_AGGREGATIONS,
    NETWORK_RULE_AGGREGATIONS,
    NAT_RULE_AGGREGATIONS,
)
ROLLUP_TABLES: tuple[Table, ...] = (FLOW_ROLLUPS, DNS_ROLLUPS, METRICS)
BOOKKEEPING_TABLES: tuple[Table, ...] = (QUARANTINE, INGEST_RUNS, INGEST_SOURCES, STORAGE_BLOBS)
ESTATE_TABLES: tuple[Table, ...] = (POLICY_SNAPSHOTS, POLICY_RULES, IP_GROUP_MEMBERS)
ALL_TABLES: tuple[Table, ...] = EVENT_TABLES + ROLLUP_TABLES + BOOKKEEPING_TABLES + ESTATE_TABLES
TABLES_BY_NAME = {t.name: t for t in ALL_TABLES}


def create_table_sql(table: Table) -> str:
    cols = [f"{c.name} {c.type}" for c in table.columns]
    if table.primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    body = ",\n  ".join(cols)
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n  {body}\n)"


def markdown_reference() -> str:
    """The table reference as Markdown, for docs/store.md."""
    out: list[str] = []
    for t in ALL_TABLES:
        out.append(f"## `{t.name}`\n\n{t.doc}\n\n| column | type | meaning |\n|---|---|---|")
        out.extend(f"| `{c.name}` | {c.type} | {c.doc} |" for c in t.columns)
        out.append("")
    return "\n".join(out)
