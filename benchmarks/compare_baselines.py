"""The two baselines of `compare.py`, each run as its own process:

    python benchmarks/compare_baselines.py duckdb|pandas structured|legacy|csv INPUT_DIR DB_PATH

Each reads every record of the simulated input into typed `flows`, `dns_queries` and `threats`
tables, aggregates each table once, and prints {"records": N, ...} as one JSON line. Each does the work a
user's own script needs to get the answer EgressLens stores, and nothing more: every field parsed and
typed (timestamps included), firewall names, protocols, actions and FQDNs or query names in one form
(`tcp`/`TCP`, `allow`/`Allow`, `Example.COM.`/`example.com`), each record stored once (DuckDB: `SELECT
DISTINCT`; pandas: `drop_duplicates`), and the tables kept (DuckDB: a database file; pandas: one Parquet
file per table). No event ids, no quarantine (a bad line is skipped), no resumable progress. Legacy text is parsed with the same grammars as EgressLens
(`egresslens.legacy_grammar`), into the same fields (the rule part of a flow's message into policy, rule
collection group, rule collection, rule and web category), so the regex engines, not the patterns, are
compared.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

from egresslens import legacy_grammar as N

FLOW_CATEGORIES = ("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule")
THREAT_CATEGORIES = ("AZFWThreatIntel", "AZFWIdpsSignature")
DNS_CATEGORIES = ("AZFWDnsQuery",)
FLOW_FIELDS = {
    "Protocol": "VARCHAR", "SourceIp": "VARCHAR", "SourcePort": "INTEGER", "DestinationIp": "VARCHAR",
    "DestinationPort": "INTEGER", "Fqdn": "VARCHAR", "TargetUrl": "VARCHAR", "Action": "VARCHAR",
    "Policy": "VARCHAR", "RuleCollectionGroup": "VARCHAR", "RuleCollection": "VARCHAR", "Rule": "VARCHAR",
    "ActionReason": "VARCHAR", "IsTlsInspected": "BOOLEAN", "WebCategory": "VARCHAR",
    "IsExplicitProxyRequest": "BOOLEAN", "TranslatedIp": "VARCHAR", "TranslatedPort": "INTEGER",
}
DNS_FIELDS = {
    "SourceIp": "VARCHAR", "SourcePort": "INTEGER", "QueryId": "INTEGER", "QueryType": "VARCHAR",
    "QueryClass": "VARCHAR", "QueryName": "VARCHAR", "Protocol": "VARCHAR", "RequestSize": "INTEGER",
    "DnssecOkBit": "BOOLEAN", "EDNS0BufferSize": "INTEGER", "ResponseCode": "VARCHAR",
    "ResponseFlags": "VARCHAR", "ResponseSize": "INTEGER", "RequestDurationSecs": "DOUBLE",
    "ErrorNumber": "INTEGER", "ErrorMessage": "VARCHAR",
}
THREAT_FIELDS = {
    "Protocol": "VARCHAR", "SourceIp": "VARCHAR", "SourcePort": "INTEGER", "DestinationIp": "VARCHAR",
    "DestinationPort": "INTEGER", "Fqdn": "VARCHAR", "TargetUrl": "VARCHAR", "Action": "VARCHAR",
    "ThreatDescription": "VARCHAR", "IsTlsInspected": "BOOLEAN", "SignatureId": "VARCHAR",
    "Description": "VARCHAR", "Category": "VARCHAR", "Severity": "INTEGER",
}
TABLES = {"flows": (FLOW_CATEGORIES, FLOW_FIELDS), "dns_queries": (DNS_CATEGORIES, DNS_FIELDS),
          "threats": (THREAT_CATEGORIES, THREAT_FIELDS)}
# The same aggregate per table for both baselines.
GROUPS = {"flows": ["SourceIp", "Fqdn", "DestinationIp", "DestinationPort", "Action"],
          "dns_queries": ["QueryName", "ResponseCode"], "threats": ["Action"]}


# One form per value, as EgressLens stores them (the SQL expressions a user writes for it; pandas below).
def _sql_norm(col: str) -> str | None:
    name = col.lower()
    if name == "protocol":
        return f"upper(split_part(trim({col}), ' ', 1))"
    if name == "action":
        return (f"CASE lower({col}) WHEN 'allow' THEN 'Allow' WHEN 'deny' THEN 'Deny' WHEN 'dnat' THEN 'DNAT' "
                f"ELSE {col} END")
    if name in ("fqdn", "queryname", "query_name"):
        return f"CASE WHEN ends_with({col}, '.') THEN rtrim(lower({col}), '.') ELSE lower({col}) END"
    return None


def _distinct_normalised(con, table: str, select: str) -> None:
    """CREATE TABLE `table` from `select`: protocols, actions and names in one form, each row once."""
    cols = [c for (c,) in con.execute(f"SELECT column_name FROM (DESCRIBE {select})").fetchall()]
    replace = [f"{_sql_norm(c)} AS {c}" for c in cols if _sql_norm(c)]
    star = f"* REPLACE ({', '.join(replace)})" if replace else "*"
    con.execute(f"CREATE TABLE {table} AS SELECT DISTINCT {star} FROM ({select})")


def _files(data: Path, categories) -> list[str]:
    return sorted(f for c in categories for f in glob.glob(str(data / f"insights-logs-{c.lower()}" / "**" / "*.json"),
                                                             recursive=True))


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- DuckDB ------------------------------------------------------------------------------------------

def duckdb_structured(con, data: Path) -> None:
    for table, (cats, fields) in TABLES.items():
        props = ", ".join(f"{k} {v}" for k, v in fields.items())
        columns = f"{{time: 'TIMESTAMPTZ', resourceId: 'VARCHAR', category: 'VARCHAR', properties: 'STRUCT({props})'}}"
        _distinct_normalised(con, table, f"""
            SELECT time::TIMESTAMP AS time, lower(resourceId) AS firewall, category, unnest(properties)
            FROM read_json({_files(data, cats)}, format = 'newline_delimited', columns = {columns},
                           ignore_errors = true)""")


def duckdb_csv(con, data: Path) -> None:
    for table, (cats, fields) in TABLES.items():
        paths = [str(data / f"{c}.csv") for c in cats if (data / f"{c}.csv").exists()]
        types = {"TimeGenerated": "TIMESTAMPTZ", **{k: v for k, v in fields.items()}}
        selects = []
        for p in paths:
            con.execute(f"CREATE OR REPLACE TEMP VIEW f AS SELECT * FROM read_csv({_lit(p)}, header = true, "
                        f"ignore_errors = true, types = {json.dumps(types)})")
            have = {r[0] for r in con.execute("DESCRIBE f").fetchall()}
            cols = ", ".join(k if k in have else f"NULL::{v} AS {k}" for k, v in fields.items())
            selects.append(f"SELECT TimeGenerated::TIMESTAMP AS time, lower(_ResourceId) AS firewall, Type AS category, "
                           f"{cols} FROM read_csv({_lit(p)}, header = true, ignore_errors = true, "
                           f"types = {json.dumps(types)})")
        _distinct_normalised(con, table, " UNION ALL ".join(selects))


def duckdb_legacy(con, data: Path) -> None:
    files = sorted(glob.glob(str(data / "**" / "*.json"), recursive=True))
    con.execute(f"""CREATE TEMP TABLE raw AS
        SELECT time::TIMESTAMP AS time, lower(resourceId) AS firewall, category, properties.msg AS msg
        FROM read_json({files}, format = 'newline_delimited', ignore_errors = true,
             columns = {{time: 'TIMESTAMPTZ', resourceId: 'VARCHAR', category: 'VARCHAR',
                         properties: 'STRUCT(msg VARCHAR)'}})""")

    def grammar(pattern, groups):
        return f"regexp_extract(msg, {_lit(pattern)}, [{', '.join(_lit(g) for g in groups)}])"

    _distinct_normalised(con, "flows", f"""
        SELECT time, firewall, category,
               coalesce(a.proto, n.proto, d.proto) AS protocol, coalesce(a.src, n.src, d.src) AS source_ip,
               try_cast(coalesce(a.sport, n.sport, d.sport) AS INTEGER) AS source_port,
               coalesce(n.dst, d.dst) AS destination_ip, a.host AS fqdn,
               try_cast(coalesce(a.dport, n.dport, d.dport) AS INTEGER) AS destination_port,
               coalesce(a.action, n.action, 'DNAT') AS action, a.url AS target_url,
               -- the rule part of the message, in its fields (policy, group, collection, rule, web category)
               rt.policy, rt.rcg AS rule_collection_group, rt.rc AS rule_collection, rt.rule, rt.web AS web_category,
               d.tip AS translated_ip, try_cast(d.tport AS INTEGER) AS translated_port
        FROM (SELECT *, regexp_extract(coalesce(a.tail, n.tail, d.tail), {_lit(N.RULE_TAIL_RE)},
                                       [{', '.join(_lit(g) for g in N.RULE_TAIL_GROUPS)}]) AS rt FROM (SELECT *,
                CASE WHEN kind = 'app' THEN {grammar(N.APP_RE, N.APP_GROUPS)} END AS a,
                CASE WHEN kind = 'net' THEN {grammar(N.NET_RE, N.NET_GROUPS)} END AS n,
                CASE WHEN kind = 'nat' THEN {grammar(N.NAT_RE, N.NAT_GROUPS)} END AS d
              FROM (SELECT *, CASE WHEN contains(msg, ' was DNAT''ed to ') THEN 'nat'
                                   WHEN category = 'AzureFirewallApplicationRule' THEN 'app' ELSE 'net' END AS kind
                    FROM raw WHERE category <> 'AzureFirewallDnsProxy'
                      AND NOT contains(msg, ' ThreatIntel: ') AND NOT contains(msg, ' IDS: '))))""")
    _distinct_normalised(con, "dns_queries", f"""
        SELECT time, firewall, x.src AS source_ip, try_cast(x.sport AS INTEGER) AS source_port, try_cast(x.qid AS INTEGER) AS query_id,
               x.qtype AS query_type, x.qclass AS query_class, x.qname AS query_name, x.proto AS protocol,
               try_cast(x.reqsize AS INTEGER) AS request_size, x.dnssec = 'true' AS dnssec_ok,
               try_cast(x.edns AS INTEGER) AS edns0_buffer_size, x.rcode AS response_code,
               x.flags AS response_flags, try_cast(x.respsize AS INTEGER) AS response_size, try_cast(x.dur AS DOUBLE) AS duration_s
        FROM (SELECT *, {grammar(N.DNS_RE, N.DNS_GROUPS)} AS x FROM raw WHERE category = 'AzureFirewallDnsProxy')""")
    _distinct_normalised(con, "threats", f"""
        SELECT time, firewall, coalesce(t.proto, i.proto) AS protocol, coalesce(t.src, i.src) AS source_ip,
               coalesce(t.dst, i.dst) AS destination, coalesce(t.action, i.action) AS action,
               coalesce(t.description, i.description) AS description, i.sid AS signature_id
        FROM (SELECT *,
                CASE WHEN contains(msg, ' ThreatIntel: ') THEN {grammar(N.TI_RE, N.TI_GROUPS)} END AS t,
                CASE WHEN contains(msg, ' IDS: ') THEN {grammar(N.IDS_RE, N.IDS_GROUPS)} END AS i
              FROM raw WHERE contains(msg, ' ThreatIntel: ') OR contains(msg, ' IDS: '))""")


def _snake(name: str) -> str:
    return {"SourceIp": "source_ip", "Fqdn": "fqdn", "DestinationIp": "destination_ip", "DestinationPort": "destination_port",
            "Action": "action", "QueryName": "query_name", "ResponseCode": "response_code"}[name]


def run_duckdb(form: str, data: Path, db: str) -> dict:
    import duckdb

    con = duckdb.connect(db)
    {"structured": duckdb_structured, "legacy": duckdb_legacy, "csv": duckdb_csv}[form](con, data)
    records = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}
    for t in TABLES:  # the aggregate a user runs next (legacy tables name their columns in snake case)
        wanted = {g.lower() for g in GROUPS[t]} | {_snake(g) for g in GROUPS[t]}
        cols = [c for (c,) in con.execute(f"SELECT column_name FROM (DESCRIBE {t})").fetchall() if c.lower() in wanted]
        con.execute(f"SELECT {', '.join(cols)}, count(*) FROM {t} GROUP BY ALL").fetchall()
    con.close()
    return records


# -- pandas ------------------------------------------------------------------------------------------

def _py_regex(pattern: str) -> str:
    return pattern.replace(r"\x{2013}", "\u2013")


def _read_json_lines(f: str):
    """`pd.read_json(lines=True)`; a file with a corrupt line is read again without that line."""
    import pandas as pd

    try:
        df = pd.read_json(f, lines=True, dtype=False)
    except ValueError:
        records = []
        for line in open(f, encoding="utf-8", errors="replace"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        df = pd.DataFrame([r for r in records if isinstance(r, dict)])
    if "properties" not in df.columns:
        return df.iloc[0:0].assign(properties=[])
    return df[df["properties"].map(lambda p: isinstance(p, dict))].reset_index(drop=True)


def _col(df, name: str):
    import pandas as pd

    return df[name] if name in df.columns else pd.Series(None, index=df.index, dtype=object)


def run_pandas(form: str, data: Path, db: str) -> dict:
    import pandas as pd

    parts: dict[str, list] = {t: [] for t in TABLES}
    if form == "structured":
        for table, (cats, _) in TABLES.items():
            for f in _files(data, cats):
                df = _read_json_lines(f)
                props = pd.json_normalize(df["properties"].tolist())
                props["time"] = pd.to_datetime(_col(df, "time"), utc=True, format="ISO8601", errors="coerce")
                props["firewall"] = _col(df, "resourceId").str.lower()
                parts[table].append(props)
    elif form == "csv":
        for table, (cats, _) in TABLES.items():
            for c in cats:
                if (data / f"{c}.csv").exists():
                    df = pd.read_csv(data / f"{c}.csv", keep_default_na=False, na_values=[""])
                    df["time"] = pd.to_datetime(df["TimeGenerated"], utc=True, format="ISO8601")
                    parts[table].append(df)
    else:
        grammars = {
            "app": (N.APP_RE, N.APP_GROUPS), "net": (N.NET_RE, N.NET_GROUPS), "nat": (N.NAT_RE, N.NAT_GROUPS),
            "dns": (N.DNS_RE, N.DNS_GROUPS), "ti": (N.TI_RE, N.TI_GROUPS), "ids": (N.IDS_RE, N.IDS_GROUPS),
        }
        for f in sorted(glob.glob(str(data / "**" / "*.json"), recursive=True)):
            df = _read_json_lines(f)
            props = pd.json_normalize(df["properties"].tolist())
            msg = props["msg"].fillna("").astype(str) if "msg" in props else pd.Series("", index=df.index)
            kind = pd.Series("net", index=df.index)
            category = _col(df, "category")
            kind[category == "AzureFirewallApplicationRule"] = "app"
            kind[category == "AzureFirewallDnsProxy"] = "dns"
            kind[msg.str.contains(" was DNAT'ed to ", regex=False)] = "nat"
            kind[msg.str.contains(" ThreatIntel: ", regex=False)] = "ti"
            kind[msg.str.contains(" IDS: ", regex=False)] = "ids"
            for k, (pattern, groups) in grammars.items():
                sel = kind == k
                if not sel.any():
                    continue
                x = msg[sel].str.extract(_py_regex(pattern))
                x.columns = groups
                if "tail" in groups:  # the rule part of the message, in its fields, as the DuckDB script reads it
                    rt = x["tail"].fillna("").str.extract(_py_regex(N.RULE_TAIL_RE))
                    rt.columns = N.RULE_TAIL_GROUPS
                    x = x.drop(columns=["tail"]).join(rt)
                x["time"] = pd.to_datetime(_col(df, "time")[sel], utc=True, format="ISO8601", errors="coerce")
                table = {"dns": "dns_queries", "ti": "threats", "ids": "threats"}.get(k, "flows")
                parts[table].append(x.rename(columns={"src": "SourceIp", "dst": "DestinationIp", "host": "Fqdn",
                                                      "dport": "DestinationPort", "action": "Action",
                                                      "qname": "QueryName", "rcode": "ResponseCode"}))
    records = {}
    out = Path(db + ".parquet")
    out.mkdir(parents=True, exist_ok=True)
    for table, frames in parts.items():
        df = _pandas_typed_once(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
        df.to_parquet(out / f"{table}.parquet", index=False)
        records[table] = len(df)
        cols = [c for c in GROUPS[table] if c in df.columns]
        if cols:
            df.groupby(cols, dropna=False).size()
    return records


_PD_INTS = {"sport", "tport", "icmp_type", "qid", "reqsize", "edns", "respsize", "sid", "priority", "DestinationPort"}
_PD_BOOLS = {"IsTlsInspected", "IsExplicitProxyRequest", "DnssecOkBit", "dnssec"}


def _pandas_typed_once(df):
    """What the DuckDB script's `SELECT DISTINCT` with one form per value does, the way a pandas user writes
    it: numbers and flags typed (legacy text gives strings; a CSV export gives flags as 0/1), protocols,
    actions and names in one form, then each row once."""
    import pandas as pd

    for col in df.columns:
        if col in _PD_INTS and not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        elif col == "dur":
            df[col] = pd.to_numeric(df[col], errors="coerce")
        elif col in _PD_BOOLS and pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            df[col] = df[col].astype(bool)
        elif col in _PD_BOOLS and not pd.api.types.is_bool_dtype(df[col]):
            df[col] = df[col].astype(str).str.lower().map({"true": True, "1": True, "false": False, "0": False})
        elif col.lower() in ("protocol", "proto"):
            df[col] = df[col].str.strip().str.replace(r"\s.*$", "", regex=True).str.upper()
        elif col.lower() == "action":
            df[col] = df[col].replace({"allow": "Allow", "deny": "Deny", "dnat": "DNAT", "ALLOW": "Allow",
                                       "DENY": "Deny"})
        elif col in ("Fqdn", "QueryName"):
            df[col] = df[col].str.lower().str.rstrip(".")
    return df.drop_duplicates(ignore_index=True)


def main() -> int:
    contender, form, data, db = sys.argv[1:5]
    t = time.perf_counter()
    records = (run_duckdb if contender == "duckdb" else run_pandas)(form, Path(data), db)
    print(json.dumps({"records": sum(records.values()), "per_table": records,
                      "seconds_inside": round(time.perf_counter() - t, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
