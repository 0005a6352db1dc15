"""The incident scenario's own events (`generate(..., incident=True)`, `egresslens simulate --incident`).

On top of the everyday traffic, from the *onset* hour (a third into the window, after the 6-hour
baseline a store without history uses):

- the **beacon pod** (the compromised report-cron pod, which also tunnels and hits threat intel)
  resolves and calls the C2 name every 60 s; it also connects to the C2's bare address with no DNS
  query, a couple of times an hour by coincidence just after a beacon query (a few percent of those
  connections: never enough to say the address "resolves from" the C2 name); and in the hour
  after the onset it queries a burst of generated-looking names (DGA);
- the **contact pod** (an orders pod, another spoke) reaches the C2 name a few times, irregularly,
  then uploads to a storage account no one else uses;
- a CI runner pulls from a **typosquat** of the package host the other runners use (a swapped pair of
  letters: `files.pyhtonhosted.org`).

The scenario's templates add the package hosts themselves, drop the nodes' port-80 traffic (a week
without any, while the AKS rule needs Http:80 too) and the policy gains the required NTP rule, unused.
Everything is seeded from (seed, hour, stream): the same arguments give the same rows.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from egresslens.simulate.base import C2_FQDN, C2_IP, EXFIL_FQDN, FLOW_SCHEMA, _uniform
from egresslens.simulate.events import _base32_labels
from egresslens.simulate.policy import evaluate

BEACON_PERIOD_S = 60
DGA_NAMES = 120
_DGA_TLDS = ("com", "net", "org", "info", "top")
CONTACT_HOURS = (2, 5, 6)  # hours after the onset the contact pod reaches the C2 name
UPLOAD_FROM = 6  # hours after the onset the contact pod starts uploading
UPLOADS_PER_HOUR = 30
BARE_PER_HOUR = 40


def onset(hours: int) -> int:
    """The first hour of the incident: a third into the window (after the 6-hour baseline)."""
    return max(1, hours // 3)


def dga_names(seed: int) -> list[str]:
    """The generated names of the burst (one owner zone each)."""
    labels = _base32_labels(DGA_NAMES, seed, "dga").str.slice(0, 16).to_list()
    return [f"{lb}.{_DGA_TLDS[i % len(_DGA_TLDS)]}" for i, lb in enumerate(labels)]


def _us(offset_s: pl.Expr, t0_us: int) -> pl.Expr:
    return (pl.lit(t0_us) + (offset_s * 1_000_000).cast(pl.Int64)).cast(pl.Datetime("us"))


def flow_rows(world: Any, rows: pl.DataFrame, t0_us: int) -> pl.DataFrame:
    """Canonical flow rows (with `_dns_name`) for (offset_s, source_ip, kind, protocol, ip, fqdn, port, dns) rows,
    each decided by the policy."""
    if rows.is_empty():
        return pl.DataFrame(schema={**FLOW_SCHEMA, "_dns_name": pl.String})
    from egresslens.estate import parse_policy

    rules = world.site.rules if world.site is not None else parse_policy(world.policy)
    verdicts = {}
    for src, kind, proto, ip, fqdn, port in rows.select("source_ip", "kind", "protocol", "ip", "fqdn", "port").unique().iter_rows():
        v = evaluate(world.policy, kind=kind, protocol=proto, source_ip=src, destination_port=port, destination_ip=ip,
                     destination_fqdn=fqdn, service_tags=world.service_tags, dns=world.dns, rules=rules)
        verdicts[(src, kind, proto, ip, fqdn, port)] = (v.action, v.action_reason, v.policy, v.rule_collection_group,
                                                        v.rule_collection, v.rule)
    keys = list(verdicts)
    vt = pl.DataFrame([k + verdicts[k] for k in keys], orient="row", schema={
        "source_ip": pl.String, "kind": pl.String, "protocol": pl.String, "ip": pl.String, "fqdn": pl.String,
        "port": pl.Int32, "action": pl.String, "action_reason": pl.String, "policy": pl.String,
        "rule_collection_group": pl.String, "rule_collection": pl.String, "rule": pl.String})
    df = rows.with_columns(pl.col("port").cast(pl.Int32)).join(
        vt, on=["source_ip", "kind", "protocol", "ip", "fqdn", "port"], how="left", nulls_equal=True)
    n = df.height
    app = pl.col("kind") == "application"
    out = df.select(
        time=_us(pl.col("offset_s"), t0_us), firewall=pl.lit(world.firewall_id), kind="kind", protocol="protocol",
        icmp_type=pl.lit(None, dtype=pl.Int32), source_ip="source_ip",
        source_port=(_uniform(n, world.seed, t0_us, "inc-sport") * 28000).cast(pl.Int32) + 32768,
        destination_ip=pl.when(app).then(None).otherwise(pl.col("ip")), destination_fqdn="fqdn",
        destination_port="port", target_url=pl.lit(None, dtype=pl.String), action="action",
        action_reason="action_reason", policy="policy", rule_collection_group="rule_collection_group",
        rule_collection="rule_collection", rule="rule", web_category=pl.lit(None, dtype=pl.String),
        translated_ip=pl.lit(None, dtype=pl.String), translated_port=pl.lit(None, dtype=pl.Int32),
        is_tls_inspected=pl.when(app).then(pl.lit(False)), is_explicit_proxy=pl.when(app).then(pl.lit(False)),
        _dns_name="dns")
    return out.select([pl.col(c).cast(t) for c, t in {**FLOW_SCHEMA, "_dns_name": pl.String}.items()])


def incident_hour(world: Any, seed: int, h: int, hours: int, t0_us: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(extra flow rows with `_dns_name`, extra DNS queries as source_ip, query_name, time, query_type,
    response_code, _answers) of hour `h`."""
    first = onset(hours)
    flows: list[dict] = []
    dns: list[dict] = []
    if h >= first:
        beacon, contact = world.compromised, world.contact_pod
        jitter = _uniform(3600 // BEACON_PERIOD_S, seed, h, "beacon-jitter").to_list()
        for i, j in enumerate(jitter):  # a query, then the HTTPS call to it 0.4 s later
            q = i * BEACON_PERIOD_S + 3 + j * 0.5
            dns.append({"source_ip": beacon, "query_name": C2_FQDN, "offset_s": q, "query_type": "A",
                        "response_code": "NOERROR"})
            flows.append({"offset_s": q + 0.4, "source_ip": beacon, "kind": "application", "protocol": "HTTPS",
                          "ip": None, "fqdn": C2_FQDN, "port": 443, "dns": None})
        # the bare C2 address: no query of its own; two connections an hour land just after a beacon query
        bare = _uniform(BARE_PER_HOUR, seed, h, "bare-c2").to_list()
        offsets = [3 + jitter[7] * 0.5 + 7 * BEACON_PERIOD_S + 1.0, 3 + jitter[41] * 0.5 + 41 * BEACON_PERIOD_S + 1.2]
        offsets += [u * 3599 for u in bare[2:]]
        flows += [{"offset_s": o, "source_ip": beacon, "kind": "network", "protocol": "TCP", "ip": C2_IP, "fqdn": None,
                   "port": 8443, "dns": None} for o in offsets]
        if h == first + 1:  # the DGA burst: a second apart, every name NXDOMAIN
            dns += [{"source_ip": beacon, "query_name": n, "offset_s": 600 + i, "query_type": "A",
                     "response_code": "NXDOMAIN"} for i, n in enumerate(dga_names(seed))]
        if h - first in CONTACT_HOURS:  # the contact pod: a query and a call, at irregular times
            for k, u in enumerate(_uniform(2, seed, h, "contact").to_list()):
                o = 60 + u * 3000 + k * 137
                dns.append({"source_ip": contact, "query_name": C2_FQDN, "offset_s": o, "query_type": "A",
                            "response_code": "NOERROR"})
                flows.append({"offset_s": o + 0.3, "source_ip": contact, "kind": "application", "protocol": "HTTPS",
                              "ip": None, "fqdn": C2_FQDN, "port": 443, "dns": None})
        if h - first >= UPLOAD_FROM:  # ... then uploads to a storage account no one else uses
            flows += [{"offset_s": 30 + u * 3500, "source_ip": contact, "kind": "application", "protocol": "HTTPS",
                       "ip": None, "fqdn": EXFIL_FQDN, "port": 443, "dns": EXFIL_FQDN}
                      for u in _uniform(UPLOADS_PER_HOUR, seed, h, "upload").to_list()]
    fschema = {"offset_s": pl.Float64, "source_ip": pl.String, "kind": pl.String, "protocol": pl.String,
               "ip": pl.String, "fqdn": pl.String, "port": pl.Int32, "dns": pl.String}
    f = flow_rows(world, pl.DataFrame(flows, schema=fschema), t0_us)
    d = pl.DataFrame(dns, schema={"source_ip": pl.String, "query_name": pl.String, "offset_s": pl.Float64,
                                  "query_type": pl.String, "response_code": pl.String})
    d = d.select("source_ip", "query_name", time=_us(pl.col("offset_s"), t0_us), query_type="query_type",
                 response_code="response_code", _answers=pl.when(pl.col("response_code") == "NOERROR").then(1)
                 .otherwise(0).cast(pl.Int32))
    return f, d
