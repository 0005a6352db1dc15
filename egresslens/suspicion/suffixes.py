"""Who owns a name: public suffixes (the Public Suffix List, ICANN and private sections) plus the
shared multi-tenant suffixes the PSL does not carry (`egresslens/data/multitenant.toml`).

A name's *owner zone* is the shortest ancestor (or the name itself) that one customer controls:
one label below the longest public or multi-tenant suffix it ends with (a multi-tenant entry with
`depth` N also shares the N labels below it, e.g. the region in `<vm>.<region>.cloudapp.azure.com`).
Suspicion escalates a bad name to its owner zone unless that zone is shared or holds a shared
suffix (:func:`is_shared`: `azure.com` holds `cloudapp.azure.com`), and a wildcard is never proposed
at or above a suffix (:func:`covering`): both read these same lists.

The same rules run in DuckDB SQL (:func:`register_rules`, :data:`OWNER_SQL`) over every distinct
name of a store, and in Python (:func:`owner_zone`) for a single name.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources

import duckdb
import polars as pl
from publicsuffixlist import PublicSuffixList

# Suffixes a resolver's search list appends (Kubernetes ndots:5, Azure's default VNet DNS suffix):
# queries ending in them are search-domain noise, not destinations.
NOISE_SUFFIXES: tuple[str, ...] = (".svc.cluster.local", ".cluster.local", ".reddog.microsoft.com",
                                   ".internal.cloudapp.net")


@lru_cache(maxsize=1)
def psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=1)
def multitenant_suffixes() -> dict[str, dict]:
    """name -> entry (depth, source, date) from `data/multitenant.toml`."""
    text = resources.files("egresslens").joinpath("data", "multitenant.toml").read_text()
    return {e["name"]: e for e in tomllib.loads(text)["suffix"]}


def _ascii(rule: str) -> str | None:
    try:
        return ".".join(lb.encode("idna").decode("ascii") if not lb.isascii() else lb for lb in rule.split("."))
    except UnicodeError:
        return None


@lru_cache(maxsize=1)
def rules() -> dict[str, tuple[int, bool]]:
    """suffix -> (extra shared labels below it, is an exception rule). PSL `*.x` is x with 1 extra label;
    `!a.x` is an exception (a.x is registrable); a multi-tenant entry is x with `depth` extra labels."""
    out: dict[str, tuple[int, bool]] = {}
    for raw in psl()._publicsuffix:  # noqa: SLF001 - the parsed rule set
        exc = raw.startswith("!")
        body = raw.lstrip("!")
        extra = 0
        while body.startswith("*."):
            body, extra = body[2:], extra + 1
        name = _ascii(body)
        if name is None:
            continue
        if exc:
            out[name] = (0, True)
        elif not out.get(name, (0, False))[1]:
            out[name] = (max(extra, out.get(name, (0, False))[0]), False)
    for name, entry in multitenant_suffixes().items():
        if not out.get(name, (0, False))[1]:
            out[name] = (max(int(entry.get("depth", 0)), out.get(name, (0, False))[0]), False)
    return out


def public_labels(name: str) -> int:
    """How many trailing labels of `name` are public/shared (at least 1: an unknown TLD is public)."""
    labels = name.lower().rstrip(".").split(".")
    n = len(labels)
    table = rules()
    best, exc = 1, None
    for k in range(1, n + 1):
        hit = table.get(".".join(labels[n - k:]))
        if hit is None:
            continue
        extra, is_exc = hit
        if is_exc:
            exc = k - 1 if exc is None else max(exc, k - 1)
        else:
            best = max(best, k + extra)
    return exc if exc is not None else best


def owner_zone(name: str | None) -> str | None:
    """The zone one customer controls (see the module docstring); None for suffixes and single labels."""
    if not name:
        return None
    labels = name.lower().rstrip(".").split(".")
    ps = public_labels(name)
    return ".".join(labels[len(labels) - ps - 1:]) if len(labels) > ps else None


@lru_cache(maxsize=1)
def covering() -> frozenset[str]:
    """Every public suffix (ICANN + private), every multi-tenant suffix, and every ancestor of one:
    `*.x` over these is unsafe, and a bad name never taints one of them as a whole."""
    out: set[str] = set()
    names = [s.lstrip("!").removeprefix("*.") for s in psl()._publicsuffix]  # noqa: SLF001
    names.extend(multitenant_suffixes())
    for s in names:
        parts = s.split(".")
        for i in range(len(parts)):
            out.add(".".join(parts[i:]))
    return frozenset(out)


def is_shared(zone: str) -> bool:
    """True when `zone` is a public / multi-tenant suffix, lies within one's shared depth, or is above one
    (`azure.com` holds `cloudapp.azure.com`): escalating a bad name to it would cross a suffix."""
    zone = zone.lower().rstrip(".")
    return owner_zone(zone) is None or zone in covering()


@lru_cache(maxsize=1)
def _rules_frame() -> pl.DataFrame:
    r = rules()
    return pl.DataFrame({"suffix": list(r), "extra": [v[0] for v in r.values()], "exception": [v[1] for v in r.values()]},
                        schema={"suffix": pl.String, "extra": pl.Int32, "exception": pl.Boolean})


def register_rules(con: duckdb.DuckDBPyConnection) -> None:
    """Create temp table `susp_suffix_rules` (suffix, extra, exception) once per connection."""
    if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'susp_suffix_rules' AND temporary").fetchall()[0][0]:
        return
    con.register("susp_suffix_rules_in", _rules_frame().to_arrow())
    try:
        con.execute("CREATE TEMP TABLE susp_suffix_rules AS SELECT * FROM susp_suffix_rules_in").fetchall()
    finally:
        con.unregister("susp_suffix_rules_in")


def owner_sql(names: str) -> str:
    """SQL: (name, labels, n, ps, owner) for every `name` of relation `names`, with the rules of
    :func:`public_labels` / :func:`owner_zone` (needs :func:`register_rules`)."""
    return f"""
      WITH l AS (SELECT name, string_split(name, '.') AS labels FROM (SELECT DISTINCT name FROM ({names}) WHERE name IS NOT NULL)),
      s AS (SELECT name, len(labels) AS n, k, array_to_string(labels[len(labels) - k + 1:], '.') AS suf
            FROM (SELECT name, labels, unnest(range(1, len(labels) + 1)) AS k FROM l)),
      m AS (SELECT s.name, max(s.k + r.extra) FILTER (WHERE NOT r.exception) AS ps,
                   max(s.k - 1) FILTER (WHERE r.exception) AS exc
            FROM s JOIN susp_suffix_rules r ON r.suffix = s.suf GROUP BY s.name),
      p AS (SELECT l.name, l.labels, len(l.labels) AS n,
                   coalesce(m.exc, greatest(coalesce(m.ps, 1), 1)) AS ps FROM l LEFT JOIN m USING (name))
      SELECT name, labels, n, ps,
             CASE WHEN n > ps THEN array_to_string(labels[n - ps:], '.') END AS owner
      FROM p"""
