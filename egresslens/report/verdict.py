"""The suspicion model's verdict on one drilldown subject, read (never judged again) from the assessment
`recommend`, `dns` and the report share.

- a source is **compromised** from its first contact with something withheld, with the evidence the model
  holds against it (what it reached and why) and the isolate action; else **clean**;
- a name or an address is **never proposed** when the model withholds it (why), or when only compromised
  sources reached it (who); else it has **no finding** (an address: its DNS attribution);
- a rule has no verdict of its own.

The drilldown page opens with it: a banner with the evidence and what to do when it is compromised or
never proposed, one quiet line otherwise (:func:`egresslens.report.html.render_drilldown`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from egresslens.suspicion import SUGGESTED_ACTION

COMPROMISED, WITHHELD, CLEAN, NO_FINDING = "compromised", "never proposed", "clean", "no finding"
_SHOWN = 5  # sources named in a sentence


@dataclass
class Verdict:
    subject: str
    kind: str  # source, fqdn, destination or rule
    verdict: str = NO_FINDING  # COMPROMISED, WITHHELD, CLEAN or NO_FINDING
    since: datetime | None = None  # a compromised source: its first contact with something withheld
    last_seen: datetime | None = None  # ... and its last
    caveat: str = ""  # why `since` may not be the real start (data begins in that hour)
    detail: str = ""  # one sentence: the evidence, why it is withheld, or its DNS attribution
    evidence: list[dict[str, Any]] = field(default_factory=list)  # the model's evidence rows (kind, subject, detail, ...)
    reached: list[str] = field(default_factory=list)  # a compromised source: the withheld subjects it reached
    sources: list[str] = field(default_factory=list)  # a name or address: the compromised sources that reached it
    action: str | None = None  # what to do (compromised and never proposed)

    @property
    def alarming(self) -> bool:
        """A banner, not a quiet line: compromised, or never to be proposed."""
        return self.verdict in (COMPROMISED, WITHHELD)

    def frame(self) -> pl.DataFrame:
        """The `Suspicion verdict` table of the page and of `drilldown --json`."""
        return pl.DataFrame([{"subject": self.subject, "verdict": self.verdict, "since": self.since,
                              "detail": self.detail}],
                            schema={"subject": pl.String, "verdict": pl.String, "since": pl.Datetime("us"),
                                    "detail": pl.String})

    def to_json(self) -> dict[str, Any]:
        iso = lambda t: t.isoformat() if isinstance(t, datetime) else t  # noqa: E731
        return {"subject": self.subject, "kind": self.kind, "verdict": self.verdict, "since": iso(self.since),
                "last_seen": iso(self.last_seen), "caveat": self.caveat or None, "detail": self.detail, "reached": self.reached, "sources": self.sources, "action": self.action,
                "evidence": [{k: iso(v) for k, v in e.items()} for e in self.evidence]}


def read(subject: str, kind: str, recs, peers: pl.DataFrame | None = None, complete_peers: bool = True) -> Verdict:  # noqa: ANN001
    """The verdict on `subject` (a drilldown KIND) as `recs.suspicion` gives it. `peers`: the subject's
    sources with their `compromised` column (a name or an address reached only by compromised sources is
    never proposed, as `recommend` says); `complete_peers`: they are all of its sources, not the busiest."""
    from egresslens.recommend.network import attribution_text

    susp = recs.suspicion
    v = Verdict(subject, kind)
    if kind == "source":
        r = susp.source(subject)
        if r is None:
            v.verdict, v.detail = CLEAN, "reached nothing withheld in the window"
            return v
        v.verdict, v.since, v.detail, v.action = COMPROMISED, r["first_seen"], susp.evidence_text(subject), SUGGESTED_ACTION
        v.last_seen = r["last_seen"]
        if susp.coverage is not None and r["first_seen"] is not None and susp.coverage.at_start(r["first_seen"]):
            v.caveat = "in the first hour that holds data: it may have begun earlier"
        v.evidence = [dict(e) for e in r["evidence"]]
        v.reached = sorted({e["subject"] for e in r["evidence"] if e["subject"]})
        return v
    if kind == "rule":
        v.detail = "a rule has no verdict of its own; see the recommendations that touch it"
        return v
    compromised = [] if peers is None or "compromised" not in peers.columns else \
        sorted(set(peers.filter(pl.col("compromised").is_not_null())["source_ip"].to_list()))
    if kind == "fqdn":
        why, other = susp.name_reason(subject), "nothing known against this name"
    else:
        names = recs.dns_attribution.get(subject, [])
        why = susp.ip_reason(subject) or next((f"resolves from {n}: {r}" for n in names if (r := susp.name_reason(n))),
                                              None)
        other = f"DNS attribution: {attribution_text(subject, recs.attribution)}"
        why = f"{why}; {other}" if why else None
    only = (peers is not None and complete_peers and peers.height > 0 and bool(compromised)
            and peers["compromised"].is_not_null().all())
    if only and not why:
        why = (f"reached only by compromised source(s) {', '.join(compromised[:_SHOWN])}: nothing only they asked for "
               f"is proposed; {other}")
    if not why:
        v.detail = other
        return v
    v.verdict, v.detail, v.sources = WITHHELD, why, compromised
    who = ", ".join(compromised[:_SHOWN]) + (f" and {len(compromised) - _SHOWN} more" if len(compromised) > _SHOWN else "")
    v.action = (f"never allow it (a deny rule above every allow rule); isolate the compromised source(s) that reached "
                f"it ({who}): {SUGGESTED_ACTION}" if compromised else
                "never allow it: add a deny rule above every allow rule, and isolate whatever reached it")
    return v
