"""JSON output is a function of the data: on tied counts every list has a complete sort key, so the
same records give the same bytes whatever order they were ingested in and however often it runs."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from egresslens.cli import app

FIREWALL = ("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000001/RESOURCEGROUPS/HUB/PROVIDERS/"
            "MICROSOFT.NETWORK/AZUREFIREWALLS/FW-HUB")
runner = CliRunner()


def _record(category: str, time: str, **properties) -> str:
    return json.dumps({"category": category, "time": time, "resourceId": FIREWALL, "properties": properties})


def tied_records() -> list[str]:
    """Forty names, forty sources and forty rules, each seen exactly as often as the others: every
    count, peak and hit total ties."""
    lines = []
    for i in range(40):
        name, source = f"svc{i:02d}.example.com", f"10.2.{i}.4"
        for hour in range(3):
            for minute in (10, 20):
                lines.append(_record("AZFWApplicationRule", f"2026-03-01T0{hour}:{minute}:00Z", Action="Deny",
                                     ActionReason="No rule matched", DestinationPort=443, Fqdn=name, Protocol="HTTPS",
                                     Policy="", Rule="", RuleCollection="", RuleCollectionGroup="", SourceIp=source,
                                     SourcePort=40000 + minute))
                lines.append(_record("AZFWDnsQuery", f"2026-03-01T0{hour}:{minute}:00Z", QueryName=f"{name}.",
                                     QueryType="A", ResponseCode="NXDOMAIN" if minute == 10 else "SERVFAIL",
                                     Protocol="udp", QueryClass="IN", RequestDurationSecs=0.01, SourceIp=source,
                                     SourcePort=5353, ErrorMessage="", ErrorNumber=0))
                lines.append(_record("AZFWDnsQuery", f"2026-03-01T0{hour}:{minute}:30Z",
                                     QueryName=f"{name}.corp.internal.", QueryType="A", ResponseCode="NXDOMAIN",
                                     Protocol="udp", QueryClass="IN", RequestDurationSecs=0.01, SourceIp=source,
                                     SourcePort=5353, ErrorMessage="", ErrorNumber=0))
        for k in range(4):
            lines.append(_record("AZFWApplicationRule", f"2026-03-01T02:30:0{k}Z", Action="Allow", ActionReason="",
                                 DestinationPort=443, Fqdn=name, Protocol="HTTPS", Policy="p",
                                 Rule=f"rule{i:02d}", RuleCollection="c", RuleCollectionGroup="g", SourceIp=source,
                                 SourcePort=41000 + k))
    return lines


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two stores of the same records, ingested in opposite orders."""
    lines = tied_records()
    out = []
    for order, records in (("forward", lines), ("shuffled", random.Random(3).sample(lines, len(lines)))):
        root = tmp_path_factory.mktemp(order)
        (root / "logs").mkdir()
        (root / "logs" / "PT1H.json").write_text("\n".join(records) + "\n")
        result = runner.invoke(app, ["ingest", "files", str(root / "logs"), "--db", str(root / "s.duckdb"), "--quiet"])
        assert result.exit_code == 0, result.output
        out.append(root / "s.duckdb")
    return out


@pytest.fixture(scope="module")
def snat_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("snat") / "snat.toml"
    path.write_text("hold_time = 86400\n[thresholds]\nwarning = 0.0005\ncritical = 0.001\n")
    return path


COMMANDS = {
    "recommend": lambda cfg: ["recommend", "--format", "json"],
    "dns": lambda cfg: ["dns", "--json"],
    "snat": lambda cfg: ["snat", "--json", "--config", str(cfg)],
}
TIED_LIST = {"recommend": "rule_scores", "dns": "failures", "snat": "findings"}


@pytest.mark.parametrize("command", COMMANDS)
def test_json_output_is_byte_identical_on_tied_data(stores, snat_config, command):
    outputs = []
    for db in stores:
        for _ in range(2):
            result = runner.invoke(app, [*COMMANDS[command](snat_config), "--db", str(db)])
            assert result.exit_code in (0, 1), result.output
            outputs.append(result.output)
    assert len(json.loads(outputs[0])[TIED_LIST[command]]) >= 40  # the tied rows are there
    assert len(set(outputs)) == 1, f"{command} --json differs between runs or ingest orders"
