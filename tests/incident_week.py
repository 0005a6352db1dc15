"""A harder week than the simulator makes, built like the one a security engineer tried: ten spoke subnets
with their own needs, two compromised pods, a typosquat, a data-exfiltration target, a DGA burst, a
shadowed, an unused and an over-broad rule, the AKS platform rules with no port-80 traffic and an idle
NTP rule, and a store holding 7 days that is read over 30.

`build(path)` writes the store and returns (policy as `az ... rule-collection-group list` JSON, facts).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import polars as pl

from egresslens import store
from egresslens.ingest import store_canonical_frames
from egresslens.simulate.base import DNS_SCHEMA, FLOW_SCHEMA, THREAT_SCHEMA

START = datetime(2026, 11, 2)
DAYS = 7
END = START + timedelta(days=DAYS)
SPOKES = {k: f"10.{10 + k}.1.0/24" for k in range(1, 11)}  # ten spokes, not adjacent: ten source groups
NODES = [f"10.30.0.{i}" for i in (4, 5, 6)]
BEACON_POD = "10.14.1.13"  # beacons to the C2 name, calls its bare address, DGA burst
CONTACT_POD = "10.17.1.13"  # reaches the C2 name a few times, then uploads
TYPO_POD = "10.13.1.13"
C2 = "sync.cdn-update-example.org"
C2_IP = "193.42.33.118"
EXFIL = "stbkp7f3k2q.blob.core.windows.net"
TYPO = "files.pyhtonhosted.org"
PRE_CONTACT = "reports.team7-example.com"  # only the contact pod, only before its first contact
API_SERVER = "20.103.218.77"
DB_IP, DB_NAME = "51.124.61.203", "orders-db.pg-example-hosting.net"
ONSET = 24  # hours after START: the beacon starts
CONTACT_HOURS = (50, 53, 61)
UPLOAD_FROM = 62


def pods(k: int) -> list[str]:
    return [f"10.{10 + k}.1.{i}" for i in (10, 11, 12, 13)]


def _u(*parts) -> float:
    """A stable uniform number in [0, 1) for the parts."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") / 2**64


def _policy() -> list[dict]:
    def app(name, sources, fqdns=(), tags=(), protocols=(("Https", 443),)):
        return {"ruleType": "ApplicationRule", "name": name, "sourceAddresses": list(sources), "sourceIpGroups": [],
                "protocols": [{"protocolType": p, "port": n} for p, n in protocols], "targetFqdns": list(fqdns),
                "targetUrls": [], "fqdnTags": list(tags), "webCategories": [], "terminateTLS": False,
                "destinationAddresses": []}

    def net(name, protos, sources, ports, addresses):
        return {"ruleType": "NetworkRule", "name": name, "ipProtocols": protos, "sourceAddresses": sources,
                "sourceIpGroups": [], "destinationAddresses": addresses, "destinationIpGroups": [],
                "destinationFqdns": [], "destinationPorts": ports}

    def coll(name, priority, rules):
        return {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": name, "priority": priority,
                "action": {"type": "Allow"}, "rules": rules}

    return [
        {"name": "aks-egress", "priority": 200, "ruleCollections": [
            coll("aksfwnr", 100, [net("apiudp", ["UDP"], ["10.30.0.0/16"], ["1194"], ["AzureCloud.westeurope"]),
                                  net("apitcp", ["TCP"], ["10.30.0.0/16"], ["9000"], ["AzureCloud.westeurope"]),
                                  net("apintp", ["UDP"], ["10.30.0.0/16"], ["123"], ["AzureCloud.westeurope"])]),
            coll("aksfwar", 200, [app("allow-aks-fqdn-tag", ["10.30.0.0/16"], tags=["AzureKubernetesService"],
                                      protocols=(("Http", 80), ("Https", 443)))])]},
        {"name": "app-egress", "priority": 300, "ruleCollections": [
            coll("broad-net", 100, [net("allow-db-range", ["TCP"], ["10.0.0.0/8"], ["1-65535"], ["51.124.0.0/16"])]),
            coll("legacy", 150, [net("allow-smtp-relay", ["TCP"], ["10.0.0.0/8"], ["25"], ["198.51.100.25"])]),
            coll("workload", 200, [app("allow-team1-wide", ["10.0.0.0/8"], fqdns=["*.team1-example.com"]),
                                   app("allow-api-team1", ["10.11.1.0/24"], fqdns=["api.team1-example.com"])])]},
    ]


