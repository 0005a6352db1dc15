"""Names, addresses, schemas and seeded random streams shared by the scenario and its hourly events."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow.compute as pc

from egresslens.schema import DNS_QUERIES, FLOWS, THREATS

_DROP = {"event_id", "log_format", "ingest_run_id"}
FLOW_COLUMNS = [c for c in FLOWS.column_names if c not in _DROP]
THREAT_COLUMNS = [c for c in THREATS.column_names if c not in _DROP]
DNS_COLUMNS = [c for c in DNS_QUERIES.column_names if c not in _DROP]

_PL_TYPES = {"VARCHAR": pl.String, "INTEGER": pl.Int32, "BIGINT": pl.Int64, "BOOLEAN": pl.Boolean,
             "DOUBLE": pl.Float64, "TIMESTAMP": pl.Datetime("us")}


def _schema(table) -> dict[str, Any]:
    return {c.name: _PL_TYPES[c.type] for c in table.columns if c.name not in _DROP}


FLOW_SCHEMA = _schema(FLOWS)
THREAT_SCHEMA = _schema(THREATS)
DNS_SCHEMA = _schema(DNS_QUERIES)

SUBSCRIPTION = "3f1c2a9e-7b4d-4e61-9a0c-5d2e8b7f4a13"
RESOURCE_GROUP = "rg-hub-networking-weu"
FIREWALL_NAME = "fw-hub-weu-01"
FIREWALL_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{RESOURCE_GROUP}"
    f"/providers/microsoft.network/azurefirewalls/{FIREWALL_NAME}"
)
REGION = "westeurope"

SUBNETS = {
    "hub-firewall": "10.0.0.0/26",
    "hub-shared": "10.0.1.0/24",
    "aks-nodes": "10.240.0.0/22",
    "aks-pods": "10.244.0.0/16",
    "vm-spoke": "10.241.0.0/24",
}
FIREWALL_INSTANCE_IPS = ["10.0.0.4", "10.0.0.5"]
FIREWALL_PUBLIC_IP = "20.93.112.41"
API_SERVER_IP = "20.103.218.77"
AZURECLOUD_WESTEUROPE = ["20.103.0.0/16", "20.93.0.0/16", "51.105.0.0/16"]
HOT_FQDN = "api.payments-example.com"
HOT_IP = "52.174.88.19"
DB_FQDN = "orders-db.pg-example-hosting.net"
DB_IP = "51.124.61.203"
NTP_IPS = ["185.125.190.56", "185.125.190.57", "91.189.91.157"]
TUNNEL_DOMAIN = "t.exfil-example.net"
# The incident scenario (`incident=True`, egresslens/simulate/incident.py): the compromised pod also
# tunnels over 1-3 label levels under TUNNEL_DOMAIN and beacons to a command-and-control host; a
# second pod reaches the C2 and uploads; a CI runner pulls from a typosquat.
C2_FQDN = "sync.cdn-update-example.org"
C2_IP = "193.42.33.118"  # the C2's bare address: connected to with no DNS query of its own
EXFIL_FQDN = "stbkp7f3k2q.blob.core.windows.net"  # a storage account only the contact pod uploads to
PYPI_FQDNS = ("pypi.org", "files.pythonhosted.org")
TYPOSQUAT_FQDN = "files.pyhtonhosted.org"  # a swapped pair of letters
TI_FQDNS = [("update.malware-cdn-example.com", "HTTPS", 443, "deny", "Bot Networks"),
            ("beacon.botnet-example.net", "HTTP", 80, "alert", "Malware")]
IDPS_IPS = ["185.220.101.47", "45.137.21.9"]
IDPS_SIGNATURES = [
    ("2028816", "JA3 Hash - [Abuse.ch] Possible Tofsee", "Unknown Traffic", 3, "drop"),
    ("2027757", "ET DNS Query for .to TLD", "Potentially Bad Traffic", 2, "alert"),
    ("2033966", "ET MALWARE Cobalt Strike Beacon Observed", "A Network Trojan was detected", 1, "drop"),
]
BENIGN_IDPS = ("2013028", "ET POLICY curl User-Agent Outbound", "Attempted Information Leak", 4, "alert")
WPAD_NAME = "wpad.corp.contoso-internal.com"


def _stream_seed(*parts: Any) -> int:
    """A 63-bit seed for one random stream, derived from the scenario seed and the stream's name."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def _uniform(n: int, *parts: Any) -> pl.Series:
    """n uniform doubles in [0, 1), deterministic for the given stream parts."""
    if n == 0:
        return pl.Series("u", [], dtype=pl.Float64)
    return pl.from_arrow(pc.random(n, initializer=_stream_seed(*parts))).alias("u")


def _pick(n: int, k: int | pl.Series, *parts: Any) -> pl.Series:
    """n integers in [0, k) (k may be a per-row Series)."""
    u = _uniform(n, *parts)
    return (u * k).floor().cast(pl.Int64)


def _public_ips(name: str, count: int) -> list[str]:
    """Stable pseudo-public addresses for a name (its simulated DNS answer)."""
    firsts = [13, 20, 40, 51, 52, 104, 140, 151, 172, 185]
    out = []
    for i in range(count):
        h = hashlib.sha256(f"{name}#{i}".encode()).digest()
        first = firsts[h[0] % len(firsts)]
        second = h[1] if first != 172 else 64 + h[1] % 64  # keep 172.x out of 172.16/12
        out.append(f"{first}.{second}.{h[2]}.{1 + h[3] % 253}")
    return out


@dataclass
class Template:
    """One kind of connection: a group of sources reaching one destination."""

    workload: str
    sources: list[str]
    kind: str  # application | network | nat
    protocol: str
    port: int | None
    weight: float
    fqdn: str | None = None
    ip: str | None = None
    dns_name: str | None = None  # name a client resolves before connecting (network rules)
    paths: list[str] = field(default_factory=list)
    bundle: str | None = None
    role: str = "legit"  # legit | malicious | noise | hot | inbound
    web_category: str | None = None
    sni_missing: bool = False
    translated: tuple[str, int] | None = None


@dataclass
class Scenario:
    """Canonical frames plus the ground truth and the policy they were generated from."""

    flows: pl.DataFrame
    dns_queries: pl.DataFrame
    threats: pl.DataFrame
    truth: dict[str, Any]
    policy: list[dict[str, Any]]
    seed: int
    start: datetime
    hours: int
