"""`egresslens recommend` CLI: formats, --out, --what-if, exit codes."""

from __future__ import annotations

import json
import shlex

import hcl2
import pytest
from typer.testing import CliRunner

from egresslens import exitcodes, store
from egresslens.cli import app
from egresslens.ingest import store_canonical_frames

runner = CliRunner()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from test_recommend_support import simulated_store

    sc, _con, _w = simulated_store()
    d = tmp_path_factory.mktemp("rec")
    db = d / "s.duckdb"
    con = store.connect(db)
    store_canonical_frames(con, flows=sc.flows, dns_queries=sc.dns_queries, threats=sc.threats)
    con.close()
    pol = d / "policy.json"
    pol.write_text(json.dumps(sc.policy))
    cfg = d / "cfg.toml"
    cfg.write_text('[sources]\naks-nodes = ["10.240.0.0/22"]\naks-pods = ["10.244.0.0/16"]\nvm-spoke = ["10.241.0.0/24"]\n'
                   '[thresholds]\nmin_hits = 3\n')
    return {"db": str(db), "policy": str(pol), "config": str(cfg), "dir": d}


def test_help():
    r = runner.invoke(app, ["recommend", "--help"])
    assert r.exit_code == 0 and "--what-if" in r.output and "--service-tags" in r.output


@pytest.mark.parametrize("fmt", ["markdown", "json", "az", "terraform", "bicep"])
def test_formats(paths, fmt):
    out = paths["dir"] / f"out.{fmt}"
    r = runner.invoke(app, ["recommend", "--db", paths["db"], "--since", "2d", "--policy", paths["policy"],
                            "--config", paths["config"], "--format", fmt, "--out", str(out)])
    assert r.exit_code == exitcodes.FINDINGS, r.output
    text = out.read_text()
    if fmt == "json":
        doc = json.loads(text)
        kinds = {x["kind"] for x in doc["recommendations"]}
        assert {"add-application-rule", "add-network-rule", "remove-rule", "investigate"} <= kinds
        assert any(x["rule"] and x["rule"]["source_group"] == "aks-pods" for x in doc["recommendations"])
    elif fmt == "terraform":
        hcl2.loads(text)
    elif fmt == "az":
        for line in text.splitlines():
            shlex.split(line, comments=True)  # as the shell reads it: a comment may hold any quote
    elif fmt == "markdown":
        assert "Observation window" in text


def test_what_if(paths):
    r = runner.invoke(app, ["recommend", "--db", paths["db"], "--since", "2d", "--policy", paths["policy"],
                            "--format", "json", "--what-if"])
    doc = json.loads(r.output)
    adds = [x for x in doc["recommendations"] if x["kind"].startswith("add-")]
    assert adds and all(x["what_if"]["replayed"] and x["what_if"]["deny_to_allow_hits"] > 0 for x in adds)


def test_errors(paths, tmp_path):
    r = runner.invoke(app, ["recommend", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == exitcodes.INPUT_ERROR
    r = runner.invoke(app, ["recommend", "--db", paths["db"], "--format", "yaml"])
    assert r.exit_code == exitcodes.USAGE
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds]\nnope = 1\n")
    r = runner.invoke(app, ["recommend", "--db", paths["db"], "--config", str(bad)])
    assert r.exit_code == exitcodes.USAGE
    badp = tmp_path / "p.json"
    badp.write_text("{not json")
    r = runner.invoke(app, ["recommend", "--db", paths["db"], "--policy", str(badp)])
    assert r.exit_code == exitcodes.INPUT_ERROR
