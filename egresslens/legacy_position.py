"""Legacy application-rule messages read by position: the struct `regexp_extract(msg, APP_RE, APP_GROUPS)`
gives, for messages of the usual shape, from where a few markers first occur instead of the pattern's captures
(at about half its cost).

A message is read by position only when it has this shape, every part checked without a pattern:

    PROTO<1 or 2 spaces>request from SRC:SPORT[ to HOST:DPORT].[ Url: URL.] Action: Allow|Deny[TAIL]

PROTO is HTTPS, HTTP or MSSQL; SRC (possibly empty) and HOST (not empty) hold no space; SPORT (possibly
empty) and DPORT are port numbers written plainly; URL ends at the first `. Action: `, and the action
there is `Allow` or `Deny`, followed by the end, a dot or a space; and the message holds no tab, line
feed, vertical tab, form feed or carriage return (the pattern's `\\s` and `.` treat those apart). In that
shape the first ` request from `, `:`, ` to `, `. Url: ` and `. Action: ` are the ones the pattern reads
(nothing before them holds a space or a colon), every greedy part of the pattern stops at the character
the shape puts after it, and its lazy URL stops at the first `. Action: ` followed by a word: each group
takes what the reading by position takes. Any other message (odd spacing, no source port, an IPv6 source,
another action word, a line break) is read by the pattern itself. tests/test_legacy_app_fast.py holds the
two equal on generated messages.
"""

from __future__ import annotations

from egresslens.escape import sql_string as _lit
from egresslens.legacy_grammar import APP_GROUPS, APP_RE

_PROTOCOLS = ("HTTPS", "HTTP", "MSSQL")
_REQUEST, _TO, _URL, _ACTION = " request from ", " to ", ". Url: ", ". Action: "
# the characters RE2's `\s` matches besides the space, and the line breaks its `.` does not cross
_CONTROLS = (9, 10, 11, 12, 13)

# The helper columns the steps add, dropped again at the end.
_HELPERS = ("ap_k", "ap_c1", "ap_t", "ap_a", "ap_u", "ap_proto", "ap_e", "ap_src", "ap_n", "ap_sport", "ap_w",
            "ap_url", "ap_tail", "ap_host", "ap_dport")


def _split_marker(marker: str) -> tuple[str, str]:
    """(its leading spaces and dots, the rest) of a marker."""
    core = marker.lstrip(" .")
    return marker[: len(marker) - len(core)], core


def contains_marker(expr: str, marker: str) -> str:
    """`contains(expr, marker)`, faster for a marker that begins with a space or a dot (` ThreatIntel: `).

    DuckDB looks for a long marker by its first character, and log text is full of spaces and dots: such a
    search costs about three times one for the rest of the marker (`ThreatIntel: `), which rules out nearly
    every line first. The answer is the same: a text holding the marker holds its rest."""
    lead, core = _split_marker(marker)
    if not lead or len(core) < 4:
        return f"contains({expr}, {_lit(marker)})"
    return f"(contains({expr}, {_lit(core)}) AND contains({expr}, {_lit(marker)}))"


def marker_at(expr: str, marker: str) -> str:
    """`strpos(expr, marker)` (0 when absent), faster for a marker that begins with a space or a dot.

    Where the rest of the marker first occurs is found first (see `contains_marker`): when the marker's lead
    stands before it, that is where the marker first occurs (an earlier marker would hold an earlier rest);
    otherwise the marker is looked for whole. Same positions, counted in characters as `strpos` counts."""
    lead, core = _split_marker(marker)
    if not lead or len(core) < 4:
        return f"strpos({expr}, {_lit(marker)})"
    at, k = f"strpos({expr}, {_lit(core)})", len(lead)
    return (f"CASE WHEN {at} = 0 THEN 0 WHEN {at} > {k} AND substr({expr}, {at} - {k}, {k}) = {_lit(lead)} "
            f"THEN {at} - {k} ELSE strpos({expr}, {_lit(marker)}) END")


def _port(expr: str) -> str:
    """`expr` is a port number written plainly (ASCII digits without a leading zero, at most 65535), so the
    pattern's `\\d*` takes all of it. Other digits (`0443`, `70000`) fail this test: the pattern reads them."""
    return f"{expr} = CAST(try_cast({expr} AS USMALLINT) AS VARCHAR)"


