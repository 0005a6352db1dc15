"""The deployment examples in deploy/ parse, run the nightly command with flags it has, and keep the
promises docs/deployment.md makes (one run at a time, workload identity, a persistent store, the
report published even when the run finds something)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from egresslens.cli import app

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NIGHTLY_HELP = CliRunner().invoke(app, ["nightly", "--help"], terminal_width=200).output


def _flags(command: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]+)", command))


def test_every_flag_the_examples_pass_to_nightly_exists():
    texts = [p.read_text() for p in DEPLOY.rglob("*.y*ml")]
    used = set().union(*(_flags(t.split("nightly", 1)[1]) for t in texts if "nightly" in t))
    assert {"--out-dir", "--db", "--workspace-id", "--since"} <= used
    missing = {f for f in used if f not in NIGHTLY_HELP}
    assert missing == set()


def test_the_cronjob_never_overlaps_signs_in_with_workload_identity_and_keeps_the_store_on_a_volume():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "egresslens-nightly.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"ServiceAccount", "PersistentVolumeClaim", "CronJob"} <= set(kinds)
    assert "azure.workload.identity/client-id" in kinds["ServiceAccount"]["metadata"]["annotations"]
    cron = kinds["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    assert container["args"][0] == "nightly"
    claim = next(v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == claim["name"])
    assert any(a.startswith(f"--db={mount['mountPath']}/") for a in container["args"])


def test_the_github_workflow_is_scheduled_uses_oidc_and_publishes_the_report_whatever_the_exit_code():
    wf = yaml.safe_load((DEPLOY / "github-actions" / "egresslens-nightly.yml").read_text())
    assert wf[True]["schedule"][0]["cron"]  # `on:` parses as True in YAML 1.1
    assert wf["permissions"]["id-token"] == "write"
    steps = wf["jobs"]["report"]["steps"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "latest.html" in upload["with"]["path"]
    assert any(s.get("uses", "").startswith("azure/login") for s in steps)


def test_the_azure_devops_pipeline_is_scheduled_and_publishes_the_report():
    pipe = yaml.safe_load((DEPLOY / "azure-devops" / "azure-pipelines.yml").read_text())
    assert pipe["schedules"][0]["cron"] and pipe["trigger"] == "none"
    tasks = {s.get("task", "").split("@")[0]: s for s in pipe["steps"]}
    assert "egresslens nightly" in tasks["AzureCLI"]["inputs"]["inlineScript"]
    assert tasks["PublishPipelineArtifact"]["condition"] == "always()"
