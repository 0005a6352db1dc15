"""Application-rule messages of the usual shape are read by position (egresslens/legacy_position.py); every
other one by APP_RE. Either way a message gives exactly the struct `regexp_extract(msg, APP_RE, APP_GROUPS)`
gives, and the usual shapes really are read by position."""

from __future__ import annotations

import functools

import duckdb
from hypothesis import example, given, settings
from hypothesis import strategies as st

from egresslens import normalise
from egresslens.escape import sql_string
from egresslens.legacy_grammar import APP_GROUPS, APP_RE
from egresslens.legacy_position import app_position_sql, contains_marker, marker_at

USUAL = [
    "HTTPS request from 10.240.0.5:49514 to mcr.microsoft.com:443. Action: Allow. Policy: fw-policy. "
    "Rule Collection Group: aks-egress. Rule Collection: aksfwar. Rule: allow-aks-fqdn-tag",
    "HTTP request from 10.1.0.4:55112 to example.com:80. Url: example.com/path. Action: Deny. No rule matched. "
    "Proceeding with default action",
    "HTTP  request from 10.0.0.1:50776 to ocsp.msocsp.com:80. Url: ocsp.msocsp.com/MFQ=. Action: Allow. "
    "Policy: p. Rule Collection Group: g. Rule Collection: c. Rule: Azure-to-AllowedServices, HTTP",
    "MSSQL request from 10.0.0.4:1433 to db.database.windows.net:1433. Action: Allow. Rule Collection: c. Rule: r",
    "HTTPS request from 10.0.0.1:59060 to instance01.westeurope.datafactory.azure.net:443. Action: Deny. Failed to "
    "resolve address adf-rt.westeurope.datafactory.azure.net:443: lookup adf-rt on 10.0.0.53:53: no such host",
    "HTTPS request from 10.0.0.1:49553 to guestconfiguration.azure.com:443. Action: Allow. Policy: p. Rule Collection "
    "Group: g. Rule Collection: c. Rule: Allowed Business-Use Webcategories. Web Category: ComputersAndTechnology",
    "HTTPS request from 10.0.2.4:56270 to x.example.com:443. Action: Deny",
    "HTTPS request from 10.0.2.4:56270 to x.example.com:443. Action: Deny.",
    "HTTPS request from 10.0.2.4:56270 to x.example.com:443. Action: Allow.. Rule Collection: c. Rule: r",
]
USUAL_SOURCE_ONLY = [
    "HTTPS request from 10.0.2.4:56270. Action: Deny. Reason: SNI TLS extension was missing.",
    "HTTPS request from 10.0.0.1:. Action: Deny",
]
ODD = [
    "HTTPS request from 10.0.0.1 to x.example.com:443. Action: Deny",  # no source port
    "HTTPS request from [fe80::1]:443 to x:443. Action: Deny",  # an IPv6 source
    "HTTPS\trequest from 10.0.0.1:1 to x:443. Action: Deny",  # a tab
    "HTTPS request from 10.0.0.1:1 to x:443. Action: Deny. Rule: a\nb",  # a line break in the tail
    "HTTPS   request from 10.0.0.1:1 to x:443. Action: Deny",  # three spaces
    "HTTPS request from 10.0.0.1:1 to x:443. Action: Alert. ThreatIntel: x",  # another action word
    "HTTPS request from 10.0.0.1:1 to x:443. Action: Allowed",
    "HTTPS request from 10.0.0.1:01 to x:443. Action: Deny",  # a leading zero
    "HTTPS request from 10.0.0.1:1 to x:443. Url: a. Action: 1. Action: Deny",  # a first action that is no word
    "HTTPS request from 10.0.2.4:1 to x:443. Url: a.b/c. Action: x. Action: Deny. t",  # nor one of the usual
    "https request from 10.0.0.1:1 to x:443. Action: Deny",
    "HTTPSX request from 10.0.0.1:1 to x:443. Action: Deny",
    "HTTPS request from 10.0.0.1:1 to x:443 Action: Deny",
    "",
]


@functools.cache
def _connection():
    return duckdb.connect()


