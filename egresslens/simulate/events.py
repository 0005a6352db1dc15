"""One hour of canonical events (flows, DNS queries, threats) drawn from the scenario's world, vectorised."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

from egresslens.simulate.base import (
    BENIGN_IDPS,
    DNS_SCHEMA,
    IDPS_IPS,
    IDPS_SIGNATURES,
    THREAT_SCHEMA,
    TI_FQDNS,
    TUNNEL_DOMAIN,
    WPAD_NAME,
    _pick,
    _uniform,
)


def _epoch_us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + dt.microsecond


def _flows_hour(world: Any, seed: int, h: int, t0_us: int, n: int, hot: float) -> pl.DataFrame:
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
        firewall=pl.lit(world.firewall_id),
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


def _dns_hour(world: Any, seed: int, h: int, t0_us: int, flows: pl.DataFrame, n_events: int,
              extra: pl.DataFrame | None = None) -> pl.DataFrame:
    """DNS proxy queries preceding the hour's connections, plus noise, failures and tunnelling; `extra`:
    more client queries (source_ip, query_name, time, query_type, response_code, _answers)."""
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
    tun_names = _base32_labels(k_tun, seed, h, "tunnel")
    if world.incident:  # spread over 1-3 label levels: <40>.t.zone, <40>.<20>.t.zone, <40>.<20>.<12>.t.zone
        depth = (_uniform(k_tun, seed, h, "tun-depth") * 3).floor()
        mid = "." + _base32_labels(k_tun, seed, h, "tunnel-mid").str.slice(0, 20)
        low = "." + _base32_labels(k_tun, seed, h, "tunnel-low").str.slice(0, 12)
        tun_names = pl.select(pl.when(depth == 0).then(tun_names).when(depth == 1).then(tun_names + mid)
                              .otherwise(tun_names + mid + low)).to_series()
    tun = pl.DataFrame({
        "source_ip": [world.compromised] * k_tun,
        "query_name": tun_names + "." + TUNNEL_DOMAIN,
        "time": ((_uniform(k_tun, seed, h, "tun-t") * 3.6e9).cast(pl.Int64) + t0_us).cast(pl.Datetime("us")),
    }).with_columns(
        query_type=pl.lit("TXT"),
        response_code=pl.when(_uniform(k_tun, seed, h, "tun-rc") < 0.65).then(pl.lit("NXDOMAIN"))
        .otherwise(pl.lit("NOERROR")),
        _answers=pl.lit(1),
    )
    ok = pl.concat([q, aaaa, expand, wpad, tun] + ([extra] if extra is not None else []), how="diagonal_relaxed")
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
    out = pl.concat([ok, fail], how="diagonal_relaxed").with_columns(firewall=pl.lit(world.firewall_id))
    out = out.with_columns(_tie=pl.int_range(out.height)).sort("time", "_tie")
    return out.select([pl.col(c).cast(t) for c, t in DNS_SCHEMA.items()])


def _threats_hour(world: Any, seed: int, h: int, t0_us: int, n_events: int) -> pl.DataFrame:
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
        firewall=pl.lit(world.firewall_id),
        _tie=pl.int_range(n),
    ).sort("time", "_tie")
    for c in THREAT_SCHEMA:
        if c not in out.columns:
            out = out.with_columns(pl.lit(None).alias(c))
    return out.select([pl.col(c).cast(t) for c, t in THREAT_SCHEMA.items()])
