"""Recommendation objects: the stable shape every emitter and the JSON schema rely on."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

KINDS = ("add-application-rule", "add-network-rule", "narrow-rule", "remove-rule", "investigate")
SCHEMA_VERSION = "1.0"
# What a person reads first: what must never be allowed (compromised sources, tunnelling, threat
# intelligence), then changes to rules that exist (narrow, remove), then rules to add.
URGENCY = ("investigate", "narrow-rule", "remove-rule", "add-application-rule", "add-network-rule")
_RISK = {"high": 0, "medium": 1, "low": 2}


@dataclass
class ProposedRule:
    """One Azure Firewall rule as it would be written (az list JSON vocabulary, snake_case)."""

    rule_type: str  # ApplicationRule | NetworkRule
    rule_collection_group: str
    rule_collection_group_priority: int
    rule_collection: str
    rule_collection_priority: int
    name: str
    action: str = "Allow"
    source_addresses: list[str] = field(default_factory=list)
    source_group: str | None = None  # the source group name (config or inferred)
    source_ip_group: str | None = None  # suggested IP Group name when the source set repeats
    source_ip_groups: list[str] = field(default_factory=list)  # existing IP Groups (ids), beside or instead of addresses
    source_ip_group_members: dict[str, list[str]] = field(default_factory=dict)  # their members (for review, what-if)
    # application rules
    protocols: list[str] = field(default_factory=list)  # "Https:443"
    target_fqdns: list[str] = field(default_factory=list)
    fqdn_tags: list[str] = field(default_factory=list)
    # network rules
    ip_protocols: list[str] = field(default_factory=list)  # TCP | UDP | ICMP | Any
    destination_addresses: list[str] = field(default_factory=list)  # IPs, CIDRs, service tags
    destination_fqdns: list[str] = field(default_factory=list)
    destination_ports: list[str] = field(default_factory=list)
    enabled: bool = True


@dataclass
class Evidence:
    hits: int = 0
    distinct_sources: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    days_seen: int = 0
    hours_seen: int = 0
    destinations: list[str] = field(default_factory=list)  # observed names / IPs behind the rule
    derived_from: dict[str, list[str]] = field(default_factory=dict)  # wildcard/tag -> observed names
    sample_events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # one entry per observed destination behind the rule: name/address, hits, sources, hours,
    # first/last seen, support (`well-supported` / `low`) and `compromised_also` (compromised
    # sources that asked for it too, excluded from the rule)
    per_name: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Recommendation:
    id: str
    kind: str
    title: str
    rule: ProposedRule | None
    evidence: Evidence
    confidence: str  # high | medium | low
    risk: str  # low | medium | high
    rationale: str
    window: dict[str, Any]
    rollout: list[str] = field(default_factory=list)
    existing_rule: dict[str, Any] | None = None  # narrow/remove: the rule concerned
    permissiveness: float | None = None  # narrow/remove: score of the existing rule (0..100)
    still_allowed: list[dict[str, Any]] = field(default_factory=list)  # narrow: traffic still allowed
    would_be_denied: list[dict[str, Any]] = field(default_factory=list)  # narrow/remove: traffic cut
    bundle: str | None = None
    what_if: dict[str, Any] | None = None
    firewall: str | None = None  # the firewall (as the store names it) whose traffic this is; None: several
    policy: str | None = None  # where the change goes: the policy's (or classic firewall's) name
    policy_id: str | None = None  # its ARM id, when known
    firewalls: list[str] = field(default_factory=list)  # a need shared by several firewalls: all of them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def by_urgency(items: list["Recommendation"]) -> list["Recommendation"]:
    """The items most urgent first: by :data:`URGENCY` of their kind, then risk (high first), then hits."""
    return sorted(items, key=lambda r: (URGENCY.index(r.kind) if r.kind in URGENCY else len(URGENCY),
                                        _RISK.get(r.risk, 3), -(r.evidence.hits or 0), r.id))


def with_port(text: str, port: Any) -> str:
    """`HTTPS:443`, `host:8443`; just `ICMP` or the host when there is no port (never `:None`)."""
    return text if port is None else f"{text}:{port}"


def rec_id(*parts: Any) -> str:
    """A stable recommendation id from what defines it."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


def safe_name(text: str, limit: int = 80) -> str:
    """A rule, collection or group name made of characters Azure accepts everywhere."""
    out = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", text)).strip("-.") or "rule"
    return out[:limit].rstrip("-.") or "rule"


def iso(t: Any) -> str | None:
    """Evidence timestamps: `YYYY-MM-DD HH:MM:SS`."""
    return t.isoformat(sep=" ", timespec="seconds") if isinstance(t, datetime) else (str(t) if t is not None else None)