def _both_ways(messages: list[str]) -> list[tuple]:
    """(message, form, struct read by the fast parse, struct regexp_extract gives) per message."""
    groups = "[" + ", ".join(sql_string(g) for g in APP_GROUPS) + "]"
    rows = "(SELECT 'application' AS target, unnest($m::VARCHAR[]) AS msg)"
    return _connection().execute(
        f"SELECT msg, app_form, app, regexp_extract(msg, {sql_string(APP_RE)}, {groups}) "
        f"FROM ({app_position_sql(rows)})", {"m": messages}).fetchall()


def test_the_usual_shapes_are_read_by_position_and_odd_ones_by_the_pattern():
    forms = {msg: form for msg, form, _, _ in _both_ways(USUAL + USUAL_SOURCE_ONLY + ODD)}
    assert [forms[m] for m in USUAL] == ["destination"] * len(USUAL)
    assert [forms[m] for m in USUAL_SOURCE_ONLY] == ["source"] * len(USUAL_SOURCE_ONLY)
    assert [forms[m] for m in ODD] == ["regex"] * len(ODD)


def test_a_message_read_by_position_gives_what_the_pattern_extracts():
    for msg, _, by_position, by_pattern in _both_ways(USUAL + USUAL_SOURCE_ONLY + ODD):
        assert by_position == by_pattern, msg
    (_, _, app, _), = _both_ways([USUAL[1]])
    assert app == {"proto": "HTTP", "src": "10.1.0.4", "sport": "55112", "host": "example.com", "dport": "80",
                   "url": "example.com/path", "action": "Deny",
                   "tail": "No rule matched. Proceeding with default action"}


def test_the_legacy_view_reads_application_lines_by_position():
    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE stage_legacy AS SELECT ordinality AS rid, NULL::TIMESTAMP AS ts, 'fw' AS firewall, "
                "'application' AS target, 'legacy' AS log_format, msg "
                "FROM unnest($m::VARCHAR[]) WITH ORDINALITY AS t(msg, ordinality)",
                {"m": [USUAL[0], USUAL_SOURCE_ONLY[0]]})
    # the generic route's table holds legacy lines too (Log Analytics rows, odd envelopes)
    con.execute("CREATE TEMP TABLE stage_generic AS SELECT 3::BIGINT AS rid, NULL::TIMESTAMP AS ts, 'fw' AS firewall, "
                "'application' AS target, 'legacy' AS log_format, $m AS msg", {"m": ODD[0]})
    con.execute(normalise._legacy_sql())
    got = con.execute("SELECT app_form, app.host, app.action FROM legacy ORDER BY rid").fetchall()
    assert got == [("destination", "mcr.microsoft.com", "Allow"), ("source", "", "Deny"), ("regex", "x.example.com", "Deny")]


def test_lines_of_other_tables_have_no_application_struct():
    rows = "(SELECT unnest(['network', NULL]) AS target, 'TCP request from 1.2.3.4:1 to 5.6.7.8:2. Action: Deny' AS msg)"
    got = _connection().execute(f"SELECT app_form, app FROM ({app_position_sql(rows)})").fetchall()
    assert got == [(None, None), (None, None)]
    (_, form, by_position, by_pattern), = _both_ways([None])
    assert (form, by_position, by_pattern) == (None, None, None)


# -- any message made of the grammar's pieces and hostile ones reads the same both ways ----------------

