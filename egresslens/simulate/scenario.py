"""Generate canonical rows for an AKS hub-and-spoke deployment behind Azure Firewall.

The scenario is a catalogue of *templates* (one source group talking to one destination), each
decided against the simulated policy once per source IP; hourly event volumes are then drawn from
the catalogue with vectorised Polars/Arrow operations (no Python loop per row). The same seed and
arguments always give the same frames, because every random stream is seeded from
(seed, hour, stream name).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import pyarrow.compute as pc

from egresslens.schema import DNS_QUERIES, FLOWS, THREATS
from egresslens.simulate.policy import POLICY_NAME, build_policy, evaluate, rule_names

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


class _World:
    """Hosts, templates and the policy of the simulated deployment (independent of the hour)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.nodes = [f"10.240.0.{i}" for i in range(4, 10)]
        self.vms = [f"10.241.0.{i}" for i in range(4, 8)]
        pods = {
            "checkout": [f"10.244.1.{i}" for i in (12, 19, 23, 37, 41, 58)],
            "catalog": [f"10.244.2.{i}" for i in (7, 15, 29, 44)],
            "orders": [f"10.244.4.{i}" for i in (9, 16, 33, 52, 61)],
            "ci-runner": [f"10.244.5.{i}" for i in (11, 26, 40)],
            "ama-logs": [f"10.244.6.{i}" for i in (5, 6)],
            "report-cron": [f"10.244.3.{i}" for i in (17, 18)],
        }
        self.pods = pods
        self.compromised = pods["report-cron"][0]
        self.internet_clients = _public_ips("inbound-clients", 40)
        self.dnat_target = ("10.241.0.10", 8443)
        self.policy = build_policy(
            node_cidr=SUBNETS["aks-nodes"], pod_cidr=SUBNETS["aks-pods"], vm_cidr=SUBNETS["vm-spoke"],
            hot_fqdn=HOT_FQDN, firewall_public_ip=FIREWALL_PUBLIC_IP, dnat_target=self.dnat_target,
        )
        self.service_tags = {"AzureCloud.westeurope": AZURECLOUD_WESTEUROPE}
        self.templates = self._templates()
        self.dns = self._dns()
        self._decide()

    # -- catalogue --------------------------------------------------------------------------
    def _templates(self) -> list[Template]:
        T = Template
        nodes, vms, pods = self.nodes, self.vms, self.pods
        app_pods = pods["checkout"] + pods["catalog"] + pods["orders"]
        ts: list[Template] = []
        # AKS platform dependencies from the nodes (allowed by the FQDN tag rule).
        aks = [("mcr.microsoft.com", 6.0), ("westeurope.data.mcr.microsoft.com", 4.0),
               ("northeurope.data.mcr.microsoft.com", 1.0), ("mcr-0001.mcr-msedge.net", 0.8),
               ("management.azure.com", 4.0), ("login.microsoftonline.com", 3.0),
               ("packages.microsoft.com", 0.6), ("packages.aks.azure.com", 0.8),
               ("aks-hub-weu-9f3c1a2b.hcp.westeurope.azmk8s.io", 9.0)]
        for fq, w in aks:
            ts.append(T("aks-platform", nodes, "application", "HTTPS", 443, w, fqdn=fq, bundle="aks-required"))
        ts.append(T("aks-platform", nodes, "application", "HTTP", 80, 0.3, fqdn="packages.microsoft.com",
                    paths=["packages.microsoft.com/ubuntu/22.04/prod/dists/jammy/InRelease",
                           "packages.microsoft.com/ubuntu/22.04/prod/dists/jammy/main/binary-amd64/Packages.gz"],
                    bundle="aks-required"))
        ts.append(T("aks-platform", nodes, "network", "UDP", 1194, 2.0, ip=API_SERVER_IP, bundle="aks-required"))
        ts.append(T("aks-platform", nodes, "network", "TCP", 9000, 2.0, ip=API_SERVER_IP, bundle="aks-required"))
        # Node OS updates and time (denied: not in the tag, no rule).
        ubuntu_paths = ["/ubuntu/dists/jammy-updates/InRelease", "/ubuntu/dists/jammy-security/InRelease",
                        "/ubuntu/pool/main/o/openssl/libssl3_3.0.2-0ubuntu1.18_amd64.deb"]
        for fq, w in (("azure.archive.ubuntu.com", 0.8), ("security.ubuntu.com", 0.5)):
            ts.append(T("node-os-updates", nodes, "application", "HTTP", 80, w, fqdn=fq,
                        paths=[fq + p for p in ubuntu_paths], bundle="ubuntu-updates"))
        for ip in NTP_IPS:
            ts.append(T("node-time", nodes, "network", "UDP", 123, 0.4, ip=ip, dns_name="ntp.ubuntu.com",
                        bundle="ntp"))
        # Container images pulled by workloads (denied).
        docker = [("registry-1.docker.io", 1.2), ("auth.docker.io", 0.6), ("production.cloudflare.docker.com", 1.5)]
        for fq, w in docker:
            ts.append(T("image-pulls", pods["catalog"] + pods["ci-runner"], "application", "HTTPS", 443, w,
                        fqdn=fq, bundle="docker-hub"))
        for fq, w in (("ghcr.io", 0.7), ("pkg-containers.githubusercontent.com", 0.9)):
            ts.append(T("image-pulls", pods["ci-runner"], "application", "HTTPS", 443, w, fqdn=fq, bundle="ghcr"))
        ts.append(T("ci-builds", pods["ci-runner"], "application", "HTTP", 80, 0.6, fqdn="deb.debian.org",
                    paths=["deb.debian.org/debian/dists/bookworm/InRelease",
                           "deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10_amd64.deb"],
                    bundle="debian-mirror"))
        # GitHub (allowed by broad rules: narrowing material).
        ts.append(T("ci-builds", pods["ci-runner"], "application", "HTTPS", 443, 1.0, fqdn="codeload.github.com",
                    web_category="ComputersAndTechnology"))
        ts.append(T("ci-builds", pods["ci-runner"], "application", "HTTPS", 443, 0.4, fqdn="uploads.github.com",
                    web_category="ComputersAndTechnology"))
        ts.append(T("ci-builds", pods["ci-runner"] + vms, "application", "HTTPS", 443, 1.4, fqdn="api.github.com"))
        ts.append(T("checkout", pods["checkout"], "application", "HTTPS", 443, 0.6, fqdn="api.github.com"))
        # SaaS APIs (denied), invented domains.
        for fq, who, w in (("api.shipping-example.com", "catalog", 1.1), ("api.tax-rates-example.com", "checkout", 0.7),
                           ("hooks.chat-example.io", "orders", 0.3)):
            ts.append(T(who, pods[who], "application", "HTTPS", 443, w, fqdn=fq))
        # Telemetry shards under one non-public parent (a wildcard is justified).
        for shard, w in (("eu-1", 1.2), ("eu-2", 1.0), ("eu-3", 0.5), ("us-3", 0.3), ("us-7", 0.2)):
            ts.append(T("telemetry", app_pods, "application", "HTTPS", 443, w,
                        fqdn=f"{shard}.telemetry.example-saas.io", bundle="example-saas-telemetry"))
        # Storage accounts (multi-tenant suffix: each account its own name).
        for acct, who, w in (("stcheckoutweu01", "checkout", 0.9), ("storderexports7", "orders", 0.6),
                             ("stcatalogimgweu", "catalog", 0.8)):
            ts.append(T(who, pods[who], "application", "HTTPS", 443, w, fqdn=f"{acct}.blob.core.windows.net"))
        # Azure Monitor agents (denied).
        ws = "5b3e9c7a-2f1d-4a8e-b6c0-91d2e4f7a3b8"
        for fq, w in ((f"{ws}.ods.opinsights.azure.com", 1.0), (f"{ws}.oms.opinsights.azure.com", 0.4)):
            ts.append(T("azure-monitor", pods["ama-logs"], "application", "HTTPS", 443, w, fqdn=fq,
                        bundle="azure-monitor"))
        # Database over TCP to a public IP (denied).
        ts.append(T("orders", pods["orders"], "network", "TCP", 5432, 1.0, ip=DB_IP, dns_name=DB_FQDN))
        # VM spoke.
        ts.append(T("vm-spoke", vms, "application", "HTTP", 80, 0.4, fqdn="azure.archive.ubuntu.com",
                    paths=["azure.archive.ubuntu.com" + p for p in ubuntu_paths], bundle="ubuntu-updates"))
        ts.append(T("vm-spoke", vms, "application", "HTTPS", 443, 0.3, fqdn="packages.microsoft.com"))
        # Report cron (the pod that later misbehaves) has legitimate traffic too.
        ts.append(T("report-cron", pods["report-cron"], "application", "HTTPS", 443, 0.2, fqdn="api.github.com"))
        # The hot destination at its normal level (bursts are added per hour).
        ts.append(T("payments", app_pods, "application", "HTTPS", 443, 2.5, fqdn=HOT_FQDN, role="hot"))
        # Noise: ICMP, inbound DNAT, SNI-missing requests.
        ts.append(T("icmp", nodes + vms, "network", "ICMP", None, 0.3, ip="10.0.1.4", role="noise"))
        ts.append(T("icmp", vms, "network", "ICMP", None, 0.1, ip="1.1.1.1", role="noise"))
        ts.append(T("inbound", self.internet_clients, "nat", "TCP", 443, 0.2, ip=FIREWALL_PUBLIC_IP,
                    translated=self.dnat_target, role="inbound"))
        ts.append(T("sni-missing", pods["catalog"], "application", "HTTPS", None, 0.05, sni_missing=True,
                    role="noise"))
        # Malicious traffic from the compromised pod (denied by default action).
        for fq, proto, port, _, _ in TI_FQDNS:
            ts.append(T("compromised", [self.compromised], "application", proto, port, 0.08, fqdn=fq,
                        paths=[f"{fq}/gate.php"] if proto == "HTTP" else [], role="malicious"))
        for ip in IDPS_IPS:
            ts.append(T("compromised", [self.compromised], "network", "TCP", 4444, 0.05, ip=ip, role="malicious"))
        return ts

    def _dns(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for t in self.templates:
            if t.fqdn and t.fqdn not in names:
                names[t.fqdn] = _public_ips(t.fqdn, 2 if "blob" not in t.fqdn else 1)
        names[HOT_FQDN] = [HOT_IP]
        names["ntp.ubuntu.com"] = list(NTP_IPS)
        names[DB_FQDN] = [DB_IP]
        names["aks-hub-weu-9f3c1a2b.hcp.westeurope.azmk8s.io"] = [API_SERVER_IP]
        return dict(sorted(names.items()))

    def _decide(self) -> None:
        """Run each (template, source) through the policy; keep one row per pair."""
        rows = []
        for tid, t in enumerate(self.templates):
            for sidx, src in enumerate(t.sources):
                if t.kind == "nat":
                    g = next(g for g in self.policy if g["name"] == "dnat-inbound")
                    c = g["ruleCollections"][0]
                    v = ("DNAT", None, POLICY_NAME, g["name"], c["name"], c["rules"][0]["name"])
                elif t.sni_missing:
                    v = ("Deny", "SNI TLS extension was missing", None, None, None, None)
                else:
                    r = evaluate(self.policy, kind=t.kind, protocol=t.protocol, source_ip=src,
                                 destination_port=t.port, destination_ip=t.ip, destination_fqdn=t.fqdn,
                                 service_tags=self.service_tags, dns=self.dns)
                    v = (r.action, r.action_reason, r.policy, r.rule_collection_group, r.rule_collection, r.rule)
                rows.append((tid, sidx, src) + v)
        self.pairs = pl.DataFrame(
            rows, orient="row",
            schema={"tid": pl.Int64, "sidx": pl.Int64, "source_ip": pl.String, "action": pl.String,
                    "action_reason": pl.String, "policy": pl.String, "rule_collection_group": pl.String,
                    "rule_collection": pl.String, "rule": pl.String},
        )
        offsets, acc = [], 0
        for t in self.templates:
            offsets.append(acc)
            acc += len(t.sources)
        path_rows, path_off, pacc = [], [], 0
        for t in self.templates:
            path_off.append(pacc)
            path_rows.extend(t.paths)
            pacc += len(t.paths)
        self.paths = pl.Series("target_url", path_rows, dtype=pl.String)
        self.tab = pl.DataFrame({
            "tid": list(range(len(self.templates))),
            "kind": [t.kind for t in self.templates],
            "protocol": [t.protocol for t in self.templates],
            "destination_ip": [t.ip if t.kind != "application" else None for t in self.templates],
            "destination_fqdn": [t.fqdn for t in self.templates],
            "destination_port": [t.port for t in self.templates],
            "web_category": [t.web_category for t in self.templates],
            "translated_ip": [t.translated[0] if t.translated else None for t in self.templates],
            "translated_port": [t.translated[1] if t.translated else None for t in self.templates],
            "dns_name": [t.fqdn or t.dns_name for t in self.templates],
            "n_src": [len(t.sources) for t in self.templates],
            "src_off": offsets,
            "n_paths": [len(t.paths) for t in self.templates],
            "path_off": path_off,
        }, schema_overrides={"destination_port": pl.Int32, "translated_port": pl.Int32})
        w = [t.weight for t in self.templates]
        self.hot_tid = next(i for i, t in enumerate(self.templates) if t.role == "hot")
        cum, acc2 = [], 0.0
        for x in w:
            acc2 += x
            cum.append(acc2)
        self.cum = pl.Series(cum)
        w_nohot = [0.0 if i == self.hot_tid else x for i, x in enumerate(w)]
        cum2, acc3 = [], 0.0
        for x in w_nohot:
            acc3 += x
            cum2.append(acc3)
        self.cum_nohot = pl.Series(cum2)


def _epoch_us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + dt.microsecond


def _flows_hour(world: _World, seed: int, h: int, t0_us: int, n: int, hot: float) -> pl.DataFrame:
    """Flow events of one hour; during the burst the hot destination gets ``hot`` of them."""
    n_hot = int(round(n * hot))
    n_rest = n - n_hot
    cum = world.cum if n_hot == 0 else world.cum_nohot
    total = cum[-1]
    u = _uniform(n_rest, seed, h, "tid") * total
    tid = cum.search_sorted(u, side="right").cast(pl.Int64)
    if n_hot:
        tid = pl.concat([tid, pl.Series([world.hot_tid] * n_hot, dtype=pl.Int64)])
    ev = world.tab.select(pl.all().gather(tid))
    ev = ev.with_columns(
        _u_src=_uniform(n, seed, h, "src"),
        _u_path=_uniform(n, seed, h, "path"),
        _off=(_uniform(n, seed, h, "time") * 3_600_000_000).floor().cast(pl.Int64),
        _port=(_uniform(n, seed, h, "sport") * (60999 - 32768)).floor().cast(pl.Int32) + 32768,
        _tie=pl.int_range(n, dtype=pl.Int64),
    )
    ev = ev.with_columns(
        _pair=pl.col("src_off") + (pl.col("_u_src") * pl.col("n_src")).floor().cast(pl.Int64),
        _path=pl.when(pl.col("n_paths") > 0).then(
            pl.col("path_off") + (pl.col("_u_path") * pl.col("n_paths")).floor().cast(pl.Int64)),
    )
    pairs = world.pairs.drop("tid", "sidx").select(pl.all().gather(ev["_pair"]))
    target = world.paths.gather(ev["_path"].fill_null(0)) if len(world.paths) else pl.Series([None] * n)
    ev = pl.concat([ev, pairs], how="horizontal").with_columns(
        target_url=pl.when(pl.col("_path").is_not_null()).then(target).otherwise(None),
    )
    icmp = pl.col("protocol") == "ICMP"
    app = pl.col("kind") == "application"
    out = ev.select(
        time=(pl.col("_off") + t0_us).cast(pl.Datetime("us")),
        firewall=pl.lit(FIREWALL_ID),
        kind="kind",
        protocol="protocol",
        icmp_type=pl.lit(None, dtype=pl.Int32),
        source_ip="source_ip",
        source_port=pl.when(icmp).then(None).otherwise(pl.col("_port")),
        destination_ip="destination_ip",
        destination_fqdn="destination_fqdn",
        destination_port="destination_port",
        target_url="target_url",
        action="action",
        action_reason="action_reason",
        policy="policy",
        rule_collection_group="rule_collection_group",
        rule_collection="rule_collection",
        rule="rule",
        web_category="web_category",
        translated_ip="translated_ip",
        translated_port="translated_port",
        is_tls_inspected=pl.when(app).then(
            (pl.col("protocol") == "HTTPS") & pl.col("target_url").is_not_null()),
        is_explicit_proxy=pl.when(app).then(pl.lit(False)),
        _dns_name="dns_name",
        _tie="_tie",
    )
    return out.sort("time", "_tie").drop("_tie")


def _base32_labels(n: int, *parts: Any) -> pl.Series:
    """n 40-character base32 labels from hashed random streams (vectorised)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    pieces = []
    for j in range(4):
        h = (_uniform(n, *parts, j) * 2.0**50).cast(pl.Int64)
        for k in range(10):
            idx = ((h // (32**k)) % 32).cast(pl.UInt32)
            pieces.append(pl.Series(list(alphabet)).gather(idx))
    return pl.select(pl.concat_str(pieces)).to_series()


def _dns_hour(world: _World, seed: int, h: int, t0_us: int, flows: pl.DataFrame, n_events: int) -> pl.DataFrame:
    """DNS proxy queries preceding the hour's connections, plus noise, failures and tunnelling."""
    q = (
        flows.filter(pl.col("_dns_name").is_not_null())
        .with_columns(_bucket=pl.col("time").dt.epoch("us") // 300_000_000)
        .group_by("source_ip", "_dns_name", "_bucket")
        .agg(pl.col("time").min())
        .sort("time", "source_ip", "_dns_name")
        .rename({"_dns_name": "query_name"})
        .drop("_bucket")
    )
    m = q.height
    delay = (_uniform(m, seed, h, "dns-delay") * 40_000 + 300).cast(pl.Int64)
    q = q.with_columns(time=(pl.col("time").dt.epoch("us") - delay).clip(lower_bound=t0_us).cast(pl.Datetime("us")),
                       query_type=pl.lit("A"), response_code=pl.lit("NOERROR"), _answers=pl.lit(1))
    # A share of clients ask for AAAA too, a few ms after A.
    aaaa = q.filter(_uniform(m, seed, h, "aaaa") < 0.3).with_columns(
        time=pl.col("time") + pl.duration(microseconds=900), query_type=pl.lit("AAAA"), _answers=pl.lit(0))
    # Search-domain expansions before the real query: pods via cluster.local, nodes/VMs via reddog.
    pod = pl.col("source_ip").str.starts_with("10.244.")
    expand = q.filter(_uniform(m, seed, h, "expand") < 0.15).with_columns(
        time=pl.max_horizontal(pl.col("time") - pl.duration(microseconds=2_500), pl.lit(t0_us).cast(pl.Datetime("us"))),
        query_name=pl.when(pod).then(pl.col("query_name") + ".svc.cluster.local")
        .otherwise(pl.col("query_name") + ".reddog.microsoft.com"),
        response_code=pl.lit("NXDOMAIN"), _answers=pl.lit(0))
    k_wpad = max(1, n_events // 20_000)
    wpad = pl.DataFrame({
        "source_ip": pl.Series(world.vms).gather(_pick(k_wpad, len(world.vms), seed, h, "wpad-src")),
        "query_name": [WPAD_NAME] * k_wpad,
        "time": ((_uniform(k_wpad, seed, h, "wpad-t") * 3.6e9).cast(pl.Int64) + t0_us).cast(pl.Datetime("us")),
    }).with_columns(query_type=pl.lit("A"), response_code=pl.lit("NXDOMAIN"), _answers=pl.lit(0))
    # DNS tunnelling from the compromised pod: unique long labels, TXT, mostly NXDOMAIN.
    k_tun = max(20, n_events * 3 // 1000)
    tun = pl.DataFrame({
        "source_ip": [world.compromised] * k_tun,
        "query_name": _base32_labels(k_tun, seed, h, "tunnel") + "." + TUNNEL_DOMAIN,
        "time": ((_uniform(k_tun, seed, h, "tun-t") * 3.6e9).cast(pl.Int64) + t0_us).cast(pl.Datetime("us")),
    }).with_columns(
        query_type=pl.lit("TXT"),
        response_code=pl.when(_uniform(k_tun, seed, h, "tun-rc") < 0.65).then(pl.lit("NXDOMAIN"))
        .otherwise(pl.lit("NOERROR")),
        _answers=pl.lit(1),
    )
    ok = pl.concat([q, aaaa, expand, wpad, tun], how="diagonal_relaxed")
    n = ok.height
    name_len = pl.col("query_name").str.len_bytes()
    u_dur = _uniform(n, seed, h, "dur")
    slow = _uniform(n, seed, h, "slow") < 0.002  # upstream answered nothing in time: no flags, 2 s
    edns = pl.Series(_uniform(n, seed, h, "edns") < 0.7).cast(pl.Int32) * (1232 - 512) + 512
    dur_ns = ((u_dur**3) * 30_000_000 + 400_000).cast(pl.Int64)
    ok = ok.with_columns(
        source_port=(_uniform(n, seed, h, "dns-sport") * 64511).floor().cast(pl.Int32) + 1024,
        query_id=(_uniform(n, seed, h, "qid") * 65536).floor().cast(pl.Int32),
        protocol=pl.when(_uniform(n, seed, h, "tcp") < 0.01).then(pl.lit("tcp")).otherwise(pl.lit("udp")),
        dnssec_ok=_uniform(n, seed, h, "do") < 0.05,
        edns0_buffer_size=edns,
        _slow=slow,
        _dur=pl.when(slow).then(2_000_000_000 + dur_ns // 100).otherwise(dur_ns),
    ).with_columns(
        query_class=pl.lit("IN"),
        request_size=(name_len + 29).cast(pl.Int32),
        response_flags=pl.when(pl.col("_slow")).then(None)
        .when(pl.col("response_code") == "NXDOMAIN").then(pl.lit("qr,aa,rd,ra"))
        .otherwise(pl.lit("qr,rd,ra")),
        response_size=pl.when(pl.col("_slow")).then(0).when(pl.col("response_code") == "NXDOMAIN")
        .then(name_len + 104).otherwise(name_len + 29 + 16 * pl.col("_answers") + 40).cast(pl.Int32),
        duration_s=(pl.col("_dur").cast(pl.Float64) / 1e9).round(9),
        error_number=pl.lit(None, dtype=pl.Int32),
        error_message=pl.lit(None, dtype=pl.String),
    )
    # Upstream failures: the firewall's forwarder timed out; the row carries no client fields.
    k_fail = max(1, n // 2000)
    names = q["query_name"] if q.height else pl.Series(["ntp.ubuntu.com"])
    fail = pl.DataFrame({
        "query_name": names.gather(_pick(k_fail, len(names), seed, h, "fail-n")) + ".reddog.microsoft.com",
        "time": ((_uniform(k_fail, seed, h, "fail-t") * 3.6e9).cast(pl.Int64) + t0_us).cast(pl.Datetime("us")),
    }).with_columns(query_type=pl.lit("A"), error_number=pl.lit(2, dtype=pl.Int32),
                    error_message=pl.lit("i/o timeout"))
    out = pl.concat([ok, fail], how="diagonal_relaxed").with_columns(firewall=pl.lit(FIREWALL_ID))
    out = out.with_columns(_tie=pl.int_range(out.height)).sort("time", "_tie")
    return out.select([pl.col(c).cast(t) for c, t in DNS_SCHEMA.items()])


def _threats_hour(world: _World, seed: int, h: int, t0_us: int, n_events: int) -> pl.DataFrame:
    """Threat-intel and IDPS events of one hour (almost all from the compromised pod)."""
    k_ti = max(2, n_events // 2500)
    ti_idx = _pick(k_ti, len(TI_FQDNS), seed, h, "ti")
    ti_tab = pl.DataFrame({
        "fqdn": [x[0] for x in TI_FQDNS], "protocol": [x[1] for x in TI_FQDNS],
        "destination_port": pl.Series([x[2] for x in TI_FQDNS], dtype=pl.Int32),
        "action": [x[3] for x in TI_FQDNS], "description": [x[4] for x in TI_FQDNS],
    }).select(pl.all().gather(ti_idx))
    ti = ti_tab.with_columns(
        kind=pl.lit("threat_intel"), source_ip=pl.lit(world.compromised),
        is_tls_inspected=pl.lit(False),
    )
    k_idps = max(2, n_events // 2500)
    sigs = IDPS_SIGNATURES
    sig_idx = _pick(k_idps, len(sigs), seed, h, "sig")
    ip_idx = _pick(k_idps, len(IDPS_IPS), seed, h, "idps-ip")
    idps = pl.DataFrame({
        "signature_id": [s[0] for s in sigs], "description": [s[1] for s in sigs],
        "category": [s[2] for s in sigs], "severity": pl.Series([s[3] for s in sigs], dtype=pl.Int32),
        "action": [s[4] for s in sigs],
    }).select(pl.all().gather(sig_idx)).with_columns(
        kind=pl.lit("idps"), protocol=pl.lit("TCP"), source_ip=pl.lit(world.compromised),
        destination_ip=pl.Series(IDPS_IPS).gather(ip_idx),
        destination_port=pl.when(pl.Series(_uniform(k_idps, seed, h, "idps-port")) < 0.5)
        .then(443).otherwise(4444).cast(pl.Int32),
    )
    # An informational signature from a CI runner: not every IDPS row is the incident.
    ci = world.pods["ci-runner"][0]
    benign = pl.DataFrame({
        "signature_id": [BENIGN_IDPS[0]], "description": [BENIGN_IDPS[1]], "category": [BENIGN_IDPS[2]],
        "severity": pl.Series([BENIGN_IDPS[3]], dtype=pl.Int32), "action": [BENIGN_IDPS[4]],
        "kind": ["idps"], "protocol": ["TCP"], "source_ip": [ci],
        "destination_ip": [world.dns["codeload.github.com"][0]], "destination_port": pl.Series([443], dtype=pl.Int32),
    })
    out = pl.concat([ti, idps, benign], how="diagonal_relaxed")
    n = out.height
    out = out.with_columns(
        time=((_uniform(n, seed, h, "thr-t") * 3.6e9).cast(pl.Int64) + t0_us).cast(pl.Datetime("us")),
        source_port=(_uniform(n, seed, h, "thr-sport") * (60999 - 32768)).floor().cast(pl.Int32) + 32768,
        firewall=pl.lit(FIREWALL_ID),
        _tie=pl.int_range(n),
    ).sort("time", "_tie")
    for c in THREAT_SCHEMA:
        if c not in out.columns:
            out = out.with_columns(pl.lit(None).alias(c))
    return out.select([pl.col(c).cast(t) for c, t in THREAT_SCHEMA.items()])


def default_start(hours: int) -> datetime:
    now = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    return now - timedelta(hours=hours)


def burst_window(hours: int) -> tuple[int, int]:
    """Hours [first, last) of the SNAT burst: three hours from the middle of the window."""
    first = hours // 2 if hours > 1 else 0
    return first, min(hours, first + 3)


def iter_hours(hours: int, events_per_hour: int, seed: int, start: datetime, hot_share: float, world=None):
    """Yield (hour index, flows, dns_queries, threats) for each hour; frames are canonical."""
    world = world or _World(seed)
    b0, b1 = burst_window(hours)
    for h in range(hours):
        t0 = start + timedelta(hours=h)
        t0_us = _epoch_us(t0)
        hot = hot_share if b0 <= h < b1 else 0.0
        flows = _flows_hour(world, seed, h, t0_us, events_per_hour, hot)
        dns = _dns_hour(world, seed, h, t0_us, flows, events_per_hour)
        threats = _threats_hour(world, seed, h, t0_us, events_per_hour)
        yield h, flows.select([pl.col(c).cast(t) for c, t in FLOW_SCHEMA.items()]), dns, threats


def used_rules(flows: pl.DataFrame) -> set[tuple[str, str, str]]:
    """(rule collection group, rule collection, rule) of every rule that logged a hit."""
    return set(
        flows.filter(pl.col("rule").is_not_null())
        .select("rule_collection_group", "rule_collection", "rule").unique().iter_rows()
    )


def build_truth(world: _World, used: set[tuple[str, str, str]], start: datetime, hours: int,
                hot_share: float) -> dict[str, Any]:
    """The ground truth written as ``truth.json``; ``used`` are the rules that logged hits."""
    legit = []
    pairs = world.pairs
    for tid, t in enumerate(world.templates):
        if t.role not in ("legit", "hot"):
            continue
        acts = set(pairs.filter(pl.col("tid") == tid)["action"].to_list())
        if len(acts) != 1:
            raise ValueError(f"template {t.fqdn or t.ip} has mixed verdicts {acts}")
        legit.append({
            "workload": t.workload,
            "sources": sorted({f"{s}/32" for s in t.sources}, key=lambda c: ipaddress.ip_network(c)),
            "destination": t.fqdn or t.ip,
            "dns_name": t.fqdn or t.dns_name,
            "kind": t.kind,
            "protocol": t.protocol,
            "port": t.port,
            "initially": "allowed" if acts == {"Allow"} else "denied",
            "bundle": t.bundle,
        })
    unused = [r for (g, c, r) in rule_names(world.policy) if (g, c, r) not in used]
    b0, b1 = burst_window(hours)
    noise = sorted({WPAD_NAME} | {
        t.fqdn + sfx for t in world.templates if t.fqdn
        for sfx in (".svc.cluster.local", ".reddog.microsoft.com")
    })
    iso = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "firewall": FIREWALL_ID,
        "policy_name": POLICY_NAME,
        "start": iso(start),
        "end": iso(start + timedelta(hours=hours)),
        "subnets": dict(SUBNETS),
        "hosts": {"nodes": world.nodes, "vms": world.vms, "pods": world.pods},
        "firewall_public_ip": FIREWALL_PUBLIC_IP,
        "api_server_ip": API_SERVER_IP,
        "legitimate": legit,
        "malicious": {
            "compromised_source": world.compromised,
            "threat_intel_fqdns": [x[0] for x in TI_FQDNS],
            "idps_destination_ips": list(IDPS_IPS),
            "tunnel_domain": TUNNEL_DOMAIN,
            "denied_destinations": [x[0] for x in TI_FQDNS] + list(IDPS_IPS),
        },
        "snat_hot_destination": {
            "ip": HOT_IP, "port": 443, "protocol": "HTTPS", "fqdn": HOT_FQDN,
            "burst_start": iso(start + timedelta(hours=b0)), "burst_end": iso(start + timedelta(hours=b1)),
            "share": hot_share,
        },
        "noise_names": noise,
        "unused_rules": unused,
        "dns_name_to_ips": world.dns,
    }


def generate(hours: int = 24, events_per_hour: int = 100_000, seed: int = 7, start: datetime | None = None,
             hot_share: float = 0.35) -> Scenario:
    """Simulate ``hours`` of logs; ``events_per_hour`` counts flow rows (DNS and threats come on top)."""
    check_args(hours, events_per_hour, hot_share)
    start = _naive_utc(start) if start is not None else default_start(hours)
    world = _World(seed)
    parts = list(iter_hours(hours, events_per_hour, seed, start, hot_share, world))
    flows = pl.concat([p[1] for p in parts])
    dns = pl.concat([p[2] for p in parts])
    threats = pl.concat([p[3] for p in parts])
    truth = build_truth(world, used_rules(flows), start, hours, hot_share)
    return Scenario(flows, dns, threats, truth, world.policy, seed, start, hours)


def check_args(hours: int, events_per_hour: int, hot_share: float) -> None:
    if hours < 1 or events_per_hour < 1:
        raise ValueError("hours and events_per_hour must be positive")
    if not 0.0 <= hot_share < 1.0:
        raise ValueError("hot_share must be in [0, 1)")


def _naive_utc(dt: datetime) -> datetime:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt
