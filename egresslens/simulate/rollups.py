"""Hourly rollups of canonical rows, computed exactly as the Log Analytics summary KQL computes them.

`ingest loganalytics --mode summary` stores what `egresslens/queries/summary_flows.kql` and
`summary_dns.kql` return: hourly bins by firewall, kind, protocol, source, destination, port, action,
reason and rule (DNS: by client, name, type and response code), with the ids the summary ingest gives
them. The tests and benchmarks that need a store holding hours only as rollups build them from
simulated rows with this SQL, so those hours look exactly as they would after a summary ingest.

    con.execute(f"INSERT INTO flow_rollups BY NAME {flow_rollups_sql('flows')}")
"""

from __future__ import annotations


def flow_rollups_sql(source: str = "flows") -> str:
    """`flow_rollups` rows (all columns, `ingest_run_id` NULL) of the canonical flow rows in `source`."""
    return f"""
SELECT md5(concat_ws(chr(31), hour::VARCHAR, coalesce(firewall, ''), coalesce(kind, ''), coalesce(protocol, ''),
           coalesce(source_ip, ''), coalesce(destination_ip, ''), coalesce(destination_fqdn, ''),
           coalesce(destination_port::VARCHAR, ''), coalesce(action, ''), coalesce(action_reason, ''),
           coalesce(policy, ''), coalesce(rule_collection_group, ''), coalesce(rule_collection, ''),
           coalesce(rule, ''))) AS rollup_id, *, NULL::BIGINT AS ingest_run_id
FROM (
  SELECT date_trunc('hour', time) AS hour, lower(firewall) AS firewall, kind, upper(protocol) AS protocol, source_ip,
         CASE WHEN kind = 'application' THEN NULL ELSE destination_ip END AS destination_ip,
         CASE WHEN kind = 'application' THEN lower(rtrim(destination_fqdn, '.')) END AS destination_fqdn,
         destination_port, CASE WHEN kind = 'nat' THEN 'DNAT' ELSE action END AS action, action_reason,
         policy, rule_collection_group, rule_collection, trim(rule) AS rule,
         count(*)::BIGINT AS hits, min(time) AS first_seen, max(time) AS last_seen
  FROM {source} GROUP BY ALL
)
"""


def dns_rollups_sql(source: str = "dns_queries") -> str:
    """`dns_rollups` rows (all columns, `ingest_run_id` NULL) of the canonical DNS rows in `source`."""
    return f"""
SELECT md5(concat_ws(chr(31), hour::VARCHAR, coalesce(firewall, ''), coalesce(source_ip, ''),
           coalesce(query_name, ''), coalesce(query_type, ''), coalesce(response_code, ''))) AS rollup_id, *,
       NULL::BIGINT AS ingest_run_id
FROM (
  SELECT date_trunc('hour', time) AS hour, lower(firewall) AS firewall, source_ip,
         lower(rtrim(query_name, '.')) AS query_name, rtrim(query_type, ':') AS query_type, response_code,
         count(*)::BIGINT AS queries, count(nullif(error_message, ''))::BIGINT AS errors,
         coalesce(sum(duration_s), 0) AS total_duration_s, max(duration_s) AS max_duration_s,
         min(time) AS first_seen, max(time) AS last_seen
  FROM {source} GROUP BY ALL
)
"""