# Each part of a message: the pieces of the usual shape, then odd and hostile ones.
_SLOTS = [
    (["HTTPS", "HTTP", "MSSQL"], ["https", "HTTPSX", "HTTP/1.1", "TCP", "", " HTTPS"]),
    ([" ", "  "], ["   ", "\t", " \t", "\n", "\r", "\f", "\v", "\u00a0", "", " x ", " HTTP ", " : ", "S "]),
    (["request from "], ["request from  ", "request  from ", "Request from ", "request from", "request from\t"]),
    (["10.0.0.1", "10.240.0.5", "", "a.b"], ["fe80::1", "[fe80::1]", "a b", "10.0.0.1.", "to", "é", "x\ty", "1 "]),
    ([":443", ":49514", ":", ":0", ":65535"], ["", ":0443", ":70000", ":65536", ":1a", ":\u0663", ": 1", "::1", ":1 ", ":+1"]),
    (["", " to host.example.com:443", " to h:80", " to é.example:443"],
     [" to host:", " to :443", " to a b:1", " to h:0", " to h:44.3", " to h", " to  h:1", " to h:1 to g:2",
      " to h.:80", " to h:08", " to h:1.", " TO h:1", " to h:1:2", " to h:\t1"]),
    (["."], ["", ". ", "..", ":"]),
    (["", " Url: a.b/c.", " Url: .", " Url: x to y:1.", " Url: . x.", " Url: h:80/a?b=c. d."],
     [" Url: x. Action: 1.", " Url: x. Action: Allow.", " Url: a\nb.", " Url:x.", " Url: a. Url: b.",
      " Url: x. Action:  Deny.", " Url: x. Action: Allowed.", " Url: x.\tAction: Deny.", " Url: x", " Url: x.."]),
    ([" Action: Allow", " Action: Deny"],
     [" Action: allow", " Action: Allowed", " Action: Deny1", " Action: A1", " Action: ", "Action: Allow",
      " Action:  Deny", " Action: Alert", " Action: Allow\u00e9", ""]),
    ([". ", ".", "..", " ", ". .", ".  "], ["", "\t", ".\n", ".\r", "é", "1", "x", ". \u2028", ".\u00a0", "\n"]),
]
_TAIL_PIECES = ["Policy: p", ". Rule Collection Group: g", ". Rule Collection: c", ". Rule: r", "No rule matched",
                " ", "  ", "é", "\u2028", "\u0085", "\u00a0", ". Action: Deny", " to ", ":", ".", "..", " Url: ", ". Url: x.",
                "x" * 300, "Reason: SNI TLS extension was missing."]
_HOSTILE = ["\n", "\t", "\r", "\f", "\v", " ", ":", ".", ". Action: Allow", ". Url: ", " to ", "é", "\x00", "1", "A"]


@st.composite
def _messages(draw):
    """A message of the usual shape with none, one or a few of its parts odd, and now and then something
    hostile put anywhere."""
    odd = {draw(st.integers(0, len(_SLOTS) - 1)) for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3])))}
    msg = "".join(draw(st.sampled_from(odd_pieces if i in odd else usual))
                  for i, (usual, odd_pieces) in enumerate(_SLOTS))
    msg += "".join(draw(st.lists(st.sampled_from(_TAIL_PIECES), max_size=6)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(msg)))
        msg = msg[:at] + draw(st.sampled_from(_HOSTILE)) + msg[at:]
    return msg


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_messages(), _messages(), _messages(), st.text(max_size=60)), min_size=1, max_size=40))
@example(USUAL + USUAL_SOURCE_ONLY + ODD)
@example(["HTTPS request from :. Action: Deny", "HTTPS request from 1:2. Action: Allow", "HTTP  request from a:1. Url: . "
          "Action: Deny", "HTTPS request from 1:2 to h:3. Url: x. Action: 1. Action: Allow", "MSSQL request from a:"
          "1 to b:2. Action: Deny.. \u2028", "HTTPS request from 1:2. Action: Deny . x", "HTTPS request from 1:2. Action: "
          "Allow\u00a0x", "HTTPS request from 1:2 to h:3. Action: Deny. " + "y" * 5000])
def test_any_message_made_of_the_grammars_pieces_reads_the_same_by_position_and_by_pattern(messages):
    for msg, _, by_position, by_pattern in _both_ways(messages):
        assert by_position == by_pattern, msg


# -- a marker that begins with a space or a dot is found by its rest first, with the same answer -----------

_MARKERS = [". Action: ", ". Url: ", " was DNAT'ed to ", " ThreatIntel: ", " IDS: ", ". Rule: ", " to ", ":"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from([*_MARKERS, *(m.lstrip(" .") for m in _MARKERS), " ", ".", ". ", "é",
                                          "x", "\n", "Action", "Url:"]), max_size=10).map("".join),
                min_size=1, max_size=30))
@example(["Action: x. Action: y", "Url: . Url: ", ".Url: ", "Url: x", ". Action: ", "é. Action: ", "  Url: . Url: "])
def test_a_marker_is_found_where_strpos_and_contains_find_it(texts):
    for marker in _MARKERS:
        got = _connection().execute(
            f"SELECT t, {marker_at('t', marker)}, strpos(t, {sql_string(marker)}), "
            f"{contains_marker('t', marker)}, contains(t, {sql_string(marker)}) FROM (SELECT unnest($t) AS t)",
            {"t": texts}).fetchall()
        for text, at, expected_at, has, expected_has in got:
            assert (at, has) == (expected_at, expected_has), (marker, text)