class _Rows:
    def __init__(self):
        self.flows: list[dict] = []
        self.dns: list[dict] = []
        self.threats: list[dict] = []

    def query(self, t: datetime, src: str, name: str, code: str = "NOERROR") -> None:
        self.dns.append({"time": t, "firewall": "fw", "source_ip": src, "query_name": name, "query_type": "A",
                         "response_code": code, "protocol": "udp", "query_class": "IN", "duration_s": 0.003})

    def app(self, t: datetime, src: str, fqdn: str, *, port: int = 443, allow: tuple | None = None,
            resolve: bool = True) -> None:
        if resolve:
            self.query(t - timedelta(milliseconds=20), src, fqdn)
        self.flows.append({"time": t, "firewall": "fw", "kind": "application", "protocol": "HTTPS" if port == 443 else "HTTP",
                           "source_ip": src, "source_port": 40000, "destination_fqdn": fqdn, "destination_port": port,
                           **_verdict(allow), "is_tls_inspected": False, "is_explicit_proxy": False})

    def net(self, t: datetime, src: str, ip: str, port: int, proto: str = "TCP", *, allow: tuple | None = None,
            name: str | None = None) -> None:
        if name:
            self.query(t - timedelta(milliseconds=15), src, name)
        self.flows.append({"time": t, "firewall": "fw", "kind": "network", "protocol": proto, "source_ip": src,
                           "source_port": 40001, "destination_ip": ip, "destination_port": port, **_verdict(allow)})


def _verdict(allow: tuple | None) -> dict:
    if allow is None:
        return {"action": "Deny", "action_reason": "Default Action"}
    g, c, r = allow
    return {"action": "Allow", "policy": "fw-policy", "rule_collection_group": g, "rule_collection": c, "rule": r}


def _generated(i: int) -> str:
    h = hashlib.sha256(f"dga{i}".encode()).hexdigest()
    label = "".join("abcdefghijklmnopqrstuvwxyz234567"[int(h[j:j + 2], 16) % 32] for j in range(0, 32, 2))
    return f"{label}.{('com', 'net', 'top', 'info')[i % 4]}"


