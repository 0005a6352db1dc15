"""The state one `recommend` run carries, and the helpers every stage uses to add to it."""

from __future__ import annotations

from typing import Any

import polars as pl

from egresslens.recommend.model import Evidence, Recommendation, iso, rec_id


class Context:
    """Inputs of one run (store, window, config, policy, service tags) and what the stages add."""

    def __init__(self, con, window, config, policy, service_tags):
        self.con = con
        self.window = window
        self.config = config
        self.policy = policy
        self.service_tags = service_tags
        self.params = {"start": window.start, "end": window.end}
        self.items: list[Recommendation] = []
        self.warnings: list[str] = []
        self.evidence_keys: list[dict[str, Any]] = []  # (rec id, sgroup, kind, protocol, fqdn, ip, port)
        self.window_info = {"start": iso(window.start), "end": iso(window.end), "hours": window.hours,
                            "description": window.describe()}
        self.coll_prio: dict[str, int] = {}
        self.group_cidrs: dict[str, list[str]] = {}  # source group -> CIDRs (set once sources are grouped)
        self.dns_map: dict[str, set[str]] = {}  # destination IP -> names attributed from DNS
        self.dns_detail: dict[str, dict] = {}  # destination IP -> best DNS candidate, share of all connections
        self.susp = None  # the suspicion assessment (egresslens.suspicion.Suspicion)
        self.coverage = None  # the hours of the window that hold data (egresslens.analyse.Coverage)
        self.taint: dict[tuple, list[str]] = {}  # (kind, destination, protocol, port) -> compromised sources
        self.cut_from: dict[str, int] = {}  # compromised address -> proposed rules it was cut out of
        self.kept_required: list[str] = []  # existing rules kept whole because they carry required platform egress
        self.stats_rows = 0
        self.summaries: set[str] = set()  # ids of the "and N more" investigate items (listed after the others)
        # what this run's traffic says of each rule inherited from a parent policy (see recommend.parents)
        self.parent_verdicts: dict[tuple, dict[str, Any]] = {}

    def add(self, rec: Recommendation) -> None:
        self.items.append(rec)

    def record_cut(self, addresses: list[str]) -> None:
        """Compromised addresses a proposed rule leaves out (counted on each source's investigate item)."""
        for ip in addresses:
            self.cut_from[ip] = self.cut_from.get(ip, 0) + 1

    def set_coverage(self, coverage) -> None:  # noqa: ANN001 - egresslens.analyse.Coverage
        """Every finding states the hours of its window that hold data (`window.covered_hours`)."""
        self.coverage = coverage
        doc = coverage.to_json()
        self.window_info.update(covered_hours=doc["covered_hours"], window_hours=doc["window_hours"],
                                coverage=doc["description"])

    @property
    def covered_hours(self) -> float:
        """Hours of the window that hold data (the window's length when unknown)."""
        return self.coverage.covered_hours if self.coverage is not None else self.window.hours

    def span(self) -> str:
        """`the 168-hour window` or, when data covers less, `the 168 hours with data (of the 720-hour window)`."""
        if self.coverage is None or self.coverage.complete:
            return f"the {self.window.hours:g}-hour window"
        from egresslens.analyse import hours_text

        return (f"the {hours_text(self.coverage.covered_hours)} hour(s) with data (of the "
                f"{hours_text(self.coverage.window_hours)}-hour window)")


def investigate(ctx: Context, title: str, reason: str, ev: Evidence, risk: str, key: tuple, rows=None,
                rollout: list[str] | None = None) -> Recommendation:
    rid = rec_id("investigate", *key)
    rec = Recommendation(id=rid, kind="investigate", title=title, rule=None, evidence=ev, confidence="high",
                         risk=risk, rationale=reason, window=ctx.window_info,
                         rollout=rollout or ["review before allowing anything; no allow rule is proposed"])
    ctx.add(rec)
    for row in rows or []:
        ctx.evidence_keys.append({**row, "rec_id": rid})
    return rec


def key_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    return df.select("gkey").to_dicts()


def rcg_priority(ctx: Context) -> int:
    if ctx.config.priority:
        return int(ctx.config.priority)
    if ctx.policy:
        return min(65000, max(r.rcg_priority for r in ctx.policy) + 100)
    return 64000


def collection_priority(ctx: Context, name: str) -> int:
    if name not in ctx.coll_prio:
        ctx.coll_prio[name] = 100 + 100 * len(ctx.coll_prio)
    return ctx.coll_prio[name]

