"""The one suspicion model: tunnelling at any depth, no escalation across shared suffixes, compromised
sources and taint, look-alikes, and `dns` / `recommend` reading the same findings."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from datetime import datetime, timedelta

import jsonschema
import polars as pl
import pytest

from egresslens import dns, store
from egresslens.commands.recommend import FORMATS, render
from egresslens.recommend import Config, emit_json, markdown, recommend
from egresslens.suspicion import SuspicionConfig, assess, owner_zone
from test_recommend_engine import T0, WINDOW, _app, _flows, _store

PODS = "10.1.0.0/24"
POD = "10.1.0.66"  # the compromised pod
CLEAN = [f"10.1.0.{i}" for i in range(10, 20)]
CFG = Config.from_dict({"sources": {"aks-pods": [PODS]}})


def _label(seed: str, n: int) -> str:
    """n random-looking base32 characters (letters and digits, like an encoded payload)."""
    return base64.b32encode(hashlib.sha256(seed.encode()).digest() * 2).decode().lower()[:n]


def _tunnel_names(zone: str, levels: int, count: int = 60) -> list[str]:
    sizes = [40, 20, 12][:levels]
    return [".".join(_label(f"{zone}{i}{j}", s) for j, s in enumerate(sizes)) + "." + zone for i in range(count)]


def _dns_rows(src: str, names: list[str], qtype: str = "TXT", rcode: str = "NXDOMAIN", step_s: int = 300) -> list[dict]:
    return [{"time": T0 + timedelta(seconds=30 + i * step_s), "firewall": "fw", "source_ip": src, "query_name": n,
             "query_type": qtype, "response_code": rcode, "duration_s": 0.002} for i, n in enumerate(names)]


def _proposed(recs) -> set[str]:
    out: set[str] = set()
    for r in recs.items:
        if r.rule is not None and r.kind.startswith("add-"):
            out |= set(r.rule.target_fqdns + r.rule.destination_fqdns + r.rule.destination_addresses)
    return out


# -- tunnelling at any depth ------------------------------------------------------------------

@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("zone,owner", [("exfil-example.net", "exfil-example.net"),
                                        ("t.deep.exfil-example.org", "exfil-example.org")])
def test_tunnelling_spread_over_label_levels_is_found_by_dns_and_recommend_alike(levels, zone, owner):
    names = _tunnel_names(zone, levels)
    con = _store(_flows(_app(CLEAN[0], "api.partner-example.com")), dns_rows=_dns_rows(POD, names))
    susp = assess(con, window=WINDOW)
    assert susp.tunnel_zones["subject"].to_list() == [zone]
    assert susp.tunnel_zones["domain"].to_list() == [owner]
    assert susp.compromised == [POD]
    assert susp.name_reason("www." + owner) is not None  # escalated to the owner zone
    sus = dns.suspicious_domains(con, WINDOW)
    assert sus.filter(pl.col("reason") == "tunnelling")["zone"].to_list() == [zone]
    recs = recommend(con, WINDOW, config=CFG)
    inv = recs.by_kind("investigate")
    assert any(zone in r.title for r in inv)  # listed even though no flow to it was denied
    assert any(POD in r.title for r in inv)
    assert recs.suspicion.to_json()["tunnel_zones"] == [zone]


# -- escalation stops at shared suffixes ------------------------------------------------------

@pytest.mark.parametrize("bad,sibling,suffix", [
    ("testmaliciousdomain.eastus.cloudapp.azure.com", "myvm.eastus.cloudapp.azure.com", "cloudapp.azure.com"),
    ("evilstore.blob.core.windows.net", "stcheckoutweu01.blob.core.windows.net", "blob.core.windows.net"),
    ("evil-app.azurewebsites.net", "good-app.azurewebsites.net", "azurewebsites.net"),
    ("evil-user.github.io", "docs-user.github.io", "github.io"),
])
def test_threat_intel_hit_under_a_shared_suffix_never_escalates_to_the_suffix(bad, sibling, suffix):
    threats = [{"time": T0, "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS", "source_ip": CLEAN[0],
                "source_port": 1, "destination_ip": None, "destination_port": 443, "fqdn": bad, "target_url": None,
                "action": "deny", "description": "Test", "signature_id": None, "category": None, "severity": None,
                "is_tls_inspected": False}]
    rows = _app(CLEAN[1], sibling, n=8) + _app(CLEAN[2], "ods.opinsights.azure.com", n=8)
    con = _store(_flows(rows), threat_rows=threats)
    susp = assess(con, window=WINDOW)
    assert susp.name_reason(bad) is not None
    assert susp.name_reason(sibling) is None and susp.name_reason("ods.opinsights.azure.com") is None
    assert owner_zone(bad) == bad and owner_zone(suffix) is None
    domains = set(dns.suspicious_domains(con, WINDOW)["domain"])
    assert bad in domains and not domains & {suffix, "azure.com", "windows.net", "core.windows.net", "io"}
    assert sibling in _proposed(recommend(con, WINDOW, config=CFG))


def test_a_bad_name_never_taints_a_registrable_domain_that_holds_a_shared_suffix():
    threats = [{"time": T0, "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS", "source_ip": CLEAN[0],
                "source_port": 1, "destination_ip": None, "destination_port": 443, "fqdn": "evil.azure.com",
                "target_url": None, "action": "deny", "description": "Test", "signature_id": None, "category": None,
                "severity": None, "is_tls_inspected": False}]
    con = _store(_flows(_app(CLEAN[1], "x.ods.opinsights.azure.com", n=8)), threat_rows=threats)
    susp = assess(con, window=WINDOW)
    assert susp.name_reason("evil.azure.com") and susp.name_reason("x.ods.opinsights.azure.com") is None
    assert "azure.com" not in set(dns.suspicious_domains(con, WINDOW)["domain"])


# -- taint: compromised sources -----------------------------------------------------------------

def _incident_store(shared_by_clean: bool):
    c2 = "cdn-sync.c2-example.org"
    rows = _app(POD, c2, n=12)
    rows += [r for src in CLEAN for r in _app(src, "api.partner-example.com", n=8)]
    if shared_by_clean:
        rows += [r for src in CLEAN for r in _app(src, c2, n=8)]
    names = _tunnel_names("t.exfil-example.net", 2)
    return c2, _store(_flows(rows), dns_rows=_dns_rows(POD, names))


def _code(text: str) -> str:
    """A generated file without its comments: what would be applied."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "//")))


