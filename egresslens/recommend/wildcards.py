"""FQDN validation, Azure wildcard matching, and evidence-based wildcard proposals.

Names in firewall logs are attacker-controlled. Nothing reaches an emitter unless it passes
:func:`validate_fqdn` (plain ASCII LDH labels, <= 63 per label, <= 253 in all). A wildcard is only
ever the left-most ``*.`` form; ``*x`` is never produced. ``*.parent`` is proposed only when several
sibling names look like shards (numbered, regional or hashed labels) and the parent is neither a
public suffix (ICANN or private section of the PSL) nor a known shared multi-tenant suffix.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from egresslens.suspicion.suffixes import covering, multitenant_suffixes, psl

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_REGIONS = re.compile(
    r"^(?:(?:north|south|east|west|central|us|eu|ap|sa|ca|me|af|uk|in|jp|kr|au|de|fr|ch|no|se|pl|it|br|za|ae|qa|il|mx|nz|es|tw|id|my)"
    r"(?:-?(?:north|south|east|west|central|northeast|northwest|southeast|southwest|gov|europe|us|asia|china|india|uae|africa))*"
    r"(?:-?\d{1,2})?[a-z]?|westeurope|northeurope|eastasia|southeastasia|uksouth|ukwest|francecentral|germanywestcentral"
    r"|swedencentral|switzerlandnorth|norwayeast|polandcentral|italynorth|spaincentral)$"
)


class InvalidName(ValueError):
    """A name that must not reach any emitter."""


def describe(name: object) -> str:
    """A safe, printable rendering of a hostile name for messages."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_fqdn(name: str, *, allow_wildcard: bool = False) -> str:
    """Return the name unchanged if it is a valid FQDN (or ``*.fqdn`` when allowed), else raise."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"empty or non-text FQDN {describe(name)}")
    if not name.isascii():
        raise InvalidName(f"FQDN {describe(name)} contains non-ASCII characters (look-alike or un-encoded IDN)")
    body = name
    if allow_wildcard and name.startswith("*."):
        body = name[2:]
    if len(body) > 253:
        raise InvalidName(f"FQDN {describe(name)} is longer than 253 characters")
    labels = body.split(".")
    if len(labels) < 2:
        raise InvalidName(f"FQDN {describe(name)} has no parent domain")
    for label in labels:
        if not _LABEL.match(label):
            if len(label) > 63:
                raise InvalidName(f"FQDN {describe(name)} has a label longer than 63 characters")
            raise InvalidName(f"FQDN {describe(name)} has an invalid label {describe(label)}")
    if labels[-1].isdigit():
        raise InvalidName(f"FQDN {describe(name)} ends in a numeric label")
    return name


def is_valid_fqdn(name: str, *, allow_wildcard: bool = False) -> bool:
    try:
        validate_fqdn(name, allow_wildcard=allow_wildcard)
        return True
    except InvalidName:
        return False


def fqdn_matches(fqdn: str, pattern: str) -> bool:
    """Azure Firewall target matching: exact, left-most ``*.`` wildcard (any depth, not the parent), or ``*``."""
    pattern = pattern.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return fqdn.endswith(pattern[1:])
    return fqdn == pattern


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def wildcard_problem(parent: str, examples: list[str] | tuple[str, ...] = ()) -> str | None:
    """Why ``*.parent`` must not be proposed, or None when it is acceptable."""
    if not is_valid_fqdn(parent):
        return f"parent {describe(parent)} is not a valid FQDN"
    if parent in covering():
        return f"{parent} is (or is above) a public or shared multi-tenant suffix"
    for suffix, entry in multitenant_suffixes().items():
        if parent.endswith("." + suffix):
            extra = parent[: -len(suffix) - 1].count(".") + 1
            if extra <= int(entry.get("depth", 0)):
                return f"{parent} is a shared multi-tenant suffix (under {suffix})"
    if psl().publicsuffix(parent) == parent:
        return f"{parent} is a public suffix"
    for name in examples:
        reg = psl().privatesuffix(name)
        if reg is None or len(parent) < len(reg):
            return f"{parent} is above the registrable domain of {name}"
    return None


def shard_like(label: str) -> bool:
    """Regional (westeurope, us-east-1), numbered (cdn3, node-01) or hashed (a3f9c2e1) labels."""
    if _REGIONS.match(label):
        return True
    if re.search(r"\d", label) and re.fullmatch(r"[a-z]*[-_]?\d+[a-z]?|[a-z]+[-_]?\d+[-_][a-z0-9]+|[a-z]{1,4}\d+[a-z]\d*", label):
        return True
    hexish = re.fullmatch(r"[0-9a-f]{6,}", label) and re.search(r"\d", label)
    if hexish:
        return True
    return len(label) >= 8 and bool(re.search(r"\d", label)) and bool(re.search(r"[a-z]", label)) and entropy(label) >= 2.8


def propose_wildcards(
    names: list[str] | set[str],
    *,
    min_siblings: int = 3,
) -> tuple[dict[str, list[str]], list[str], dict[str, str]]:
    """Split names into wildcard groups and explicit names.

    Returns (wildcards: pattern -> derived names, explicit names, rejected: parent -> reason).
    A wildcard needs ``min_siblings`` distinct names whose label directly under the parent is
    shard-like; the parent passes :func:`wildcard_problem`.
    """
    by_parent: dict[str, set[str]] = defaultdict(set)
    for n in names:
        labels = n.split(".")
        if len(labels) >= 3:
            by_parent[".".join(labels[1:])].add(n)
    wild: dict[str, list[str]] = {}
    rejected: dict[str, str] = {}
    covered: set[str] = set()
    # most specific parents first, so `*.data.mcr.x` wins over `*.mcr.x`
    for parent in sorted(by_parent, key=lambda p: (-p.count("."), p)):
        members = sorted(by_parent[parent] - covered)
        if len(members) < min_siblings:
            continue
        labels = [m.split(".")[0] for m in members]
        if not all(shard_like(lb) for lb in labels):
            continue
        problem = wildcard_problem(parent, members)
        if problem:
            rejected[parent] = problem
            continue
        wild[f"*.{parent}"] = members
        covered.update(members)
    explicit = sorted(set(names) - covered)
    return wild, explicit, rejected
