"""The drilldown opens with the suspicion model's verdict: a compromised pod gets a banner with its first
contact, what it reached, why and the isolate action, and the investigate items about it; a name only
compromised pods reached gets a banner too; a clean pod one quiet line. The page, `drilldown --json`,
`recommend --format json` and `dns --json` say the same."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime

import pytest
from typer.testing import CliRunner

from egresslens.cli import app
from egresslens.suspicion import SUGGESTED_ACTION

runner = CliRunner()
START = "2026-05-04T00:00:00Z"


def cli(*args: str, codes=(0, 1)) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "160", "NO_COLOR": "1"})
    assert result.exit_code in codes, result.output[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """`simulate --incident` for a day, ingested: (store, policy, truth, recommend JSON, dns JSON)."""
    d = tmp_path_factory.mktemp("verdict")
    cli("simulate", "--out", str(d / "sim"), "--hours", "24", "--events-per-hour", "3000", "--start", START,
        "--incident", codes=(0,))
    db = str(d / "s.duckdb")
    logs = sorted(str(p) for p in (d / "sim").iterdir() if p.is_dir())  # not truth.json and policy.json beside them
    cli("ingest", "files", *logs, "--db", db, "--quiet", codes=(0,))
    policy = str(d / "sim" / "policy.json")
    truth = json.loads((d / "sim" / "truth.json").read_text())
    recs = json.loads(cli("recommend", "--db", db, "--policy", policy, "--format", "json"))
    dns = json.loads(cli("dns", "--db", db, "--json"))
    return d, db, policy, truth, recs, dns


def drill(incident, subject: str):
    d, db, policy, *_ = incident
    doc = json.loads(cli("drilldown", subject, "--db", db, "--policy", policy, "--json", codes=(0,)))
    out = d / f"{subject}.html"
    cli("drilldown", subject, "--db", db, "--policy", policy, "--out", str(out), codes=(0,))
    page = out.read_text()
    banner = re.search(r'<div class="verdict-banner[^"]*" role="alert" data-verdict="([^"]+)">(.*?)</div>', page, re.S)
    quiet = re.search(r'<p class="verdict-quiet" data-verdict="([^"]+)">(.*?)</p>', page, re.S)
    return doc, banner, quiet, page


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def test_a_compromised_pod_opens_with_a_banner_its_evidence_and_the_isolate_action(incident):
    *_, truth, recs, dns = incident
    pod = truth["incident"]["beacon"]["source"]
    doc, banner, quiet, page = drill(incident, pod)
    v = doc["verdict"]
    assert v["verdict"] == "compromised" and banner and not quiet
    assert banner.group(1) == "compromised" and page.index("verdict-banner") < page.index('id="drilldown"')
    shown = " ".join(text(banner.group(2)).split())
    # the same first contact, evidence and action as `dns --json` and `recommend --format json`
    source = next(s for s in dns["suspicion"]["sources"] if s["source_ip"] == pod)
    assert pod in recs["suspicion"]["compromised_sources"] and pod in dns["suspicion"]["compromised_sources"]
    assert v["since"] == source["first_seen"] == next(
        s for s in recs["suspicion"]["sources"] if s["source_ip"] == pod)["first_seen"]
    first = datetime.fromisoformat(v["since"])
    assert f"Compromised since {first:%Y-%m-%d %H:%M:%S} UTC" in shown
    assert f"first contact {first:%Y-%m-%d %H:%M:%S} UTC" in shown
    assert v["evidence"] and [e["detail"] for e in v["evidence"]] == [e["detail"] for e in source["evidence"]]
    for e in source["evidence"][:8]:
        assert " ".join(e["detail"].split()) in shown
    c2 = truth["incident"]["beacon"]["fqdn"]
    assert any(c2 == z or c2.endswith("." + z) for z in v["reached"]) and "reached" in shown
    assert truth["malicious"]["tunnel_domain"] in " ".join(v["reached"])
    assert v["action"] == source["suggested_action"] == SUGGESTED_ACTION
    assert f"Isolate it: {SUGGESTED_ACTION}" in shown
    # the recommendations that touch it: its own investigate item and the tunnelling one, most urgent first
    touching = doc["tables"]["Recommendations that touch it"]
    items = {r["id"]: r for r in recs["recommendations"]}
    own = next(r for r in recs["recommendations"] if r["title"] == f"Compromised source {pod}: isolate it")
    tunnel = next(r for r in recs["recommendations"] if r["title"].startswith("DNS tunnelling under"))
    ids = [r["id"] for r in touching]
    assert own["id"] in ids and tunnel["id"] in ids
    assert all(items[i]["kind"] == "investigate" for i in ids[:2])
    assert all(r["title"] == items[r["id"]]["title"] for r in touching)
    other = truth["incident"]["contact"]["source"]
    assert not [r for r in touching if r["title"].startswith(f"Compromised source {other}")]


def test_the_contact_pod_and_the_c2_name_agree_with_recommend_and_dns(incident):
    *_, truth, recs, dns = incident
    contact, c2 = truth["incident"]["contact"]["source"], truth["incident"]["beacon"]["fqdn"]
    doc, banner, _, _ = drill(incident, contact)
    source = next(s for s in dns["suspicion"]["sources"] if s["source_ip"] == contact)
    assert doc["verdict"]["verdict"] == "compromised" and doc["verdict"]["since"] == source["first_seen"]
    assert any(c2 == z or c2.endswith("." + z) for z in doc["verdict"]["reached"]) and banner
    titles = [r["title"] for r in doc["tables"]["Recommendations that touch it"]]
    assert f"Compromised source {contact}: isolate it" in titles
    assert not [t for t in titles if t.startswith("Compromised source") and contact not in t]
    # the C2 name: never proposed, reached by compromised pods only; what to do names them
    doc, banner, quiet, _ = drill(incident, c2)
    v = doc["verdict"]
    assert v["verdict"] == "never proposed" and banner and banner.group(1) == "never proposed" and not quiet
    assert set(v["sources"]) <= set(recs["suspicion"]["compromised_sources"]) and contact in v["sources"]
    shown = " ".join(text(banner.group(2)).split())
    assert "Never proposed" in shown and contact in shown and "isolate" in shown
    assert c2 not in json.dumps([r["rule"] for r in recs["recommendations"] if r["rule"]])


def test_a_clean_pod_gets_one_quiet_line(incident):
    *_, truth, recs, dns = incident
    clean = truth["hosts"]["pods"]["checkout"][0]
    assert clean not in dns["suspicion"]["compromised_sources"]
    doc, banner, quiet, _ = drill(incident, clean)
    assert doc["verdict"]["verdict"] == "clean" and doc["verdict"]["action"] is None
    assert not banner and quiet and quiet.group(1) == "clean" and "reached nothing withheld" in text(quiet.group(2))
