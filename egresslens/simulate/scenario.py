"""Generate canonical rows for an AKS hub-and-spoke deployment behind Azure Firewall.

The scenario is a catalogue of *templates* (one source group talking to one destination), each
decided against the simulated policy once per source IP; hourly event volumes are then drawn from
the catalogue with vectorised Polars/Arrow operations (no Python loop per row). The same seed and
arguments always give the same frames, because every random stream is seeded from
(seed, hour, stream name).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from egresslens.simulate.base import (
    API_SERVER_IP,
    AZURECLOUD_WESTEUROPE,
    C2_FQDN,
    C2_IP,
    DB_FQDN,
    EXFIL_FQDN,
    DB_IP,
    FIREWALL_ID,
    FIREWALL_PUBLIC_IP,
    FLOW_SCHEMA,
    HOT_FQDN,
    HOT_IP,
    IDPS_IPS,
    NTP_IPS,
    PYPI_FQDNS,
    SUBNETS,
    TI_FQDNS,
    TUNNEL_DOMAIN,
    TYPOSQUAT_FQDN,
    WPAD_NAME,
    Scenario,
    Template,
    _public_ips,
)
from egresslens.simulate.events import _dns_hour, _epoch_us, _flows_hour, _threats_hour
from egresslens.simulate import batch as batch_job
from egresslens.simulate.batch import BATCH_FQDN, batch_flows
from egresslens.simulate.incident import dga_names, flow_rows, incident_hour, onset
from egresslens.simulate.policy import POLICY_NAME, build_policy, evaluate, rule_names

class _World:
    """Hosts, templates and the policy of the simulated deployment (independent of the hour)."""

    def __init__(self, seed: int, incident: bool = False, site=None, batch: bool = False):
        self.seed = seed
        self.incident = incident
        self.batch = batch  # the VM spoke's nightly backup (egresslens.simulate.batch)
        self.site = site  # egresslens.simulate.estate.Site: one firewall of an estate (None: the one firewall)
        self.firewall_id = site.firewall_id if site else FIREWALL_ID
        o = site.octet if site else 0  # each site's spokes sit 20 second-octet values below the previous one
        self.subnets = site.subnets if site else dict(SUBNETS)
        self.nodes = [f"10.{240 - o}.0.{i}" for i in range(4, 10)]
        self.vms = [f"10.{241 - o}.0.{i}" for i in range(4, 8)]
        pods = {
            "checkout": [f"10.{244 - o}.1.{i}" for i in (12, 19, 23, 37, 41, 58)],
            "catalog": [f"10.{244 - o}.2.{i}" for i in (7, 15, 29, 44)],
            "orders": [f"10.{244 - o}.4.{i}" for i in (9, 16, 33, 52, 61)],
            "ci-runner": [f"10.{244 - o}.5.{i}" for i in (11, 26, 40)],
            "ama-logs": [f"10.{244 - o}.6.{i}" for i in (5, 6)],
            "report-cron": [f"10.{244 - o}.3.{i}" for i in (17, 18)],
        }
        self.pods = pods
        self.compromised = pods["report-cron"][0]
        self.contact_pod = pods["orders"][3]  # incident: reaches the C2 name, then uploads
        self.typo_pod = pods["ci-runner"][2]  # incident: pulls from a typosquat of the package host
        self.internet_clients = _public_ips("inbound-clients", 40)
        self.dnat_target = (f"10.{241 - o}.0.10", 8443)
        self.policy = build_policy(
            node_cidr=self.subnets["aks-nodes"], pod_cidr=self.subnets["aks-pods"], vm_cidr=self.subnets["vm-spoke"],
            hot_fqdn=HOT_FQDN, firewall_public_ip=site.public_ip if site else FIREWALL_PUBLIC_IP,
            dnat_target=self.dnat_target, required_ntp=incident, batch_fqdn=BATCH_FQDN if batch else None,
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
        if not self.incident:  # the incident week has no node traffic on port 80 (the AKS rule still needs it)
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
        if self.site is not None:  # a partner API only this site's workloads call
            ts.append(T("partner", pods["orders"], "application", "HTTPS", 443, 0.5,
                        fqdn=f"api.{self.site.region}.partner-example.com"))
        if self.incident:  # Python packages for the CI runners, and a typosquat one runner pulls from
            for fq, w in zip(PYPI_FQDNS, (0.5, 0.8)):
                ts.append(T("ci-builds", pods["ci-runner"], "application", "HTTPS", 443, w, fqdn=fq))
            ts.append(T("typosquat", [self.typo_pod], "application", "HTTPS", 443, 0.15, fqdn=TYPOSQUAT_FQDN,
                        role="lookalike"))
        return ts

    def _dns(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for t in self.templates:
            if t.fqdn and t.fqdn not in names:
                names[t.fqdn] = _public_ips(t.fqdn, 2 if "blob" not in t.fqdn else 1)
        names[HOT_FQDN] = [HOT_IP]
        if self.batch:
            names[BATCH_FQDN] = _public_ips(BATCH_FQDN, 1)
        names["ntp.ubuntu.com"] = list(NTP_IPS)
        names[DB_FQDN] = [DB_IP]
        names["aks-hub-weu-9f3c1a2b.hcp.westeurope.azmk8s.io"] = [API_SERVER_IP]
        return dict(sorted(names.items()))

    def _decide(self) -> None:
        """Run each (template, source) through the policy; keep one row per pair."""
        from egresslens.estate import parse_policy

        rules = self.site.rules if self.site is not None else parse_policy(self.policy)
        rows = []
        for tid, t in enumerate(self.templates):
            for sidx, src in enumerate(t.sources):
                if t.kind == "nat":
                    nat = next(r for r in rules if r.rule_type == "nat")
                    v = ("DNAT", None, POLICY_NAME if self.site is None else nat.policy,
                         nat.rule_collection_group or None, nat.rule_collection, nat.name)
                elif t.sni_missing:
                    v = ("Deny", "SNI TLS extension was missing", None, None, None, None)
                else:
                    r = evaluate(self.policy, kind=t.kind, protocol=t.protocol, source_ip=src,
                                 destination_port=t.port, destination_ip=t.ip, destination_fqdn=t.fqdn,
                                 service_tags=self.service_tags, dns=self.dns, rules=rules)
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


def default_start(hours: int) -> datetime:
    now = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    return now - timedelta(hours=hours)


def burst_window(hours: int) -> tuple[int, int]:
    """Hours [first, last) of the SNAT burst: three hours from the middle of the window."""
    first = hours // 2 if hours > 1 else 0
    return first, min(hours, first + 3)


def iter_hours(hours: int, events_per_hour: int, seed: int, start: datetime, hot_share: float, world=None,
               incident: bool = False, batch: bool = False):
    """Yield (hour index, flows, dns_queries, threats) for each hour; frames are canonical."""
    world = world or _World(seed, incident, batch=batch)
    b0, b1 = burst_window(hours)
    for h in range(hours):
        t0 = start + timedelta(hours=h)
        t0_us = _epoch_us(t0)
        hot = hot_share if b0 <= h < b1 else 0.0
        flows = _flows_hour(world, seed, h, t0_us, events_per_hour, hot)
        extra = None
        if world.batch:
            jobs = flow_rows(world, batch_flows(world, seed, h, hours), t0_us)
            if jobs.height:
                flows = pl.concat([flows, jobs], how="vertical_relaxed").with_row_index("_tie").sort(
                    "time", "_tie").drop("_tie")
        if world.incident:
            inc_flows, extra = incident_hour(world, seed, h, hours, t0_us)
            flows = pl.concat([flows, inc_flows], how="vertical_relaxed").with_row_index("_tie").sort(
                "time", "_tie").drop("_tie")
        dns = _dns_hour(world, seed, h, t0_us, flows, events_per_hour, extra)
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
        "firewall": world.firewall_id,
        "policy_name": POLICY_NAME,
        "start": iso(start),
        "end": iso(start + timedelta(hours=hours)),
        "subnets": dict(world.subnets),
        "hosts": {"nodes": world.nodes, "vms": world.vms, "pods": world.pods},
        "firewall_public_ip": FIREWALL_PUBLIC_IP,
        "api_server_ip": API_SERVER_IP,
        "legitimate": legit,
        "malicious": {
            "compromised_source": world.compromised,
            "threat_intel_fqdns": [x[0] for x in TI_FQDNS],
            "idps_destination_ips": list(IDPS_IPS),
            "tunnel_domain": TUNNEL_DOMAIN,
            "denied_destinations": [x[0] for x in TI_FQDNS] + list(IDPS_IPS)
            + ([C2_FQDN, C2_IP, EXFIL_FQDN, TYPOSQUAT_FQDN] if world.incident else []),
            "c2_fqdn": C2_FQDN if world.incident else None,
            "tunnel_levels": [1, 2, 3] if world.incident else [1],
        },
        "incident": {
            "onset": iso(start + timedelta(hours=onset(hours))),
            "compromised_sources": sorted([world.compromised, world.contact_pod]),
            "beacon": {"source": world.compromised, "fqdn": C2_FQDN, "bare_ip": C2_IP, "period_s": 60},
            "contact": {"source": world.contact_pod, "reached": C2_FQDN, "then_uploaded_to": EXFIL_FQDN},
            "dga": {"source": world.compromised, "zones": dga_names(world.seed)},
            "lookalike": {"source": world.typo_pod, "name": TYPOSQUAT_FQDN, "imitates": PYPI_FQDNS[1]},
            "required_rules": [list(k) for k in (("aks-egress", "aksfwar", "allow-aks-fqdn-tag"),
                                                 ("aks-egress", "aksfwnr", "apiudp"), ("aks-egress", "aksfwnr", "apitcp"),
                                                 ("aks-egress", "aksfwnr", "apintp"))],
        } if world.incident else None,
        "snat_hot_destination": {
            "ip": HOT_IP, "port": 443, "protocol": "HTTPS", "fqdn": HOT_FQDN,
            "burst_start": iso(start + timedelta(hours=b0)), "burst_end": iso(start + timedelta(hours=b1)),
            "share": hot_share,
        },
        "snat_batch_job": batch_job.truth(world, start, hours) if world.batch else None,
        "noise_names": noise,
        "unused_rules": unused,
        "dns_name_to_ips": world.dns,
    }


def generate(hours: int = 24, events_per_hour: int = 100_000, seed: int = 7, start: datetime | None = None,
             hot_share: float = 0.35, incident: bool = False, batch: bool = False) -> Scenario:
    """Simulate ``hours`` of logs; ``events_per_hour`` counts flow rows (DNS and threats come on top).
    ``incident``: the compromised pod also tunnels over several label levels and beacons to a C2 host.
    ``batch``: the VM spoke's nightly backup pushes one storage account over the SNAT warning level."""
    check_args(hours, events_per_hour, hot_share)
    start = _naive_utc(start) if start is not None else default_start(hours)
    world = _World(seed, incident, batch=batch)
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
