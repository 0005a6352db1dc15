"""Stores for the report tests: a simulated deployment, and small hand-made stores of canonical rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from egresslens import store
from egresslens.ingest import store_canonical_frames
from egresslens.canonical import canonical_columns
from egresslens.schema import DNS_QUERIES, FLOWS, THREATS

START = datetime(2026, 3, 2)
_TYPES = {"VARCHAR": pl.String, "TIMESTAMP": pl.Datetime("us"), "INTEGER": pl.Int32, "BIGINT": pl.Int64,
          "DOUBLE": pl.Float64, "BOOLEAN": pl.Boolean}


def simulated_store(directory: Path, hours: int = 48, events_per_hour: int = 1_500,
                    batch: bool = False) -> tuple[Path, Path]:
    """(store path, logs directory) of a simulated AKS deployment, ingested through the real file path
    (`batch`: with the VM spoke's nightly backup, a SNAT warning)."""
    from egresslens.simulate import generate, write
    from egresslens.ingest import ingest_files

    logs = directory / "logs"
    write(generate(hours=hours, events_per_hour=events_per_hour, seed=5, start=START, batch=batch), logs,
          fmt="structured", layout="storage")
    db = directory / "s.duckdb"
    con = store.connect(db)
    ingest_files(con, [p for p in logs.iterdir() if p.is_dir()])
    con.close()
    return db, logs


def _frame(table, rows: list[dict]) -> pl.DataFrame:
    cols = {c.name: _TYPES[c.type] for c in table.columns if c.name in canonical_columns(table)}
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], schema=cols)


def flow(time: datetime, destination: str, action: str = "Allow", *, source: str = "10.0.1.4", port: int = 443,
         rule: str | None = None, kind: str = "application", n: int = 1, firewall: str = "fw-test") -> list[dict]:
    """`n` flow events a second apart (an FQDN for application rules, an IP for network rules)."""
    ip = kind == "network"
    return [{"time": time + timedelta(seconds=i), "firewall": firewall, "kind": kind,
             "protocol": "HTTPS" if not ip else "TCP", "source_ip": source, "source_port": 40000 + i,
             "destination_ip": destination if ip else None, "destination_fqdn": None if ip else destination,
             "destination_port": port, "action": action,
             "action_reason": None if action == "Allow" else "Default Action", "policy": "fw-policy",
             "rule_collection_group": "rcg-apps" if rule else None, "rule_collection": "apps" if rule else None,
             "rule": rule} for i in range(n)]


def dns(time: datetime, name: str, *, source: str = "10.0.1.4", code: str = "NOERROR", n: int = 1) -> list[dict]:
    return [{"time": time + timedelta(seconds=i), "firewall": "fw-test", "source_ip": source, "source_port": 50000 + i,
             "query_id": i, "query_type": "A", "query_class": "IN", "query_name": name, "protocol": "udp",
             "request_size": 40, "response_code": code, "response_size": 80, "duration_s": 0.004}
            for i in range(n)]


def threat(time: datetime, fqdn: str, description: str, *, source: str = "10.0.1.4") -> list[dict]:
    return [{"time": time, "firewall": "fw-test", "kind": "threat_intel", "protocol": "HTTPS", "source_ip": source,
             "source_port": 41000, "destination_port": 443, "fqdn": fqdn, "action": "deny", "description": description}]


def make_store(db: Path, flows: list[dict], dns_rows: list[dict] = (), threats: list[dict] = ()) -> Path:
    con = store.connect(db)
    try:
        store_canonical_frames(con, flows=_frame(FLOWS, flows) if flows else None,
                               dns_queries=_frame(DNS_QUERIES, list(dns_rows)) if dns_rows else None,
                               threats=_frame(THREATS, list(threats)) if threats else None)
    finally:
        con.close()
    return db
