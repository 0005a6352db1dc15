"""The batch job of the simulated estate (`generate(..., batch=True)`, `egresslens simulate --batch-job`,
the demo): the VM spoke's nightly backup copies its files to one storage account, a new HTTPS connection
per blob (no keep-alive) from every VM at once, for BATCH_MINUTES minutes from the start of one hour.

Its rate does not grow with the rest of the traffic (`events_per_hour`): about BATCH_PER_MINUTE new
connections a minute to one destination, which at the firewall's default 240-second hold needs
~4,400 of the 4,992 SNAT ports one public IP and two instances give per destination: a SNAT warning
(80 %) that stays under critical (95 %). The policy gains the rule that allows it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from egresslens.simulate.base import _uniform

BATCH_FQDN = "stbackupweu01.blob.core.windows.net"
BATCH_RULE = "allow-nightly-backup"
BATCH_PER_MINUTE = 1_100  # new connections a minute once the job runs at full speed
BATCH_MINUTES = 20
_RAMP = (0.45, 0.8)  # the first minutes, as the job's workers start


def batch_hour_index(hours: int) -> int:
    """The hour the backup runs in: two thirds into the window (after the SNAT burst of the hot API)."""
    return min(hours - 1, (2 * hours) // 3)


def per_minute(seed: int) -> list[int]:
    """New connections in each minute of the job: ramp up, then full speed within ±3 %."""
    jitter = _uniform(BATCH_MINUTES, seed, "batch-rate").to_list()
    out = []
    for m, u in enumerate(jitter):
        level = _RAMP[m] if m < len(_RAMP) else 1.0
        out.append(int(BATCH_PER_MINUTE * level * (0.97 + 0.06 * u)))
    return out


def batch_flows(world: Any, seed: int, h: int, hours: int) -> pl.DataFrame:  # noqa: ANN401 - scenario._World
    """(offset_s, source_ip, kind, protocol, ip, fqdn, port, dns) rows of the job in hour `h` (none in
    any other hour), for :func:`egresslens.simulate.incident.flow_rows` to decide against the policy."""
    schema = {"offset_s": pl.Float64, "source_ip": pl.String, "kind": pl.String, "protocol": pl.String,
              "ip": pl.String, "fqdn": pl.String, "port": pl.Int32, "dns": pl.String}
    if h != batch_hour_index(hours):
        return pl.DataFrame(schema=schema)
    counts = per_minute(seed)
    n = sum(counts)
    minute = pl.Series([m for m, c in enumerate(counts) for _ in range(c)], dtype=pl.Float64)
    vms = world.vms
    rows = pl.DataFrame({
        "offset_s": minute * 60 + _uniform(n, seed, h, "batch-second") * 60,
        "source_ip": pl.Series(vms).gather((_uniform(n, seed, h, "batch-vm") * len(vms)).floor().cast(pl.Int64)),
    })
    return rows.with_columns(kind=pl.lit("application"), protocol=pl.lit("HTTPS"), ip=pl.lit(None, pl.String),
                             fqdn=pl.lit(BATCH_FQDN), port=pl.lit(443, pl.Int32), dns=pl.lit(BATCH_FQDN)
                             ).select(list(schema)).cast(schema)


def truth(world: Any, start, hours: int) -> dict[str, Any]:  # noqa: ANN001, ANN401
    from datetime import timedelta

    t0 = start + timedelta(hours=batch_hour_index(hours))
    iso = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {"fqdn": BATCH_FQDN, "port": 443, "protocol": "HTTPS", "sources": list(world.vms), "rule": BATCH_RULE,
            "start": iso(t0), "end": iso(t0 + timedelta(minutes=BATCH_MINUTES)),
            "connections_per_minute": per_minute(world.seed)}
