"""Known dependency bundles (data in egresslens/data/recommend/catalogue.toml)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from egresslens.recommend.wildcards import fqdn_matches

_PLACEHOLDER = re.compile(r"<([a-z-]+)>")


@dataclass(frozen=True)
class Entry:
    pattern: str
    protocols: tuple[str, ...]
    source: str
    date: str

    @property
    def regex(self) -> re.Pattern[str]:
        out = []
        body = self.pattern
        wildcard = body.startswith("*.")
        if wildcard:
            body = body[2:]
        pos = 0
        for m in _PLACEHOLDER.finditer(body):
            out.append(re.escape(body[pos : m.start()]))
            out.append(f"(?P<{m.group(1).replace('-', '_')}>[a-z0-9-]+)")
            pos = m.end()
        out.append(re.escape(body[pos:]))
        prefix = r"(?:[a-z0-9_-]+\.)+" if wildcard else ""
        return re.compile("^" + prefix + "".join(out) + "$")

    def match(self, name: str) -> dict[str, str] | None:
        """Placeholder values when the name matches the entry, else None."""
        if "<" not in self.pattern:
            return {} if fqdn_matches(name, self.pattern) else None
        m = self.regex.match(name)
        return m.groupdict() if m else None

    def resolve(self, values: dict[str, str]) -> str | None:
        """The pattern with placeholders filled in, or None if one is unknown."""
        def sub(m: re.Match[str]) -> str:
            return values.get(m.group(1).replace("-", "_"), "\0")
        text = _PLACEHOLDER.sub(sub, self.pattern)
        return None if "\0" in text else text


@dataclass(frozen=True)
class Bundle:
    name: str
    title: str
    protocols: tuple[str, ...]
    entries: tuple[Entry, ...]
    fqdn_tag: str | None = None
    min_matched_entries: int = 1
    note: str | None = None
    required: bool = False  # the platform's required egress: never narrowed or removed


@dataclass
class BundleMatch:
    bundle: Bundle
    names: list[str]
    targets: list[str] = field(default_factory=list)  # canonical FQDNs / wildcards (empty when fqdn_tag)
    sources: dict[str, str] = field(default_factory=dict)  # target -> source of the entry


@dataclass(frozen=True)
class RequiredNetwork:
    """A network rule the platform needs (`[[required_network]]`)."""

    bundle: str
    name: str
    protocol: str
    port: int
    destinations: tuple[str, ...]
    source: str
    date: str

    def destination(self, value: str) -> bool:
        """True when a rule destination (address, service tag or FQDN) is one this entry names."""
        v = value.lower()
        return any(re.fullmatch("[a-z0-9-]+".join(map(re.escape, re.split(r"<[a-z-]+>", d.lower()))), v)
                   for d in self.destinations)


@dataclass
class Required:
    """The parts of an existing rule that carry required platform egress (kept whole by narrowing)."""

    why: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    targets: set[str] = field(default_factory=set)
    protocols: set[str] = field(default_factory=set)  # application protocols, "Https:443"
    ports: set[str] = field(default_factory=set)  # network ports
    destinations: set[str] = field(default_factory=set)  # network destinations (addresses, tags, FQDNs)

    def note(self) -> str:
        return ("carries required platform egress (" + "; ".join(self.why) + "): never narrowed or removed, "
                "whatever the window shows")


def _catalogue() -> dict:
    return tomllib.loads(resources.files("egresslens").joinpath("data", "recommend", "catalogue.toml").read_text())


@lru_cache(maxsize=1)
def bundles() -> tuple[Bundle, ...]:
    out = []
    for b in _catalogue()["bundle"]:
        entries = tuple(Entry(e["pattern"], tuple(e["protocols"]), e["source"], e["date"]) for e in b["entries"])
        out.append(Bundle(b["name"], b["title"], tuple(b["protocols"]), entries, b.get("fqdn_tag"),
                          int(b.get("min_matched_entries", 1)), b.get("note"), bool(b.get("required", False))))
    return tuple(out)


@lru_cache(maxsize=1)
def required_network() -> tuple[RequiredNetwork, ...]:
    return tuple(RequiredNetwork(r["bundle"], r["name"], r["protocol"].upper(), int(r["port"]), tuple(r["destinations"]),
                                 r["source"], r["date"]) for r in _catalogue().get("required_network", []))


def _explicit_ports(ports: list[str]) -> set[int]:
    return {int(p) for p in ports if p.strip().isdigit()}


def required_parts(rule) -> Required | None:  # noqa: ANN001 - egresslens.recommend.policy.Rule
    """What of an existing allow rule is the platform's required egress (catalogue `required`), or None.
    Only explicit parts count: an FQDN tag or target the catalogue names, a port listed by itself
    (never a range or `*`) to a destination a `[[required_network]]` entry names."""
    req = Required()
    if rule.rule_type == "application":
        for b in bundles():
            if not b.required:
                continue
            tags = [t for t in rule.fqdn_tags if b.fqdn_tag and t.lower() == b.fqdn_tag.lower()]
            if tags:
                req.tags.update(tags)
                req.protocols.update(b.protocols)
                req.why.append(f"FQDN tag {b.fqdn_tag} on {' + '.join(b.protocols)}, catalogue bundle {b.name}")
            for t in rule.target_fqdns:
                wild = t.startswith("*.")
                for e in b.entries:
                    if e.pattern.startswith("*.") == wild and Entry(e.pattern.removeprefix("*."), e.protocols,
                                                                    e.source, e.date).match(t.removeprefix("*.")) is not None:
                        req.targets.add(t)
                        req.protocols.update(e.protocols)
                        req.why.append(f"{t} on {' + '.join(e.protocols)}, catalogue bundle {b.name}")
                        break
    elif rule.rule_type == "network":
        ports = _explicit_ports(rule.destination_ports)
        protos = {p.upper() for p in rule.ip_protocols}
        for r in required_network():
            if r.port not in ports or not (r.protocol in protos or "ANY" in protos):
                continue
            dests = [d for d in rule.destination_addresses + rule.destination_fqdns if r.destination(d)]
            if dests:
                req.ports.add(str(r.port))
                req.destinations.update(dests)
                req.why.append(f"{r.name} to {', '.join(dests)}, catalogue bundle {r.bundle}")
    return req if req.why else None


def tag_members(tag: str) -> tuple[str, ...]:
    """Patterns an FQDN tag is modelled to cover (placeholders become a one-label wildcard match)."""
    for b in bundles():
        if b.fqdn_tag and b.fqdn_tag.lower() == tag.lower():
            return tuple(e.pattern for e in b.entries)
    return ()


def tag_matches(tag: str, name: str) -> bool:
    for b in bundles():
        if b.fqdn_tag and b.fqdn_tag.lower() == tag.lower():
            return any(e.match(name) is not None for e in b.entries)
    return False


def match_bundles(names: list[str] | set[str]) -> tuple[list[BundleMatch], list[str]]:
    """Assign names to bundles (first bundle in file order wins). Returns (matches, leftover names)."""
    remaining = set(names)
    matches: list[BundleMatch] = []
    for b in bundles():
        hit_entries: dict[int, list[str]] = {}
        values: dict[str, str] = {}
        for n in sorted(remaining):
            for i, e in enumerate(b.entries):
                got = e.match(n)
                if got is not None:
                    hit_entries.setdefault(i, []).append(n)
                    for k, v in got.items():
                        values.setdefault(k, v)
                    break
        if len(hit_entries) < b.min_matched_entries:
            continue
        matched = sorted({n for ns in hit_entries.values() for n in ns})
        bm = BundleMatch(b, matched)
        if not b.fqdn_tag:
            for e in b.entries:
                t = e.resolve(values)
                if t is not None:
                    bm.targets.append(t)
                    bm.sources[t] = f"{e.source} (checked {e.date})"
        matches.append(bm)
        remaining -= set(matched)
    return matches, sorted(remaining)
