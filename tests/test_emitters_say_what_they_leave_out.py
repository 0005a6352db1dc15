"""What `recommend --format az|terraform|bicep|draft` writes says what it leaves out, and reads as its
tools write it: the recommendations to investigate named in comments (never as rules), rule names
without runs of dashes, the DNS-proxy requirement above every network rule with FQDNs, and Terraform
exactly as `terraform fmt` writes it (HashiCorp's hclwrite formatter, `@cdktf/hcl-tools` from the npm
registry, installed by `make test` into `.hcltools/`; `terraform fmt` too where it is installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from test_recommend_emitters import simulated  # noqa: F401 - the module's fixture
from typer.testing import CliRunner

from egresslens.cli import app
from egresslens.recommend import emit_az, emit_bicep, emit_draft, emit_terraform
from egresslens.recommend.model import safe_name

REPO = Path(__file__).resolve().parents[1]
HCLTOOLS = Path(os.environ.get("EGRESSLENS_HCLTOOLS_DIR", REPO / ".hcltools"))
PACKAGE = HCLTOOLS / "node_modules" / "@cdktf" / "hcl-tools"


def _formatter() -> Path:
    if (PACKAGE / "package.json").exists():
        return PACKAGE
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI"):
            pytest.fail("npm is not installed: CI must check the Terraform output's format")
        pytest.skip("npm is not installed: @cdktf/hcl-tools comes from the npm registry")
    version = re.search(r"^HCLTOOLS_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    HCLTOOLS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--silent", "--prefix",
                           str(HCLTOOLS), f"@cdktf/hcl-tools@{version}"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"npm install @cdktf/hcl-tools failed:\n{done.stderr[-2000:]}")
    return PACKAGE


def hclwrite_format(text: str) -> str:
    """`text` as HashiCorp's hclwrite.Format (what `terraform fmt` runs) writes it."""
    script = ("const {format} = require(process.argv[1]); let s = '';"
              "process.stdin.on('data', d => s += d).on('end', () => format(s).then(o => process.stdout.write(o)));")
    done = subprocess.run(["node", "-e", script, str(_formatter())], input=text, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_terraform_output_is_exactly_as_terraform_fmt_writes_it(simulated):  # noqa: F811
    text = emit_terraform.emit(simulated["recs"])
    assert hcl2.loads(text)["resource"]
    assert hclwrite_format(text) == text
    terraform = shutil.which("terraform")
    if terraform:  # the real thing too, where it is installed
        done = subprocess.run([terraform, "fmt", "-check", "-"], input=text, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_formatter_check_catches_misaligned_attributes():
    misaligned = 'resource "x" "y" {\n  name = "a"\n  firewall_policy_id = "b"\n}\n'
    assert hclwrite_format(misaligned) != misaligned


def test_investigate_items_are_named_in_comments_and_never_written_as_rules(simulated):  # noqa: F811
    recs = simulated["recs"]
    inv = [r for r in recs.items if r.kind == "investigate"]
    assert inv
    for emit, marker in ((emit_az.emit, "#"), (emit_draft.emit, "#"), (emit_terraform.emit, "#"),
                         (emit_bicep.emit, "//")):
        text = emit(recs)
        header = [line for line in text.splitlines() if line.startswith(marker + "   ")]
        assert {h.split()[1] for h in header} == {r.id for r in inv}
        assert f"{len(inv)} recommendation(s) to investigate" in text
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(marker))
        for r in inv:
            assert r.id not in code


def test_rule_names_have_no_runs_of_dashes():
    assert safe_name("allow-icmp-*-1.1.1.1") == "allow-icmp-1.1.1.1"
    assert safe_name("a -- b//c") == "a-b-c"
    assert safe_name("--*--") == "rule"


def test_network_rules_with_fqdns_say_they_need_dns_proxy(simulated):  # noqa: F811
    recs = simulated["recs"]
    with_fqdns = [r for r in recs.items if r.rule is not None and r.rule.rule_type == "NetworkRule"
                  and r.rule.destination_fqdns]
    assert with_fqdns, "the simulated scenario proposes a network rule to a name"
    for emit in (emit_az.emit, emit_terraform.emit, emit_bicep.emit, emit_draft.emit):
        assert "needs DNS proxy on the firewall" in emit(recs)


def test_the_command_says_how_many_went_in_as_rules_and_how_many_as_comments(tmp_path):
    from reportdata import simulated_store

    db, logs = simulated_store(tmp_path)
    out = tmp_path / "plan.tf"
    result = CliRunner().invoke(app, ["recommend", "--db", str(db), "--policy", str(logs / "policy.json"),
                                      "--out", str(out)])  # the suffix picks Terraform
    assert result.exit_code == 1, result.output
    assert re.search(r"wrote (\d+) recommendation\(s\) as terraform to .*plan\.tf \((\d+) as rules; the (\d+) to "
                     r"investigate as comments\)", result.output), result.output
    assert hcl2.loads(out.read_text())["resource"]