def events() -> _Rows:
    rows = _Rows()
    tag = ("aks-egress", "aksfwar", "allow-aks-fqdn-tag")
    for h in range(DAYS * 24):
        t0 = START + timedelta(hours=h)
        for i, n in enumerate(NODES):  # platform traffic: HTTPS only, the tunnel, no NTP
            rows.app(t0 + timedelta(minutes=3 + i), n, "mcr.microsoft.com", allow=tag)
            rows.app(t0 + timedelta(minutes=9 + i), n, "management.azure.com", allow=tag)
            rows.net(t0 + timedelta(minutes=5 + i), n, API_SERVER, 1194, "UDP", allow=("aks-egress", "aksfwnr", "apiudp"))
            rows.net(t0 + timedelta(minutes=6 + i), n, API_SERVER, 9000, allow=("aks-egress", "aksfwnr", "apitcp"))
        if h % 2 == 0:  # every spoke's own need, from its first three pods (the fourth asks for none of it)
            for k in SPOKES:
                for j, p in enumerate(pods(k)[:3]):
                    at = t0 + timedelta(minutes=11 + j * 7 + k)
                    if k == 1:
                        rows.app(at, p, "api.team1-example.com", allow=("app-egress", "workload", "allow-team1-wide"))
                    else:
                        rows.app(at, p, f"api.team{k}-example.com")
            for j, p in enumerate(pods(3)):  # team 3 installs Python packages
                rows.app(t0 + timedelta(minutes=31 + j), p, "pypi.org")
                rows.app(t0 + timedelta(minutes=32 + j), p, "files.pythonhosted.org")
            for j, p in enumerate(pods(5)[:3]):  # team 5's database, through the over-broad network rule
                rows.net(t0 + timedelta(minutes=41 + j), p, DB_IP, 5432, name=DB_NAME,
                         allow=("app-egress", "broad-net", "allow-db-range"))
        for k in (4, 7):  # the pods that turn bad are everyday pods of their spokes first
            if k == 7 and h < CONTACT_HOURS[0] and h % 3 == 0:
                rows.app(t0 + timedelta(minutes=47), CONTACT_POD, PRE_CONTACT)
            if k == 4 and h % 2 == 1:
                rows.app(t0 + timedelta(minutes=23), BEACON_POD, "api.team4-example.com")
        if h >= 30:
            rows.app(t0 + timedelta(seconds=60 + 3500 * _u("typo", h)), TYPO_POD, TYPO)  # the typosquat, from day two
        if h in (7, 19):
            rows.app(t0 + timedelta(minutes=13), pods(2)[1], "rare.vendor-example.org")  # one-off
        if h >= ONSET:  # the beacon: resolve and call every 90 s
            for i in range(40):
                q = t0 + timedelta(seconds=i * 90 + 4 + _u("jit", h, i))
                rows.query(q, BEACON_POD, C2)
                rows.app(q + timedelta(milliseconds=400), BEACON_POD, C2, resolve=False)
            for i in range(30):  # its bare address: two an hour land just after a beacon query
                off = (7 * 90 + 5.2 + i) if i < 2 else _u("bare", h, i) * 3599
                rows.net(t0 + timedelta(seconds=off), BEACON_POD, C2_IP, 8443)
        if h == ONSET + 6:  # a DGA burst
            for i in range(80):
                rows.query(t0 + timedelta(seconds=600 + i), BEACON_POD, _generated(i), "NXDOMAIN")
        if h in CONTACT_HOURS:  # the contact pod reaches the C2 name, irregularly
            rows.app(t0 + timedelta(seconds=200 + 1700 * _u("c", h)), CONTACT_POD, C2)
        if h >= UPLOAD_FROM:  # ... then uploads where no one else goes
            for i in range(20):
                rows.app(t0 + timedelta(seconds=_u("up", h, i) * 3590), CONTACT_POD, EXFIL, resolve=i == 0)
    return rows


def _frame(rows: list[dict], schema: dict) -> pl.DataFrame:
    df = pl.DataFrame(rows, infer_schema_length=None)
    return df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, t).alias(c) for c, t in schema.items()])


def build(path) -> tuple[list[dict], dict]:
    """Write the week into a store at `path`; (policy JSON, facts)."""
    rows = events()
    con = store.connect(path)
    try:
        store_canonical_frames(con, flows=_frame(rows.flows, FLOW_SCHEMA), dns_queries=_frame(rows.dns, DNS_SCHEMA),
                               threats=_frame(rows.threats, THREAT_SCHEMA) if rows.threats else None)
    finally:
        con.close()
    facts = {"compromised": sorted([BEACON_POD, CONTACT_POD]), "never_allowed": [C2, C2_IP, EXFIL, TYPO, PRE_CONTACT],
             "dga": [_generated(i) for i in range(80)],
             "required": [("aks-egress", "aksfwar", "allow-aks-fqdn-tag"), ("aks-egress", "aksfwnr", "apiudp"),
                          ("aks-egress", "aksfwnr", "apitcp"), ("aks-egress", "aksfwnr", "apintp")]}
    return _policy(), facts
