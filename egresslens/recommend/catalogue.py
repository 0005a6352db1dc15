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


@dataclass
class BundleMatch:
    bundle: Bundle
    names: list[str]
    targets: list[str] = field(default_factory=list)  # canonical FQDNs / wildcards (empty when fqdn_tag)
    sources: dict[str, str] = field(default_factory=dict)  # target -> source of the entry


@lru_cache(maxsize=1)
def bundles() -> tuple[Bundle, ...]:
    text = resources.files("egresslens").joinpath("data", "recommend", "catalogue.toml").read_text()
    out = []
    for b in tomllib.loads(text)["bundle"]:
        entries = tuple(Entry(e["pattern"], tuple(e["protocols"]), e["source"], e["date"]) for e in b["entries"])
        out.append(Bundle(b["name"], b["title"], tuple(b["protocols"]), entries, b.get("fqdn_tag"),
                          int(b.get("min_matched_entries", 1)), b.get("note")))
    return tuple(out)


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
