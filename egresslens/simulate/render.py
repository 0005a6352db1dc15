"""Render canonical simulator rows as the raw records Azure Firewall writes, and file them.

Everything is whole-frame Polars string work (``concat_str``, ``struct.json_encode``), hour by hour,
so tens of millions of rows can be written without holding their text in memory at once.
Record shapes follow ``/work/shared/reference/azure-firewall-logs.md`` sections 3 and 4.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from egresslens import atomic
from egresslens.simulate.base import (
    FIREWALL_INSTANCE_IPS,
    FIREWALL_NAME,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    Scenario,
    _uniform,
)
from egresslens.simulate.scenario import (
    _naive_utc,
    _World,
    build_truth,
    check_args,
    default_start,
    iter_hours,
    used_rules,
)

RESOURCE_ID = (
    f"/SUBSCRIPTIONS/{SUBSCRIPTION}/RESOURCEGROUPS/{RESOURCE_GROUP}"
    f"/PROVIDERS/MICROSOFT.NETWORK/AZUREFIREWALLS/{FIREWALL_NAME}"
).upper()
TENANT_ID = "8d2c4f6e-1a3b-4c5d-9e7f-0a1b2c3d4e5f"
UPSTREAM_DNS = "168.63.129.16:53"
EVENTHUB_BATCH = 500

FORMATS = ("structured", "legacy", "both")
LAYOUTS = ("storage", "eventhub", "csv")

# (canonical column, structured property name, kind of fill) per structured category.
_S, _I, _B, _F = "s", "i", "b", "f"
STRUCTURED_FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "AZFWApplicationRule": [
        ("protocol", "Protocol", _S), ("source_ip", "SourceIp", _S), ("source_port", "SourcePort", _I),
        ("destination_port", "DestinationPort", _I), ("destination_fqdn", "Fqdn", _S),
        ("target_url", "TargetUrl", _S), ("action", "Action", _S), ("policy", "Policy", _S),
        ("rule_collection_group", "RuleCollectionGroup", _S), ("rule_collection", "RuleCollection", _S),
        ("rule", "Rule", _S), ("action_reason", "ActionReason", _S), ("is_tls_inspected", "IsTlsInspected", _B),
        ("web_category", "WebCategory", _S), ("is_explicit_proxy", "IsExplicitProxyRequest", _B),
    ],
    "AZFWNetworkRule": [
        ("protocol", "Protocol", _S), ("source_ip", "SourceIp", _S), ("source_port", "SourcePort", _I),
        ("destination_ip", "DestinationIp", _S), ("destination_port", "DestinationPort", _I),
        ("action", "Action", _S), ("policy", "Policy", _S), ("rule_collection_group", "RuleCollectionGroup", _S),
        ("rule_collection", "RuleCollection", _S), ("rule", "Rule", _S), ("action_reason", "ActionReason", _S),
    ],
    "AZFWNatRule": [
        ("protocol", "Protocol", _S), ("source_ip", "SourceIp", _S), ("source_port", "SourcePort", _I),
        ("destination_ip", "DestinationIp", _S), ("destination_port", "DestinationPort", _I),
        ("translated_ip", "TranslatedIp", _S), ("translated_port", "TranslatedPort", _I),
        ("policy", "Policy", _S), ("rule_collection_group", "RuleCollectionGroup", _S),
        ("rule_collection", "RuleCollection", _S), ("rule", "Rule", _S),
    ],
    "AZFWDnsQuery": [
        ("source_ip", "SourceIp", _S), ("source_port", "SourcePort", _I), ("query_id", "QueryId", _I),
        ("query_type", "QueryType", _S), ("query_class", "QueryClass", _S), ("query_name", "QueryName", _S),
        ("protocol", "Protocol", _S), ("request_size", "RequestSize", _I), ("dnssec_ok", "DnssecOkBit", _B),
        ("edns0_buffer_size", "EDNS0BufferSize", _I), ("response_code", "ResponseCode", _S),
        ("response_flags", "ResponseFlags", _S), ("response_size", "ResponseSize", _I),
        ("duration_s", "RequestDurationSecs", _F), ("error_number", "ErrorNumber", _I),
        ("error_message", "ErrorMessage", _S),
    ],
    "AZFWThreatIntel": [
        ("protocol", "Protocol", _S), ("source_ip", "SourceIp", _S), ("source_port", "SourcePort", _I),
        ("destination_ip", "DestinationIp", _S), ("destination_port", "DestinationPort", _I),
        ("fqdn", "Fqdn", _S), ("target_url", "TargetUrl", _S), ("action", "Action", _S),
        ("description", "ThreatDescription", _S), ("is_tls_inspected", "IsTlsInspected", _B),
    ],
    "AZFWIdpsSignature": [
        ("protocol", "Protocol", _S), ("source_ip", "SourceIp", _S), ("source_port", "SourcePort", _I),
        ("destination_ip", "DestinationIp", _S), ("destination_port", "DestinationPort", _I),
        ("action", "Action", _S), ("signature_id", "SignatureId", _S), ("category", "Category", _S),
        ("description", "Description", _S), ("severity", "Severity", _I),
    ],
}
LEGACY_CATEGORY = {
    "AzureFirewallApplicationRuleLog": "AzureFirewallApplicationRule",
    "AzureFirewallNetworkRuleLog": "AzureFirewallNetworkRule",
    "AzureFirewallNatRuleLog": "AzureFirewallNetworkRule",
    "AzureFirewallThreatIntelLog": "AzureFirewallNetworkRule",
    "AzureFirewallIDSLog": "AzureFirewallNetworkRule",
    "AzureFirewallDnsProxyLog": "AzureFirewallDnsProxy",
}


def _s(c: str) -> pl.Expr:
    """A column as text ('' for NULL)."""
    return pl.col(c).cast(pl.String).fill_null("")


def _split(sc_frames: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Canonical frames of one hour → frames per structured category."""
    f, t, d = sc_frames["flows"], sc_frames["threats"], sc_frames["dns_queries"]
    return {
        "AZFWApplicationRule": f.filter(pl.col("kind") == "application"),
        "AZFWNetworkRule": f.filter(pl.col("kind") == "network"),
        "AZFWNatRule": f.filter(pl.col("kind") == "nat"),
        "AZFWDnsQuery": d,
        "AZFWThreatIntel": t.filter(pl.col("kind") == "threat_intel"),
        "AZFWIdpsSignature": t.filter(pl.col("kind") == "idps"),
    }