def app_position_sql(source: str) -> str:
    """A relation of every column of `source` (which has `target` and `msg`), plus `app_form` (NULL for a
    line that is not an application rule's; 'destination' or 'source' for one read by position, as it
    names a destination or only its source; 'regex' for one read by the pattern) and `app` (the struct
    `regexp_extract(msg, APP_RE, APP_GROUPS)` gives, for application lines)."""
    fields = {
        "proto": "ap_proto", "src": "ap_src", "sport": "ap_sport", "host": "coalesce(ap_host, '')",
        "dport": "coalesce(ap_dport, '')", "url": "ap_url", "action": "CASE ap_n WHEN 5 THEN 'Allow' ELSE 'Deny' END",
        "tail": "ap_tail",
    }
    assert list(fields) == APP_GROUPS
    found = "{" + ", ".join(f"{_lit(k)}: {v}" for k, v in fields.items()) + "}"
    groups = "[" + ", ".join(_lit(g) for g in APP_GROUPS) + "]"
    markers = {"ap_k": _REQUEST, "ap_c1": ":", "ap_t": _TO, "ap_a": _ACTION, "ap_u": _URL}
    after = f"ap_a + {len(_ACTION)} + ap_n"  # where the text after the action word starts
    # one step per subquery: each reads the positions the one before found (an alias read in the same
    # SELECT would be expanded in place, and the expression would grow with every step)
    steps = [
        # where each marker first occurs in the message (in the usual shape, each first occurrence is the
        # one the pattern reads: nothing before it holds a space or, for `:`, a colon)
        ", ".join(f"CASE WHEN target = 'application' THEN {marker_at('msg', m)} END AS {c}" for c, m in markers.items()),
        "CASE WHEN ap_k > 0 THEN CASE " + " ".join(f"WHEN starts_with(msg, {_lit(p + ' ')}) THEN {_lit(p)}"
                                                   for p in _PROTOCOLS) + " END END AS ap_proto, "
        # the request part ends where ` Url: ` or ` Action: ` begins (with the `.` before it)
        "CASE WHEN ap_u > 0 AND ap_u < ap_a THEN ap_u ELSE ap_a END AS ap_e, "
        f"CASE WHEN ap_k > 0 AND ap_c1 >= ap_k + {len(_REQUEST)} THEN substr(msg, ap_k + {len(_REQUEST)}, "
        f"ap_c1 - ap_k - {len(_REQUEST)}) END AS ap_src, "
        f"CASE WHEN ap_a > 0 THEN CASE WHEN substr(msg, ap_a + {len(_ACTION)}, 5) = 'Allow' THEN 5 "
        f"WHEN substr(msg, ap_a + {len(_ACTION)}, 4) = 'Deny' THEN 4 END END AS ap_n",
        # the source port ends at ` to ` when a destination follows it, else where the request part ends
        "substr(msg, ap_c1 + 1, CASE WHEN ap_t > ap_c1 AND ap_t < ap_e THEN ap_t ELSE ap_e END - ap_c1 - 1) AS ap_sport, "
        f"CASE WHEN ap_t > ap_c1 AND ap_t < ap_e THEN substr(msg, ap_t + {len(_TO)}, ap_e - ap_t - {len(_TO)}) END AS ap_w, "
        f"CASE WHEN ap_e = ap_u THEN substr(msg, ap_u + {len(_URL)}, ap_a - ap_u - {len(_URL)}) ELSE '' END AS ap_url, "
        # the pattern's `\.*\s*` after the action: one dot and one space, as nearly always, or read by trimming
        f"CASE WHEN substr(msg, {after}, 2) = '. ' AND substr(msg, {after} + 2, 1) NOT IN ('.', ' ') "
        f"THEN substr(msg, {after} + 2) ELSE ltrim(ltrim(substr(msg, {after}), '.'), ' ') END AS ap_tail",
        "CASE WHEN strpos(ap_w, ':') > 1 THEN left(ap_w, strpos(ap_w, ':') - 1) END AS ap_host, "
        "CASE WHEN strpos(ap_w, ':') > 1 THEN substr(ap_w, strpos(ap_w, ':') + 1) END AS ap_dport",
        # the form: by position when every part has the usual shape, else by the pattern
        "CASE WHEN ap_k IS NULL THEN NULL "
        "WHEN left(msg, ap_k) IN (ap_proto || ' ', ap_proto || '  ') AND NOT contains(ap_src, ' ') AND ap_e > ap_c1 "
        f"AND (ap_sport = '' OR {_port('ap_sport')}) "
        f"AND (ap_w IS NULL OR (NOT contains(ap_host, ' ') AND {_port('ap_dport')})) "
        f"AND substr(msg, {after}, 1) IN ('', '.', ' ') "
        f"AND {' AND '.join(f'NOT contains(msg, chr({c}))' for c in _CONTROLS)} "
        "THEN CASE WHEN ap_w IS NULL THEN 'source' ELSE 'destination' END ELSE 'regex' END AS app_form",
    ]
    relation = source
    for step in steps:
        relation = f"(SELECT *, {step} FROM {relation})"
    return f"""
SELECT * EXCLUDE ({", ".join(_HELPERS)}),
  CASE WHEN app_form = 'regex' THEN regexp_extract(msg, {_lit(APP_RE)}, {groups})
       WHEN app_form IS NOT NULL THEN {found} END AS app
FROM {relation}"""