def test_destination_only_the_compromised_pod_needs_is_never_allowed_and_goes_to_investigate():
    c2, con = _incident_store(shared_by_clean=False)
    recs = recommend(con, WINDOW, config=CFG)
    assert c2 not in _proposed(recs) and "api.partner-example.com" in _proposed(recs)
    for fmt in FORMATS:
        text = render(recs, fmt)
        if fmt == "json":
            rules = [r["rule"] for r in json.loads(text)["recommendations"] if r["rule"]]
            assert c2 not in json.dumps(rules)
        elif fmt not in ("markdown", "table"):  # az, draft, Terraform, Bicep name it in a comment, never a rule
            assert c2 not in _code(text), fmt
            assert c2 in text, fmt
    inv = [r for r in recs.by_kind("investigate") if c2 in r.title]
    assert len(inv) == 1 and POD in inv[0].title
    assert "tunnelling" in inv[0].rationale  # the evidence against the source
    assert any("isolate the workload" in s for s in inv[0].rollout) and any(f"deny rule for {c2}" in s for s in inv[0].rollout)
    pod = [r for r in recs.by_kind("investigate") if r.title.startswith(f"Compromised source {POD}")]
    assert len(pod) == 1 and pod[0].evidence.first_seen and pod[0].evidence.last_seen


def test_destination_clean_pods_also_need_is_allowed_for_them_only_with_a_note():
    c2, con = _incident_store(shared_by_clean=True)
    recs = recommend(con, WINDOW, config=CFG)
    rules = [r for r in recs.by_kind("add-application-rule") if c2 in r.rule.target_fqdns]
    assert len(rules) == 1
    rule = rules[0]
    assert rule.rule.target_fqdns == [c2]  # a tainted origin is never bundled with other names
    nets = [ipaddress.ip_network(c) for c in rule.rule.source_addresses]
    assert not any(ipaddress.ip_address(POD) in n for n in nets)
    assert all(any(ipaddress.ip_address(ip) in n for n in nets) for ip in CLEAN)
    assert any(f"compromised source(s) {POD}" in n for n in rule.evidence.notes)
    assert rule.evidence.per_name[0]["compromised_also"] == [POD]
    assert rule.evidence.distinct_sources == len(CLEAN)
    assert f"`{POD}`" in markdown.emit(recs)


# -- never bundle low support -----------------------------------------------------------------------