def _prepared(cat: str, df: pl.DataFrame) -> pl.DataFrame:
    """Canonical → the category's structured property values (NULL filled as the firewall does)."""
    if cat == "AZFWApplicationRule":
        df = df.with_columns(action_reason=pl.when(pl.col("action_reason") == "SNI TLS extension was missing")
                             .then(pl.lit("SNI TLS extension was missing.")).otherwise(pl.col("action_reason")))
    elif cat == "AZFWDnsQuery":
        fail = pl.col("error_message").is_not_null()
        df = df.with_columns(
            query_name=pl.col("query_name") + ".",
            query_type=pl.when(fail).then(pl.col("query_type") + ":").otherwise(pl.col("query_type")),
        )
    elif cat == "AZFWThreatIntel":
        df = df.with_columns(action=pl.col("action").str.to_titlecase())
    cols = []
    for canon, prop, kind in STRUCTURED_FIELDS[cat]:
        e = pl.col(canon)
        if kind == _S:
            e = e.cast(pl.String).fill_null("")
        elif kind == _I:
            e = e.cast(pl.Int64).fill_null(0)
        elif kind == _B:
            e = e.fill_null(False)
        else:
            e = e.fill_null(0.0)
        cols.append(e.alias(prop))
    return df.select(pl.col("time"), *cols)


def _time_str(df_len: int, *stream: Any) -> pl.Expr:
    """Alternate the two real timestamp styles: 7 digits + 'Z', or 6 digits + '+00:00'."""
    base = pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
    pick = pl.Series(_uniform(df_len, *stream) < 0.5)
    return pl.when(pick).then(base + "0Z").otherwise(base + "+00:00")


