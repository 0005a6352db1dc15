"""Emitters: az (shlex), Terraform (hcl2), Bicep, JSON schema; hostile names never break out of quoting."""

from __future__ import annotations

import json
import re
import shlex

import hcl2
import jsonschema
import pytest
from hypothesis import example, given, settings, strategies as st

from egresslens.recommend import emit_az, emit_bicep, emit_json, emit_terraform, markdown, recommend
from egresslens.recommend.emit_terraform import hcl_string
from egresslens.recommend.emit_bicep import bicep_string
from egresslens.recommend.engine import Recommendations
from egresslens.recommend.model import Evidence, ProposedRule, Recommendation
from egresslens.recommend.wildcards import InvalidName, validate_fqdn

from test_recommend_engine import WINDOW, _app, _flows, _store

HOSTILE = [
    'a"b.example.com',
    "x$(touch /tmp/pwned).example.com",
    "`id`.example.com",
    "line\nbreak.example.com",
    "${var.secret}.example.com",
    "%{if true}x%{endif}.example.com",
    "ex\u0430mple.com",  # Cyrillic 'a'
    "paypa\u04cf.example.com",
    "a" * 300 + ".example.com",
    "x'; rm -rf / #.example.com",
    "back\\slash.example.com",
    "sp ace.example.com",
]
HOSTILE_FRAGMENTS = ["$(", "`", "${", "%{", "\n", '"', "'", "\\", "\u0430", "\u04cf", "a" * 64, " rm "]


@pytest.mark.parametrize("name", HOSTILE)
def test_validate_rejects_hostile(name):
    with pytest.raises(InvalidName) as exc:
        validate_fqdn(name)
    assert "FQDN" in str(exc.value)
    assert "\n" not in str(exc.value)


def _rec(rule: ProposedRule, kind="add-application-rule") -> Recommendation:
    return Recommendation(id="r1", kind=kind, title="t", rule=rule, evidence=Evidence(), confidence="high", risk="low",
                          rationale="r", window={"start": "s", "end": "e", "hours": 1.0})


def _all_formats(recs):
    return {f: m.emit(recs) for f, m in (("az", emit_az), ("terraform", emit_terraform), ("bicep", emit_bicep),
                                          ("json", emit_json), ("markdown", markdown))}


def _check_outputs(outs: dict[str, str], forbidden: list[str]) -> None:
    # shell: every line tokenises; no token carries a hostile fragment
    for line in outs["az"].splitlines():
        if line.startswith("#") or not line.strip():
            continue
        tokens = shlex.split(line)
        for tok in tokens:
            for frag in forbidden:
                if frag in ("'", '"', "\\", "${"):
                    continue  # the script's own `: "${POLICY:?...}"` guard lines
                assert frag not in tok or tok.startswith("${") or tok.startswith(":"), (frag, tok)
    tf = outs["terraform"]
    hcl2.loads(tf)
    for frag in ("$(", "`", "\u0430", "\u04cf", "a" * 64):
        assert frag not in tf
    for frag in ("$(", "`", "\u0430", "\u04cf", "a" * 64, "%{"):
        assert frag not in outs["bicep"]
    jsonschema.validate(json.loads(outs["json"]), emit_json.schema())


def test_hostile_names_in_logs_become_investigate_and_never_reach_an_emitter():
    rows = []
    for name in HOSTILE:
        rows += _app("10.1.0.4", name)
    rows += _app("10.1.0.4", "api.partner-example.com")
    recs = recommend(_store(_flows(rows)), WINDOW)
    adds = recs.by_kind("add-application-rule")
    assert [r.rule.target_fqdns for r in adds] == [["api.partner-example.com"]]
    inv = recs.by_kind("investigate")
    assert len(inv) == len(HOSTILE)
    assert all("invalid or hostile name rejected" in r.rationale for r in inv)
    outs = _all_formats(recs)
    _check_outputs(outs, HOSTILE_FRAGMENTS)
    # markdown reports the hostile names as text: rendered, they add no markup of their own
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(outs["markdown"])
    assert set(re.findall(r"<([a-z0-9]+)", rendered)) <= {"h1", "h2", "h3", "p", "ul", "li", "code", "strong",
                                                          "table", "thead", "tbody", "tr", "th", "td", "blockquote"}
    assert "x$(touch /tmp/pwned).example.com" in rendered


@pytest.mark.parametrize("name", HOSTILE)
def test_emitters_reject_hostile_rules_built_by_hand(name):
    rule = ProposedRule(rule_type="ApplicationRule", rule_collection_group="g", rule_collection_group_priority=500,
                        rule_collection="c", rule_collection_priority=100, name="n", source_addresses=["10.0.0.0/24"],
                        protocols=["Https:443"], target_fqdns=[name])
    recs = Recommendations([_rec(rule)], WINDOW)
    for fmt, emit in (("az", emit_az), ("terraform", emit_terraform), ("bicep", emit_bicep)):
        text = emit.emit(recs)
        assert "skipped" in text and "FQDN" in text, fmt
        for frag in ("$(", "`", "\u0430", "\u04cf", "a" * 64):
            assert frag not in text, (fmt, frag)
    hcl2.loads(emit_terraform.emit(recs))
    for line in emit_az.emit(recs).splitlines():
        shlex.split(line)  # comments included: must still tokenise


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=80))
@example("${")
@example("%{")
@example("a$${b")
def test_hcl_and_bicep_strings_are_single_literals(s):
    lit = hcl_string(s)
    parsed = hcl2.loads(f"x = {lit}\n")["x"]
    assert parsed == lit
    body = lit[1:-1]
    assert "${" not in body and "%{" not in body
    b = bicep_string(s)
    inner = b[1:-1]
    # no unescaped quote or interpolation inside the Bicep literal
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 2
            continue
        assert inner[i] != "'" and inner[i] not in "\n\r"
        assert not inner.startswith("${", i)
        i += 1


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_shell_quoting_round_trips(s):
    assert shlex.split(shlex.quote(s)) == [s]


def test_formats_on_simulated_scenario(simulated):
    recs = simulated["recs"]
    outs = _all_formats(recs)
    hcl = hcl2.loads(outs["terraform"])
    assert hcl["resource"]
    for line in outs["az"].splitlines():
        if line and not line.startswith("#"):
            toks = shlex.split(line)
            assert toks[0] in ("az", "set", ":")
    assert "Microsoft.Network/firewallPolicies/ruleCollectionGroups" in outs["bicep"]
    assert outs["bicep"].count("{") == outs["bicep"].count("}")
    jsonschema.validate(json.loads(outs["json"]), emit_json.schema())


@pytest.fixture(scope="module")
def simulated():
    from test_recommend_support import simulated_store
    from egresslens.recommend import parse_policy

    sc, con, window = simulated_store()
    return {"recs": recommend(con, window, policy=parse_policy(sc.policy)), "sc": sc}