def test_low_support_name_is_never_bundled_with_well_supported_names_and_evidence_is_per_name():
    rows = [r for src in CLEAN[:3] for r in _app(src, "api.partner-example.com", n=16)]
    rows += [r for src in CLEAN[:3] for r in _app(src, "hooks.partner-example.com", n=16)]
    rows += _app(CLEAN[0], "rare.other-example.net", n=3)
    con = _store(_flows(rows))
    recs = recommend(con, WINDOW, config=CFG)
    apps = {tuple(r.rule.target_fqdns): r for r in recs.by_kind("add-application-rule")}
    assert ("rare.other-example.net",) in apps
    assert ("api.partner-example.com", "hooks.partner-example.com") in apps
    rare = apps[("rare.other-example.net",)]
    assert rare.evidence.per_name[0]["support"] == "low" and rare.confidence != "high"
    doc = json.loads(emit_json.emit(recs))
    jsonschema.validate(doc, emit_json.schema())
    both = next(r for r in doc["recommendations"] if len(r["evidence"]["per_name"]) == 2)
    assert {e["name"] for e in both["evidence"]["per_name"]} == {"api.partner-example.com", "hooks.partner-example.com"}
    assert "| `rare.other-example.net` | 3 |" in markdown.emit(recs)


# -- look-alikes ------------------------------------------------------------------------------------------

def test_punycode_look_alike_is_decoded_never_proposed_and_shown_in_both_forms():
    rows = [r for src in CLEAN for r in _app(src, "xn--pypal-4ve.com", n=12)]
    con = _store(_flows(rows))
    susp = assess(con, window=WINDOW)
    row = susp.names.filter(pl.col("subject") == "xn--pypal-4ve.com").row(0, named=True)
    assert row["kind"] == "lookalike" and row["looks_like"] == "paypal.com" and row["unicode"] == "p\u0430ypal.com"
    recs = recommend(con, WINDOW, config=CFG)
    assert not _proposed(recs)
    for fmt in ("az", "terraform", "bicep"):
        assert "xn--pypal-4ve" not in _code(render(recs, fmt))
    inv = " ".join(r.title + r.rationale for r in recs.by_kind("investigate"))
    assert "xn--pypal-4ve.com" in inv and "paypal.com" in inv


# -- beacons and generated names ---------------------------------------------------------------------------

def test_newly_seen_name_reached_at_regular_intervals_is_a_beacon_and_marks_its_source():
    old = _dns_rows(CLEAN[0], ["api.partner-example.com"] * 40, qtype="A", rcode="NOERROR", step_s=1800)
    start = T0 + timedelta(hours=12)
    beacon = [{"time": start + timedelta(seconds=60 * i + (i % 3)), "firewall": "fw", "source_ip": CLEAN[1],
               "query_name": "upd.fresh-example.net", "query_type": "A", "response_code": "NOERROR", "duration_s": 0.002}
              for i in range(30)]
    con = _store(_flows(_app(CLEAN[0], "api.partner-example.com")), dns_rows=old + beacon)
    susp = assess(con, window=WINDOW)
    row = susp.names.filter(pl.col("subject") == "fresh-example.net").row(0, named=True)
    assert row["kind"] == "beacon" and row["never_allow"]
    assert susp.compromised == [CLEAN[1]]
    assert susp.name_reason("partner-example.com") is None


def _quiet_new_zones() -> tuple[list[dict], list[dict], datetime]:
    """A zone queried since the start, then 300 zones first seen at noon without another signal (the
    five busiest queried 20 times each): (the old rows, the new rows, noon)."""
    old = _dns_rows(CLEAN[0], ["api.partner-example.com"] * 40, qtype="A", rcode="NOERROR", step_s=1800)
    start = T0 + timedelta(hours=12)
    fresh = [{"time": start + timedelta(seconds=i), "firewall": "fw", "source_ip": CLEAN[2], "query_name": f"www.site{i}.com",
              "query_type": "A", "response_code": "NOERROR", "duration_s": 0.002} for i in range(300)]
    return old, fresh + fresh[:5] * 19, start


def test_newly_seen_zones_without_a_signal_are_listed_busiest_first_and_the_rest_counted_beacons_included():
    old, fresh, start = _quiet_new_zones()
    beacon = [{"time": start + timedelta(seconds=60 * i + (i % 3)), "firewall": "fw", "source_ip": CLEAN[1],
               "query_name": "upd.zz-quiet-example.net", "query_type": "A", "response_code": "NOERROR",
               "duration_s": 0.002} for i in range(9)]  # fewer queries than the busiest, still a beacon
    con = _store(_flows(_app(CLEAN[0], "api.partner-example.com")), dns_rows=old + fresh + beacon)
    full = assess(con, window=WINDOW)
    capped = assess(con, window=WINDOW, config=SuspicionConfig(max_listed=5))
    new = lambda s: s.names.filter(pl.col("kind") == "newly_seen")  # noqa: E731
    assert new(full).height == 300 and full.omitted == {}
    assert sorted(new(capped)["subject"].to_list()) == [f"site{i}.com" for i in range(5)]
    assert capped.omitted == {"newly_seen": 295} and capped.to_json()["names_total"] == full.to_json()["names_total"]
    beacon_row = capped.names.filter(pl.col("subject") == "zz-quiet-example.net").row(0, named=True)
    assert beacon_row["kind"] == "beacon" and beacon_row["withhold"] and capped.compromised == [CLEAN[1]]


