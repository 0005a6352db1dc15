"""The deployment examples in deploy/ parse, run the nightly command with flags it has, and keep the
promises docs/deployment.md makes (one run at a time, workload identity, a persistent store, the
report published even when the run finds something)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from egresslens.cli import app

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NIGHTLY_HELP = CliRunner().invoke(app, ["nightly", "--help"], terminal_width=200).output


def _flags(command: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]+)", command))


def _nightly_commands(text: str) -> list[str]:
    """Every `egresslens nightly ...` command line of a template (with its continuation lines), or the
    CronJob's args after `- nightly`."""
    found = re.findall(r"egresslens nightly((?:[^\n]*\\\n)*[^\n]*)", text)
    return found or ([text.split("- nightly", 1)[1]] if "- nightly" in text else [])


def test_every_flag_the_examples_pass_to_nightly_exists():
    texts = [p.read_text() for p in DEPLOY.rglob("*.y*ml")]
    used = set().union(*(_flags(c) for t in texts for c in _nightly_commands(t)))
    assert {"--out", "--db", "--workspace-id", "--since"} <= used
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


# -- hardening ------------------------------------------------------------------------------------------

def _cronjob_pod():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "egresslens-nightly.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    return kinds, kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_the_cronjob_pod_meets_the_restricted_pod_security_standard_and_mounts_no_api_token():
    kinds, pod = _cronjob_pod()
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]["securityContext"]
    assert c["allowPrivilegeEscalation"] is False and c["capabilities"] == {"drop": ["ALL"]}
    assert c["readOnlyRootFilesystem"] is True and c["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPath" not in v for v in pod["volumes"])


def test_the_cronjobs_memory_budget_is_its_own_limit_and_its_scratch_space_is_bounded():
    _, pod = _cronjob_pod()
    c = pod["containers"][0]
    assert c["resources"]["limits"]["memory"] == "2Gi"  # the default budget: what the measured run fits in
    env = {e["name"]: e for e in c["env"]}
    assert env["EGRESSLENS_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"]
    assert env["EGRESSLENS_TEMP_DIR"]["value"].startswith(next(m["mountPath"] for m in c["volumeMounts"]
                                                               if m["name"] == "tmp") + "/")


def test_the_image_and_every_dependency_and_action_are_pinned():
    docker = (DEPLOY / "kubernetes" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\w.-]+@sha256:[0-9a-f]{64}$", docker, re.M)
    assert "--require-hashes" in docker and "requirements.lock" in docker and "--no-deps" in docker
    for path in DEPLOY.rglob("*.y*ml"):
        for action in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), (path.name, action)
    lock = (DEPLOY / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", lock, re.M))
    assert all(re.search(rf"^{re.escape(n)}=={re.escape(v)} \\\n    --hash=sha256:", lock, re.M) for n, v in pins.items())
    import tomllib

    from packaging.requirements import Requirement
    for dep in tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep.split("#")[0])
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins and req.specifier.contains(pins[name], prereleases=True), (dep, pins.get(name))


def test_the_cache_and_artifact_contents_are_said_where_they_are_set_up():
    for path in (DEPLOY / "github-actions" / "egresslens-nightly.yml", DEPLOY / "azure-devops" / "azure-pipelines.yml"):
        text = path.read_text()
        assert "holds the store" in text and "private" in text.lower(), path.name


def _ci_case(path: Path) -> str:
    """The exit-code mapping of a CI template: its `case` on the nightly's exit code, as a shell script."""
    text = path.read_text()
    start = text.index('case "$CODE" in' if "$CODE" in text else "case $code in")
    end = text.rindex("esac") + len("esac")
    return "\n".join(line.strip() for line in text[start:end].splitlines())


@pytest.mark.parametrize("template", ["github-actions/egresslens-nightly.yml", "azure-devops/azure-pipelines.yml"])
def test_the_ci_templates_never_read_a_failure_as_findings(template):
    script = _ci_case(DEPLOY / template)
    outcomes = {}
    for code in (0, 1, 7, 2, 3, 4, 6, 8, 9, 70, 130):
        proc = subprocess.run(["bash", "-c", script], env={"CODE": str(code), "code": str(code), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True)
        outcomes[code] = (proc.returncode, proc.stdout)
    assert outcomes[0][0] == 0 and outcomes[1][0] == 0 and "findings" in outcomes[1][1]
    assert "critical findings" in outcomes[7][1]
    for code in (2, 3, 4, 6, 8, 9, 70, 130):
        rc, out = outcomes[code]
        assert rc == code and "failed" in out and "findings" not in out, (code, out)
    assert "disk full" in outcomes[8][1] and "EGRESSLENS_MEMORY_LIMIT" in outcomes[9][1]
