"""The result of one suspicion assessment and the thresholds behind it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from egresslens.analyse import Coverage, Window, json_rows

# Order of the finding kinds in every output (most severe first).
KINDS = ("tunnelling", "threat_intel", "idps", "generated", "beacon", "lookalike", "idn", "newly_seen")
SUGGESTED_ACTION = ("isolate the workload (cordon/quarantine the pod or VM, rotate its credentials) and add a "
                    "deny rule for the names it reached, above every allow rule")


@dataclass(frozen=True)
class SuspicionConfig:
    """Detection thresholds (`[suspicion]` in a recommend config file)."""

    # tunnelling: at least this many unique names under one zone and `min_signals` of long labels /
    # high entropy / TXT-NULL share / NXDOMAIN share / unique-name ratio, one of them long labels or entropy
    min_unique_names: int = 25
    min_signals: int = 3
    long_label: float = 24.0  # mean characters left of the zone (dots not counted)
    high_entropy: float = 3.5  # bits per character of that part
    txt_null_share: float = 0.3
    nxdomain_share: float = 0.5
    unique_ratio: float = 0.5
    entropy_sample: int = 200  # unique names per zone used for the entropy estimate
    zone_cover: float = 0.9  # a flagged zone is reported instead of its flagged parent when it holds this share
    source_min_tunnel_names: int = 5  # unique names a source sent under a tunnelling zone to be marked
    # generated-looking (DGA) owner zones
    dga_min_length: int = 10
    dga_entropy: float = 3.2
    dga_nxdomain_share: float = 0.5
    # IDPS: a source is compromised on severity <= this, or any drop/deny
    idps_max_severity: int = 2
    # newly seen: first seen after the baseline (history before the window, else its first hours)
    baseline_hours: float = 6.0
    lookback_days: int = 30
    # beacon: a source reaching a newly seen zone at regular intervals
    beacon_min_events: int = 8
    beacon_min_period_s: float = 10.0
    beacon_max_cv: float = 0.25
    # ASCII look-alikes: owner zones many clean sources use are references too (besides the catalogue and
    # the policy); plain one-edit look-alikes need a reference label at least this long
    lookalike_reference_sources: int = 3
    lookalike_min_length: int = 5
    # findings that grow with the number of names and withhold nothing (newly seen zones without another
    # signal): the busiest listed, the rest counted in `Suspicion.omitted`
    max_listed: int = 1000


NAME_SCHEMA: dict[str, Any] = {
    "subject": pl.String, "scope": pl.String, "kind": pl.String, "never_allow": pl.Boolean, "withhold": pl.Boolean,
    "domain": pl.String, "escalates": pl.Boolean, "detail": pl.String, "queries": pl.Int64,
    "unique_names": pl.Int64, "unique_ratio": pl.Float64, "mean_label_length": pl.Float64, "entropy": pl.Float64,
    "txt_null_share": pl.Float64, "nxdomain_share": pl.Float64, "signals": pl.Int32, "unicode": pl.String,
    "looks_like": pl.String, "sources": pl.List(pl.String), "first_seen": pl.Datetime("us"),
    "last_seen": pl.Datetime("us"),
}
EVIDENCE = pl.Struct({"kind": pl.String, "subject": pl.String, "detail": pl.String, "events": pl.Int64,
                      "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us")})
SOURCE_SCHEMA: dict[str, Any] = {"source_ip": pl.String, "kinds": pl.List(pl.String), "evidence": pl.List(EVIDENCE),
                                 "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us"),
                                 "hours_seen": pl.Int64, "days_seen": pl.Int64}


def empty_names() -> pl.DataFrame:
    return pl.DataFrame(schema=NAME_SCHEMA)


def conform(df: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    if df.is_empty():
        return pl.DataFrame(schema=schema)
    return df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, t).alias(c) for c, t in schema.items()])


@dataclass
class Suspicion:
    """Suspicious names, zones, addresses and compromised sources of one window.

    `names`: one row per finding (NAME_SCHEMA). `scope` is `zone` (the subject and every name under
    it), `name` (exactly the subject) or `ip`. `domain` is the owner zone; when `escalates`, every
    name in it is withheld too (never above a public or multi-tenant suffix). `withhold` rows are
    never proposed for allow; `never_allow` rows are findings (exit code 1).
    `sources`: compromised source addresses with their evidence, first contact (`first_seen`) and
    the hours and days they were seen in contact with withheld subjects (SOURCE_SCHEMA).
    `coverage`: the hours of the window that hold data.
    """

    window: Window
    config: SuspicionConfig
    names: pl.DataFrame = field(default_factory=empty_names)
    sources: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SOURCE_SCHEMA))
    coverage: Coverage | None = None
    omitted: dict[str, int] = field(default_factory=dict)  # findings per kind not listed in `names` (max_listed)

    def __post_init__(self) -> None:
        self._exact: dict[str, str] = {}
        self._zones: dict[str, str] = {}
        self._ips: dict[str, str] = {}
        for r in self.names.filter(pl.col("withhold")).iter_rows(named=True):
            what = f"{r['kind'].replace('_', ' ')}: {r['detail']}"
            target = {"zone": self._zones, "name": self._exact, "ip": self._ips}[r["scope"]]
            target.setdefault(r["subject"], what)
            if r["escalates"] and r["domain"] and r["domain"] != r["subject"]:
                self._zones.setdefault(r["domain"], f"in the owner zone {r['domain']} of {r['subject']} ({what})")
        self._sources = {r["source_ip"]: r for r in self.sources.iter_rows(named=True)}

    # -- questions the other analyses ask ----------------------------------------------------
    def name_reason(self, name: str | None) -> str | None:
        """Why `name` must not be allowed (None when nothing is known against it)."""
        if not name:
            return None
        name = name.lower()
        if name in self._exact:
            return self._exact[name]
        parts = name.split(".")
        for i in range(len(parts)):
            z = ".".join(parts[i:])
            if z in self._zones:
                return self._zones[z]
        return None

    def ip_reason(self, ip: str | None) -> str | None:
        return self._ips.get(ip) if ip else None

    def is_compromised(self, source_ip: str | None) -> bool:
        return source_ip in self._sources

    def source_summary(self, source_ip: str) -> str:
        r = self._sources[source_ip]
        return f"{source_ip} ({', '.join(k.replace('_', ' ') for k in r['kinds'])})"

    def first_contact(self, source_ip: str | None) -> datetime | None:
        """When a compromised source first reached something withheld (None for a clean source)."""
        r = self._sources.get(source_ip)
        return r["first_seen"] if r else None

    def source(self, source_ip: str) -> dict[str, Any] | None:
        """The compromised source's row (SOURCE_SCHEMA as a dict), None for a clean source."""
        return self._sources.get(source_ip)

    def evidence_text(self, source_ip: str, per_kind: int = 3) -> str:
        """The evidence against a compromised source in one bounded sentence: at most `per_kind` details
        per kind of evidence, the rest counted (a DGA burst is hundreds of zones)."""
        r = self._sources[source_ip]
        by_kind: dict[str, list[str]] = {}
        for e in r["evidence"]:
            by_kind.setdefault(e["kind"], []).append(e["detail"])
        parts = []
        for kind, details in by_kind.items():
            text = "; ".join(details[:per_kind])
            if len(details) > per_kind:
                text += f"; and {len(details) - per_kind} more"
            parts.append(f"{kind.replace('_', ' ')}: {text}")
        first = r["first_seen"]
        when = f"first contact {first:%Y-%m-%d %H:%M:%S}, last {r['last_seen']:%Y-%m-%d %H:%M:%S}" if first else ""
        if first is not None and self.coverage is not None and self.coverage.at_start(first):
            when += " (in the first hour that holds data: it may have begun earlier)"
        return "; ".join(parts) + (f" ({when}; seen in {r['hours_seen']} hour(s) on {r['days_seen']} day(s))"
                                   if when else "")

    @property
    def compromised(self) -> list[str]:
        return sorted(self._sources)

    @property
    def tunnel_zones(self) -> pl.DataFrame:
        return self.names.filter(pl.col("kind") == "tunnelling")

    @property
    def has_findings(self) -> bool:
        return bool(self.names["never_allow"].any()) or self.sources.height > 0

    def to_json(self, limit: int | None = 500) -> dict[str, Any]:
        """The `suspicion` block of `dns --json`, `recommend --format json` and the report."""
        names = json_rows(self.names.drop("withhold"), limit)
        srcs = []
        for r in self.sources.head(limit).iter_rows(named=True):
            srcs.append({"source_ip": r["source_ip"], "kinds": r["kinds"], "first_seen": _iso(r["first_seen"]),
                         "last_seen": _iso(r["last_seen"]), "hours_seen": r["hours_seen"],
                         "days_seen": r["days_seen"], "suggested_action": SUGGESTED_ACTION,
                         "evidence": [{**e, "first_seen": _iso(e["first_seen"]), "last_seen": _iso(e["last_seen"])}
                                      for e in r["evidence"]]})
        return {"window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
                "config": asdict(self.config),
                "tunnel_zones": sorted(self.tunnel_zones["subject"].to_list()),
                "compromised_sources": self.compromised,
                "coverage": self.coverage.to_json() if self.coverage is not None else None,
                "names_total": self.names.height + sum(self.omitted.values()), "sources_total": self.sources.height,
                "names_not_listed": dict(self.omitted),
                "names": names, "sources": srcs}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None