def test_a_newly_seen_look_alike_beyond_the_listed_zones_is_listed_as_a_look_alike_not_counted_as_unlisted():
    old, fresh, start = _quiet_new_zones()
    squat = {**fresh[0], "time": start + timedelta(hours=1), "query_name": "api.partner-exapmle.com"}  # a swapped pair
    con = _store(_flows(_app(CLEAN[0], "api.partner-example.com")), dns_rows=old + fresh + [squat])
    capped = assess(con, window=WINDOW, config=SuspicionConfig(max_listed=5), references=["api.partner-example.com"])
    row = capped.names.filter(pl.col("subject") == "partner-exapmle.com").row(0, named=True)
    assert row["kind"] == "lookalike" and row["never_allow"]
    assert capped.omitted == {"newly_seen": 295}  # the 300 quiet zones but the 5 listed; the look-alike is listed
    assert capped.to_json()["names_total"] == capped.names.height + 295


def test_generated_looking_zones_that_fail_to_resolve_are_flagged():
    dga = [f"{_label(f'dga{i}', 16)}.com" for i in range(5)]
    rows = _dns_rows(POD, [n for n in dga for _ in range(3)], qtype="A", rcode="NXDOMAIN", step_s=60)
    rows += _dns_rows(CLEAN[0], ["stcheckoutweu01.blob.core.windows.net"] * 10, qtype="A", rcode="NOERROR")
    con = _store([], dns_rows=rows)
    susp = assess(con, window=WINDOW)
    gen = set(susp.names.filter(pl.col("kind") == "generated")["subject"])
    assert gen == set(dga)
    assert susp.compromised == [POD]


# -- one block, the same everywhere ------------------------------------------------------------------

def test_dns_json_suspicion_block_matches_the_schema_and_recommend():
    c2, con = _incident_store(shared_by_clean=True)
    block = dns.analyse_dns(con, WINDOW).to_dict()["suspicion"]
    schema = emit_json.schema()
    jsonschema.validate(block, {**schema["$defs"]["suspicion"], "$defs": schema["$defs"]})
    doc = json.loads(emit_json.emit(recommend(con, WINDOW, config=CFG)))
    assert json.loads(json.dumps(block, default=str)) == doc["suspicion"]
    assert block["compromised_sources"] == [POD] and block["tunnel_zones"] == ["t.exfil-example.net"]


# -- hostile log text -----------------------------------------------------------------------------------

def test_hostile_threat_text_reaches_dns_and_recommend_outputs_escaped(tmp_path):
    import typer
    from typer.testing import CliRunner

    from egresslens.commands import dns as dns_cmd
    from hostile import TEXTS, assert_no_raw_controls

    threats = [{"time": T0 + timedelta(minutes=i), "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS",
                "source_ip": POD, "source_port": 1, "destination_ip": None, "destination_port": 443,
                "fqdn": text, "target_url": None, "action": "deny", "description": text, "signature_id": None,
                "category": None, "severity": None, "is_tls_inspected": False} for i, text in enumerate(TEXTS.values())]
    rows = [r for text in TEXTS.values() for r in _app(POD, text, n=4)] + _app(CLEAN[0], "api.partner-example.com")
    con = _store(_flows(rows), threat_rows=threats)
    recs = recommend(con, WINDOW, config=CFG)
    assert not _proposed(recs) - {"api.partner-example.com"}
    for fmt in FORMATS:
        assert_no_raw_controls(render(recs, fmt), fmt)
    doc = json.loads(render(recs, "json"))
    assert {n["subject"] for n in doc["suspicion"]["names"]} >= {t.lower() for t in TEXTS.values()}

    db = tmp_path / "h.duckdb"
    con.execute(f"ATTACH '{db}' AS h").fetchall()
    for t in ("flows", "threats"):
        con.execute(f"CREATE TABLE h.{t} AS SELECT * FROM memory.{t}").fetchall()
    con.execute("DETACH h").fetchall()
    store.connect(db).close()  # the rest of the schema
    app = typer.Typer()
    app.callback()(lambda: None)
    dns_cmd.register(app)
    out = CliRunner().invoke(app, ["dns", "--db", str(db), "--start", WINDOW.start.isoformat(), "--end",
                                   WINDOW.end.isoformat()], env={"COLUMNS": "400"})
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output and "Compromised sources" in out.stdout
    assert_no_raw_controls(out.stdout, "dns terminal output")
    assert "[bold red]x[/bold red]" in out.stdout and "[link=https://evil.example]" in out.stdout


