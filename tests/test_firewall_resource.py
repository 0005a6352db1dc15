"""`egresslens snat --firewall-id`: the firewall's public IPs, instances and NAT Gateway read from ARM.

A real `http.server` on 127.0.0.1 speaks the ARM JSON shapes for azureFirewalls, subnets,
natGateways and publicIPPrefixes, checks the bearer token, and can answer 401/403/404/503.
The credential is a fake object passed through the library API; the CLI path is tested with the
same server through `--arm-endpoint` and a credential injected by monkeypatching azure-identity's
`DefaultAzureCredential` in the test only.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest
import typer
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from typer.testing import CliRunner

from egresslens import exitcodes
from egresslens.commands import snat as snat_cmd
from egresslens.sources import firewall
from egresslens.store import connect

TOKEN = "fake-arm-token-0123456789"
SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg-egress"
NET = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network"
FW_ID = f"{NET}/azureFirewalls/fw-hub"
SUBNET_ID = f"{NET}/virtualNetworks/vnet-hub/subnets/AzureFirewallSubnet"
NATGW_ID = f"{NET}/natGateways/ng-egress"
PREFIX_ID = f"{NET}/publicIPPrefixes/pfx-egress"


class FakeCredential:
    def __init__(self, token: str = TOKEN, fail: bool = False) -> None:
        self.token, self.fail, self.scopes = token, fail, []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        if self.fail:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
        return AccessToken(self.token, int(datetime.now().timestamp()) + 3600)


def firewall_doc(ip_configs: int = 2, hub_ips: int | None = None, min_capacity: int | None = None,
                 nat: bool = False) -> dict:
    props: dict = {
        "provisioningState": "Succeeded",
        "sku": {"name": "AZFW_VNet", "tier": "Standard"},
        "ipConfigurations": [{
            "name": f"ipconfig{i}",
            "id": f"{FW_ID}/azureFirewallIpConfigurations/ipconfig{i}",
            "properties": {
                "privateIPAddress": "10.0.1.4" if i == 0 else None,
                "publicIPAddress": {"id": f"{NET}/publicIPAddresses/pip-fw-{i}"},
                "subnet": {"id": SUBNET_ID} if i == 0 else None,
            },
        } for i in range(ip_configs)],
        "firewallPolicy": {"id": f"{NET}/firewallPolicies/policy"},
    }
    for c in props["ipConfigurations"]:
        c["properties"] = {k: v for k, v in c["properties"].items() if v is not None}
    if hub_ips is not None:
        props["hubIPAddresses"] = {"publicIPs": {"count": hub_ips, "addresses": []},
                                   "privateIPAddress": "10.100.64.4"}
    if min_capacity is not None:
        props["autoscaleConfiguration"] = {"minCapacity": min_capacity, "maxCapacity": 10}
    return {"id": FW_ID, "name": "fw-hub", "type": "Microsoft.Network/azureFirewalls", "location": "westeurope",
            "properties": props, "_nat": nat}


class Arm:
    """State of the stand-in: resources by id, forced statuses, requests seen."""

    def __init__(self) -> None:
        self.resources: dict[str, dict] = {}
        self.status: dict[str, int] = {}  # id -> forced status
        self.flaky: dict[str, int] = {}  # id -> number of 503s before success
        self.requests: list[dict] = []

    def set_firewall(self, doc: dict) -> None:
        nat = doc.pop("_nat")
        self.resources[FW_ID.lower()] = doc
        subnet = {"id": SUBNET_ID, "name": "AzureFirewallSubnet",
                  "properties": {"addressPrefix": "10.0.1.0/26", "provisioningState": "Succeeded"}}
        if nat:
            subnet["properties"]["natGateway"] = {"id": NATGW_ID}
        self.resources[SUBNET_ID.lower()] = subnet
        self.resources[NATGW_ID.lower()] = {
            "id": NATGW_ID, "name": "ng-egress", "sku": {"name": "Standard"},
            "properties": {"idleTimeoutInMinutes": 4,
                           "publicIpAddresses": [{"id": f"{NET}/publicIPAddresses/pip-ng-{i}"} for i in range(2)],
                           "publicIpPrefixes": [{"id": PREFIX_ID}],
                           "subnets": [{"id": SUBNET_ID}]}}
        self.resources[PREFIX_ID.lower()] = {"id": PREFIX_ID, "name": "pfx-egress",
                                             "properties": {"prefixLength": 30, "publicIPAddressVersion": "IPv4"}}


@pytest.fixture
def arm():
    state = Arm()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: dict | None, headers: dict | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            rid = url.path.rstrip("/").lower()
            auth = self.headers.get("Authorization")
            state.requests.append({"path": url.path, "query": parse_qs(url.query), "auth": auth})
            if auth != f"Bearer {TOKEN}":
                return self._send(401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}},
                                  {"WWW-Authenticate": 'Bearer authorization_uri="https://login.example/x"'})
            if parse_qs(url.query).get("api-version") != [firewall.API_VERSION]:
                return self._send(400, {"error": {"code": "InvalidApiVersionParameter", "message": "api-version"}})
            if state.flaky.get(rid, 0) > 0:
                state.flaky[rid] -= 1
                return self._send(503, {"error": {"code": "ServiceUnavailable", "message": "try later"}},
                                  {"Retry-After": "0"})
            if rid in state.status:
                code = state.status[rid]
                return self._send(code, {"error": {"code": {403: "AuthorizationFailed", 404: "ResourceNotFound"}.get(code, "X"),
                                                   "message": "The client does not have authorization"}})
            doc = state.resources.get(rid)
            if doc is None:
                return self._send(404, {"error": {"code": "ResourceNotFound", "message": f"{url.path} not found"}})
            return self._send(200, doc)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _read(arm: Arm, cred=None, **kw) -> firewall.FirewallCapacity:
    return firewall.read_firewall(FW_ID, credential=cred or FakeCredential(), endpoint=arm.endpoint,
                                  retry_backoff_factor=0.0, **kw)


def test_plain_firewall_counts_ip_configurations_and_defaults_to_two_instances(arm):
    arm.set_firewall(firewall_doc(ip_configs=3))
    cred = FakeCredential()
    cap = _read(arm, cred)
    assert (cap.public_ips, cap.instances, cap.nat_gateway_ips, cap.nat_gateway_id) == (3, 2, 0, None)
    assert "3 ipConfigurations" in cap.public_ips_detail and cap.instances_detail.startswith("default 2")
    assert cred.scopes == [firewall.ARM_SCOPE]
    paths = [r["path"] for r in arm.requests]
    assert paths == [FW_ID, SUBNET_ID]
    assert all(r["auth"] == f"Bearer {TOKEN}" and r["query"]["api-version"] == ["2024-05-01"] for r in arm.requests)


def test_secured_hub_autoscale_and_nat_gateway(arm):
    arm.set_firewall(firewall_doc(ip_configs=1, hub_ips=4, min_capacity=3, nat=True))
    cap = _read(arm)
    assert cap.public_ips == 5 and "4 secured-hub public IPs" in cap.public_ips_detail
    assert cap.instances == 3 and "minCapacity" in cap.instances_detail
    # 2 public IPs + a /30 prefix (4 IPs)
    assert cap.nat_gateway_id == NATGW_ID and cap.nat_gateway_ips == 6
    assert "2 public IPs + 4 from 1 prefix" in cap.nat_gateway_detail
    assert [r["path"] for r in arm.requests] == [FW_ID, SUBNET_ID, NATGW_ID, PREFIX_ID]
    # skipping the NAT Gateway lookup reads the firewall only
    arm.requests.clear()
    cap = _read(arm, check_nat_gateway=False)
    assert cap.nat_gateway_ips == 0 and [r["path"] for r in arm.requests] == [FW_ID]


def test_transient_503_is_retried(arm):
    arm.set_firewall(firewall_doc())
    arm.flaky[FW_ID.lower()] = 2
    assert _read(arm).public_ips == 2
    assert [r["path"] for r in arm.requests].count(FW_ID) == 3


@pytest.mark.parametrize("status,needle", [(403, "Reader role"), (404, "not found (404)")])
def test_permission_and_missing_firewall_are_one_sentence(arm, status, needle):
    arm.set_firewall(firewall_doc())
    arm.status[FW_ID.lower()] = status
    with pytest.raises(firewall.FirewallResourceError) as e:
        _read(arm)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and TOKEN not in msg


def test_subnet_forbidden_names_reader_and_bad_token_is_401(arm, caplog):
    arm.set_firewall(firewall_doc(nat=True))
    arm.status[SUBNET_ID.lower()] = 403
    with pytest.raises(firewall.FirewallResourceError, match="firewall subnet.*Reader role"):
        _read(arm)
    with pytest.raises(firewall.FirewallResourceError, match=r"\(401\).*Reader role.*az login"):
        _read(arm, FakeCredential(token="wrong"))
    with pytest.raises(firewall.FirewallResourceError, match="No usable Azure credential"):
        _read(arm, FakeCredential(fail=True))
    assert TOKEN not in caplog.text


def test_malformed_id():
    with pytest.raises(ValueError, match="azureFirewalls/NAME"):
        firewall.parse_firewall_id("/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/natGateways/n")
    assert firewall.parse_firewall_id(FW_ID) == (SUB, RG, "fw-hub")
    assert firewall.scope_for("https://management.usgovcloudapi.net/") == "https://management.usgovcloudapi.net/.default"


# --- CLI ----------------------------------------------------------------------------------------

def _cli_store(tmp_path):
    db = tmp_path / "s.duckdb"
    con = connect(db)
    t0 = datetime(2025, 7, 1, 0, 0)
    flows = pl.DataFrame({
        "time": [t0 + timedelta(seconds=i) for i in range(600)], "firewall": ["fw-hub"] * 600,
        "kind": ["application"] * 600, "protocol": ["HTTPS"] * 600, "source_ip": ["10.244.1.5"] * 600,
        "destination_fqdn": ["api.example.com"] * 600, "destination_port": [443] * 600, "action": ["Allow"] * 600,
    }, schema_overrides={"time": pl.Datetime("us"), "destination_port": pl.Int32})
    con.register("f", flows.to_arrow())
    con.execute("INSERT INTO flows BY NAME SELECT *, md5(random()::VARCHAR) AS event_id, 'structured' AS log_format FROM f").fetchall()
    con.unregister("f")
    con.close()
    return db


def _runner(monkeypatch, cred):
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: cred)  # test-only injection
    app = typer.Typer()
    app.callback()(lambda: None)
    snat_cmd.register(app)
    return app, CliRunner()


def test_cli_reads_the_firewall_and_flags_override(arm, tmp_path, monkeypatch):
    arm.set_firewall(firewall_doc(ip_configs=1, hub_ips=2, min_capacity=4, nat=False))
    db = _cli_store(tmp_path)
    app, runner = _runner(monkeypatch, FakeCredential())
    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", FW_ID, "--arm-endpoint", arm.endpoint, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["config"]["public_ips"] == 3 and out["config"]["instances"] == 4
    src = out["capacity_sources"]
    assert src["public_ips"].startswith("firewall resource") and "minCapacity" in src["instances"]
    assert "no NAT Gateway" in src["nat_gateway_ips"]
    assert TOKEN not in r.output

    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", FW_ID, "--arm-endpoint", arm.endpoint,
                            "--public-ips", "7", "--nat-gateway-ips", "0"])
    assert r.exit_code == 0, r.output
    assert "public IPs: 7 (--public-ips)" in r.stdout and "instances: 4 (firewall resource" in r.stdout
    assert [q["path"] for q in arm.requests].count(SUBNET_ID) == 1  # the second run skipped the NAT lookup


def test_cli_nat_gateway_and_errors(arm, tmp_path, monkeypatch):
    arm.set_firewall(firewall_doc(nat=True))
    db = _cli_store(tmp_path)
    app, runner = _runner(monkeypatch, FakeCredential())
    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", FW_ID, "--arm-endpoint", arm.endpoint, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["config"]["nat_gateway_ips"] == 6 and out["capacity_ports_per_destination"] == 6 * 64_512
    assert "NAT Gateway ng-egress: 2 public IPs + 4" in out["capacity_sources"]["nat_gateway_ips"]

    arm.status[FW_ID.lower()] = 403
    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", FW_ID, "--arm-endpoint", arm.endpoint])
    assert r.exit_code == exitcodes.REMOTE_ERROR and "Reader role" in r.output and "Traceback" not in r.output
    del arm.status[FW_ID.lower()]

    app, runner = _runner(monkeypatch, FakeCredential(fail=True))
    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", FW_ID, "--arm-endpoint", arm.endpoint])
    assert r.exit_code == exitcodes.REMOTE_ERROR and "No usable Azure credential" in r.output

    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", "not-an-id"])
    assert r.exit_code == exitcodes.USAGE


def test_cli_config_file_beats_resource(arm, tmp_path, monkeypatch):
    arm.set_firewall(firewall_doc(ip_configs=2))
    db = _cli_store(tmp_path)
    cfg = tmp_path / "snat.toml"
    cfg.write_text("[snat]\npublic_ips = 9\n")
    app, runner = _runner(monkeypatch, FakeCredential())
    r = runner.invoke(app, ["snat", "--db", str(db), "--firewall-id", FW_ID, "--arm-endpoint", arm.endpoint,
                            "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["config"]["public_ips"] == 9 and out["capacity_sources"]["public_ips"].startswith("config file")
    assert out["capacity_sources"]["instances"].startswith("firewall resource fw-hub: default 2")
