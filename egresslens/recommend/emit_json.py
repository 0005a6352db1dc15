"""JSON output: the full recommendation objects (schema: egresslens/data/recommend/recommendations.schema.json)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from egresslens.recommend.model import SCHEMA_VERSION
from egresslens.suspicion import Suspicion, SuspicionConfig


def document(recs) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "window": {"start": recs.window.start.isoformat(), "end": recs.window.end.isoformat(), "hours": recs.window.hours},
        "warnings": list(recs.warnings),
        "stats": recs.stats,
        "rule_scores": recs.rule_scores,
        "firewalls": recs.firewalls,
        "recommendations": recs.to_dicts(),
        "suspicion": (recs.suspicion or Suspicion(recs.window, SuspicionConfig())).to_json(),
    }


def emit(recs) -> str:
    return json.dumps(document(recs), indent=2, default=str, ensure_ascii=True) + "\n"


def schema() -> dict[str, Any]:
    return json.loads(resources.files("egresslens").joinpath("data", "recommend", "recommendations.schema.json").read_text())