def test_investigate_lists_tunnelling_zones_and_compromised_sources_without_any_denied_flow():
    names = _tunnel_names("t.exfil-example.net", 3)
    allowed = _app(CLEAN[0], "api.partner-example.com", action="Allow", rule="r", rule_collection="c",
                   rule_collection_group="g", action_reason=None)
    con = _store(_flows(allowed), dns_rows=_dns_rows(POD, names))
    recs = recommend(con, WINDOW, config=CFG)
    assert not recs.by_kind("add-application-rule") and not recs.by_kind("add-network-rule")
    titles = [r.title for r in recs.by_kind("investigate")]
    assert "DNS tunnelling under t.exfil-example.net" in titles
    assert f"Compromised source {POD}: isolate it" in titles


def test_suspicion_thresholds_come_from_the_recommend_config_file(tmp_path):
    from egresslens.recommend import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text("[suspicion]\nmin_unique_names = 100\n")
    names = _tunnel_names("t.exfil-example.net", 2)  # 60 names: below the raised threshold
    con = _store([], dns_rows=_dns_rows(POD, names))
    recs = recommend(con, WINDOW, config=Config.from_toml(cfg))
    assert recs.suspicion.config.min_unique_names == 100 and recs.suspicion.tunnel_zones.is_empty()
    cfg.write_text("[suspicion]\nno_such_threshold = 1\n")
    with pytest.raises(ConfigError, match=r"\[suspicion\] no_such_threshold"):
        Config.from_toml(cfg)


def test_a_documented_bundle_with_a_tainted_name_is_for_the_clean_sources_only():
    rows = [r for src in CLEAN for n in ("registry-1.docker.io", "auth.docker.io") for r in _app(src, n, n=8)]
    rows += _app(POD, "auth.docker.io", n=8)
    con = _store(_flows(rows), dns_rows=_dns_rows(POD, _tunnel_names("t.exfil-example.net", 1)))
    recs = recommend(con, WINDOW, config=CFG)
    auth = [r for r in recs.by_kind("add-application-rule") if "auth.docker.io" in r.rule.target_fqdns]
    assert len(auth) == 1 and auth[0].bundle == "docker-hub"
    assert not any(ipaddress.ip_address(POD) in ipaddress.ip_network(c) for c in auth[0].rule.source_addresses)
    assert any(f"compromised source(s) {POD}" in n for n in auth[0].evidence.notes)


def test_a_wildcard_over_a_name_only_the_compromised_pod_asked_for_excludes_the_pod():
    shards = ["eu-1.telemetry.example-saas.io", "eu-2.telemetry.example-saas.io", "us-3.telemetry.example-saas.io"]
    rows = [r for src in CLEAN for n in shards for r in _app(src, n, n=8)]
    rows += _app(POD, "us-9.telemetry.example-saas.io", n=8)
    con = _store(_flows(rows), dns_rows=_dns_rows(POD, _tunnel_names("t.exfil-example.net", 1)))
    recs = recommend(con, WINDOW, config=CFG)
    wild = [r for r in recs.by_kind("add-application-rule") if "*.telemetry.example-saas.io" in r.rule.target_fqdns]
    assert len(wild) == 1
    assert not any(ipaddress.ip_address(POD) in ipaddress.ip_network(c) for c in wild[0].rule.source_addresses)
    assert any("us-9.telemetry.example-saas.io" in n for n in wild[0].evidence.notes)
    assert any("us-9.telemetry.example-saas.io" in r.title and POD in r.title for r in recs.by_kind("investigate"))


def test_a_unicode_look_alike_is_investigated_with_what_it_looks_like():
    con = _store(_flows([r for src in CLEAN for r in _app(src, "p\u0430ypal.com", n=8)]))
    recs = recommend(con, WINDOW, config=CFG)
    assert not _proposed(recs)
    inv = [r for r in recs.by_kind("investigate") if "paypal.com" in r.rationale]
    assert inv and "look-alike of paypal.com" in inv[0].rationale
    assert assess(con, since=WINDOW.start.isoformat(), until=WINDOW.end.isoformat()).name_reason("p\u0430ypal.com")