def structured_lines(cat: str, df: pl.DataFrame, *stream: Any, resource_id: str = RESOURCE_ID) -> pl.DataFrame:
    """(time, line) for the structured records of one category."""
    p = _prepared(cat, df)
    props = [c for c in p.columns if c != "time"]
    return p.select(
        "time",
        line=pl.struct(
            time=_time_str(p.height, *stream, "t"),
            resourceId=pl.lit(resource_id),
            category=pl.lit(cat),
            properties=pl.struct(props),
        ).struct.json_encode(),
    )


def _rule_tail() -> pl.Expr:
    return pl.concat_str(
        pl.lit("Policy: "), _s("policy"), pl.lit(". Rule Collection Group: "), _s("rule_collection_group"),
        pl.lit(". Rule Collection: "), _s("rule_collection"), pl.lit(". Rule: "), _s("rule"),
    )


def legacy_messages(cat: str, df: pl.DataFrame, *stream: Any) -> pl.DataFrame:
    """(time, operationName, msg) for the legacy text of one structured category's rows."""
    n = df.height
    src = pl.concat_str(_s("source_ip"), pl.lit(":"), _s("source_port"))
    ruled = pl.col("rule").is_not_null()
    if cat == "AZFWApplicationRule":
        word = pl.when(pl.col("protocol") == "HTTP").then(pl.lit("HTTP  request")).otherwise(
            pl.col("protocol") + " request")
        url = pl.when(pl.col("target_url").is_not_null()).then(
            pl.concat_str(pl.lit(" Url: "), pl.col("target_url"), pl.lit("."))).otherwise(pl.lit(""))
        wc = pl.when(pl.col("web_category").is_not_null()).then(
            pl.concat_str(pl.lit(". Web Category: "), pl.col("web_category"))).otherwise(pl.lit(""))
        outcome = (
            pl.when(ruled).then(pl.concat_str(pl.lit(" "), _rule_tail(), wc))
            .when(pl.col("action_reason") == "Default Action").then(pl.lit(" No rule matched. Proceeding with default action"))
            .otherwise(pl.concat_str(pl.lit(" Reason: "), _s("action_reason"), pl.lit(".")))
        )
        msg = (
            pl.when(pl.col("destination_fqdn").is_null()).then(
                pl.concat_str(word, pl.lit(" from "), src, pl.lit(". Action: "), pl.col("action"), pl.lit("."), outcome))
            .otherwise(pl.concat_str(
                word, pl.lit(" from "), src, pl.lit(" to "), pl.col("destination_fqdn"), pl.lit(":"),
                _s("destination_port"), pl.lit("."), url, pl.lit(" Action: "), pl.col("action"), pl.lit("."), outcome))
        )
        op = "AzureFirewallApplicationRuleLog"
    elif cat == "AZFWNetworkRule":
        u = pl.Series(_uniform(n, *stream, "ending"))
        deny_end = pl.when(u < 1 / 3).then(pl.lit("")).when(u < 2 / 3).then(pl.lit(".")).otherwise(pl.lit(". "))
        allow_end = pl.concat_str(pl.when(u < 0.2).then(pl.lit(".. ")).otherwise(pl.lit(". ")), _rule_tail())
        end = pl.when(ruled).then(allow_end).otherwise(deny_end)
        icmp = pl.col("protocol") == "ICMP"
        endpoints = pl.when(icmp).then(
            pl.concat_str(_s("source_ip"), pl.lit(" to "), _s("destination_ip"))
        ).otherwise(pl.concat_str(src, pl.lit(" to "), _s("destination_ip"), pl.lit(":"), _s("destination_port")))
        msg = pl.concat_str(pl.col("protocol"), pl.lit(" request from "), endpoints, pl.lit(". Action: "),
                            pl.col("action"), end)
        op = "AzureFirewallNetworkRuleLog"
    elif cat == "AZFWNatRule":
        msg = pl.concat_str(
            pl.col("protocol"), pl.lit(" request from "), src, pl.lit(" to "), _s("destination_ip"), pl.lit(":"),
            _s("destination_port"), pl.lit(" was DNAT'ed to "), _s("translated_ip"), pl.lit(":"),
            _s("translated_port"), pl.lit(". "), _rule_tail(),
        )
        op = "AzureFirewallNatRuleLog"
    elif cat == "AZFWThreatIntel":
        msg = pl.concat_str(
            pl.col("protocol"), pl.lit(" request from "), src, pl.lit(" to "), pl.col("fqdn"), pl.lit(":"),
            _s("destination_port"), pl.lit(". Action: "), pl.col("action").str.to_titlecase(),
            pl.lit(". ThreatIntel: "), pl.col("description"),
        )
        op = "AzureFirewallThreatIntelLog"
    elif cat == "AZFWIdpsSignature":
        msg = pl.concat_str(
            pl.col("protocol"), pl.lit(" request from "), src, pl.lit(" to "), _s("destination_ip"), pl.lit(":"),
            _s("destination_port"), pl.lit(". Action: "), pl.col("action"), pl.lit(". Signature: "),
            pl.col("signature_id"), pl.lit(". IDS: "), pl.col("description"), pl.lit(". Priority: "),
            _s("severity"), pl.lit(". Classification: "), pl.col("category"),
        )
        op = "AzureFirewallIDSLog"
    elif cat == "AZFWDnsQuery":
        ns = (pl.col("duration_s") * 1e9).round(0).cast(pl.Int64)
        dur = pl.concat_str((ns // 1_000_000_000).cast(pl.String), pl.lit("."),
                            (ns % 1_000_000_000).cast(pl.String).str.zfill(9), pl.lit("s"))
        ok = pl.concat_str(
            pl.lit("DNS Request: "), src, pl.lit(" - "), _s("query_id"), pl.lit(" "), pl.col("query_type"),
            pl.lit(" "), _s("query_class"), pl.lit(" "), pl.col("query_name"), pl.lit(". "), _s("protocol"),
            pl.lit(" "), _s("request_size"), pl.lit(" "),
            pl.when(pl.col("dnssec_ok")).then(pl.lit("true")).otherwise(pl.lit("false")), pl.lit(" "),
            _s("edns0_buffer_size"), pl.lit(" "), _s("response_code"), pl.lit(" "),
            pl.col("response_flags").fill_null("-"), pl.lit(" "), _s("response_size"), pl.lit(" "), dur,
        )
        inst = pl.Series(FIREWALL_INSTANCE_IPS).gather(
            (pl.Series(_uniform(n, *stream, "inst")) * len(FIREWALL_INSTANCE_IPS)).floor().cast(pl.Int64))
        port = ((pl.Series(_uniform(n, *stream, "fport")) * 28000).floor().cast(pl.Int64) + 32768).cast(pl.String)
        fail = pl.concat_str(
            pl.lit(" Error: "), _s("error_number"), pl.lit(" "), pl.col("query_name"), pl.lit(". "),
            pl.col("query_type"), pl.lit(": read udp "), pl.lit(inst), pl.lit(":"), pl.lit(port),
            pl.lit("->" + UPSTREAM_DNS + ": "), pl.col("error_message"),
        )
        msg = pl.when(pl.col("error_message").is_not_null()).then(fail).otherwise(ok)
        op = "AzureFirewallDnsProxyLog"
    else:  # pragma: no cover - categories are fixed above
        raise ValueError(cat)
    return df.select("time", operationName=pl.lit(op), msg=msg)


def legacy_lines(cat: str, df: pl.DataFrame, *stream: Any, resource_id: str = RESOURCE_ID) -> pl.DataFrame:
    """(time, legacy category, line) for the legacy records of one structured category's rows."""
    m = legacy_messages(cat, df, *stream)
    return m.select(
        "time",
        category=pl.col("operationName").replace_strict(LEGACY_CATEGORY),
        line=pl.struct(
            category=pl.col("operationName").replace_strict(LEGACY_CATEGORY),
            operationName="operationName",
            properties=pl.struct(msg="msg"),
            resourceId=pl.lit(resource_id),
            time=_time_str(m.height, *stream, "t"),
        ).struct.json_encode(),
    )


def _hour_records(frames: dict[str, pl.DataFrame], fmt: str, seed: int, h: int,
                  resource_id: str = RESOURCE_ID) -> dict[str, pl.DataFrame]:
    """category → (time, line) sorted by time, for one hour."""
    by_cat: dict[str, list[pl.DataFrame]] = {}
    for cat, df in _split(frames).items():
        if df.height == 0:
            continue
        if fmt in ("structured", "both"):
            by_cat.setdefault(cat, []).append(structured_lines(cat, df, seed, h, cat, "s", resource_id=resource_id))
        if fmt in ("legacy", "both"):
            leg = legacy_lines(cat, df, seed, h, cat, "l", resource_id=resource_id)
            for (lcat,), part in leg.partition_by("category", as_dict=True, maintain_order=True).items():
                by_cat.setdefault(lcat, []).append(part.drop("category"))
    return {c: pl.concat(parts).sort("time", maintain_order=True) for c, parts in sorted(by_cat.items())}


def _write_text(path: Path, lines: pl.Series, mode: str = "w") -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (lines.str.join("\n").item() + "\n").encode()
    with open(path, mode + "b") as fh:
        fh.write(data)
    return len(data)


def _storage_path(out: Path, cat: str, t: datetime, resource_id: str = RESOURCE_ID) -> Path:
    return (out / f"insights-logs-{cat.lower()}" / "resourceId=" / resource_id.lstrip("/")
            / f"y={t:%Y}" / f"m={t:%m}" / f"d={t:%d}" / f"h={t:%H}" / "m=00" / "PT1H.json")


def _csv_structured(cat: str, df: pl.DataFrame, resource_id: str = RESOURCE_ID) -> pl.DataFrame:
    p = _prepared(cat, df)
    return p.select(
        TenantId=pl.lit(TENANT_ID),
        TimeGenerated=pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f") + "0Z",
        *[pl.col(c).cast(pl.Int8) if p.schema[c] == pl.Boolean else pl.col(c) for c in p.columns if c != "time"],
        Type=pl.lit(cat),
        _ResourceId=pl.lit(resource_id.lower()),
    )


def _csv_legacy(cat: str, df: pl.DataFrame, *stream: Any, resource_id: str = RESOURCE_ID) -> pl.DataFrame:
    m = legacy_messages(cat, df, *stream)
    parts = resource_id.strip("/").split("/")  # SUBSCRIPTIONS/<sub>/RESOURCEGROUPS/<rg>/.../<name>
    return m.select(
        TimeGenerated=pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f") + "0Z",
        Category=pl.col("operationName").replace_strict(LEGACY_CATEGORY),
        OperationName="operationName",
        Resource=pl.lit(parts[-1].upper()),
        ResourceId=pl.lit(resource_id),
        ResourceGroup=pl.lit(parts[3].upper()),
        SubscriptionId=pl.lit(parts[1].lower()),
        msg_s="msg",
        _t="time",
    )


def _shuffled(columns: list[str], seed: int, name: str) -> list[str]:
    """Column order of a CSV export, shuffled deterministically so readers cannot rely on position."""
    cols = list(columns)
    random.Random(f"{seed}:{name}").shuffle(cols)
    return cols


def _hours(sc: Scenario):
    """Canonical frames of each hour, in order (frames are sorted by time)."""
    parts = {}
    for name in ("flows", "dns_queries", "threats"):
        df = getattr(sc, name).with_columns(_h=pl.col("time").dt.truncate("1h"))
        parts[name] = df.partition_by("_h", as_dict=True, maintain_order=True, include_key=False)
    keys = sorted({k for p in parts.values() for k in p})
    empty = {name: getattr(sc, name).clear() for name in parts}
    for i, k in enumerate(keys):
        yield i, k[0], {name: parts[name].get(k, empty[name]) for name in parts}


def write_hours(hours_iter, out_dir: str | Path, *, seed: int, fmt: str = "structured",
                layout: str = "storage", resource_id: str = RESOURCE_ID) -> tuple[list[Path], int]:
    """Render and file (hour index, hour start, frames) items one hour at a time."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[Path, None] = {}
    nbytes = 0
    csv_cols: dict[str, list[str]] = {}
    for h, t0, frames in hours_iter:
        if layout == "csv":
            tables: dict[str, list[pl.DataFrame]] = {}
            for cat, df in _split(frames).items():
                if df.height == 0:
                    continue
                if fmt in ("structured", "both"):
                    tables.setdefault(cat, []).append(_csv_structured(cat, df, resource_id).with_columns(_t=df["time"]))
                if fmt in ("legacy", "both"):
                    tables.setdefault("AzureDiagnostics", []).append(
                        _csv_legacy(cat, df, seed, h, cat, "l", resource_id=resource_id))
            for name, parts in sorted(tables.items()):
                table = pl.concat(parts).sort("_t", maintain_order=True).drop("_t")
                path = out / f"{name}.csv"
                first = name not in csv_cols
                if first:
                    csv_cols[name] = _shuffled(table.columns, seed, name)
                    if path.exists():
                        path.unlink()
                with open(path, "ab") as fh:
                    table.select(csv_cols[name]).write_csv(fh, include_header=first)
                files[path] = None
            continue
        for cat, recs in _hour_records(frames, fmt, seed, h, resource_id).items():
            if layout == "storage":
                path = _storage_path(out, cat, t0, resource_id)
                nbytes += _write_text(path, recs["line"])
            else:
                path = out / "eventhub" / cat / f"{h}.json"
                batches = (recs.with_row_index("_i").group_by(pl.col("_i") // EVENTHUB_BATCH, maintain_order=True)
                           .agg(pl.col("line").str.join(",")))
                body = pl.concat_str(pl.lit('{"records": ['), pl.col("line"), pl.lit("]}"))
                nbytes += _write_text(path, batches.select(body).to_series())
            files[path] = None
    if layout == "csv":
        nbytes = sum(p.stat().st_size for p in files)
    return list(files), nbytes


def _write_meta(sc_truth: dict[str, Any], policy: list[dict[str, Any]], out: Path) -> list[Path]:
    tp, pp = out / "truth.json", out / "policy.json"
    atomic.write_text(tp, json.dumps(sc_truth, indent=2, sort_keys=False) + "\n")
    atomic.write_text(pp, json.dumps(policy, indent=2) + "\n")
    return [tp, pp]


def write(sc: Scenario, out_dir: str | Path, fmt: str = "structured", layout: str = "storage") -> list[Path]:
    """Write a generated scenario as raw logs plus ``truth.json`` and ``policy.json``; returns the paths."""
    files, _ = write_hours(_hours(sc), out_dir, seed=sc.seed, fmt=fmt, layout=layout)
    return files + _write_meta(sc.truth, sc.policy, Path(out_dir))


def simulate_to_dir(out_dir: str | Path, hours: int = 24, events_per_hour: int = 100_000, seed: int = 7,
                    fmt: str = "structured", layout: str = "storage", start: datetime | None = None,
                    hot_share: float = 0.35, incident: bool = False, batch: bool = False) -> dict[str, Any]:
    """Generate and write hour by hour (memory stays at one hour's rows); returns counts, files, bytes.

    The files are byte-identical to ``write(generate(...), ...)`` with the same arguments.
    """
    check_args(hours, events_per_hour, hot_share)
    if fmt not in FORMATS or layout not in LAYOUTS:
        raise ValueError(f"fmt must be one of {FORMATS} and layout one of {LAYOUTS}")
    start = _naive_utc(start) if start is not None else default_start(hours)
    world = _World(seed, incident, batch=batch)
    counts = {"flows": 0, "dns_queries": 0, "threats": 0}
    used: set[tuple[str, str, str]] = set()

    def hours_iter():
        for h, flows, dns, threats in iter_hours(hours, events_per_hour, seed, start, hot_share, world):
            counts["flows"] += flows.height
            counts["dns_queries"] += dns.height
            counts["threats"] += threats.height
            used.update(used_rules(flows))
            yield h, start + timedelta(hours=h), {"flows": flows, "dns_queries": dns, "threats": threats}

    files, _ = write_hours(hours_iter(), out_dir, seed=seed, fmt=fmt, layout=layout)
    truth = build_truth(world, used, start, hours, hot_share)
    paths = files + _write_meta(truth, world.policy, Path(out_dir))
    return {
        "counts": counts,
        "files": [str(p) for p in paths],
        "bytes": sum(p.stat().st_size for p in paths),
        "start": truth["start"],
        "end": truth["end"],
        "fmt": fmt,
        "layout": layout,
        "seed": seed,
    }
