"""A three-firewall estate (two regions on child policies of one parent, one classic firewall, IP
Groups): proposals go to the policy each firewall uses, a need every child shares goes to the parent
once, and the same comes out of exports offline, out of Azure (a loopback ARM server) with
`--firewall-id`, and out of the snapshot the store keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egresslens.analyse import resolve_window
from egresslens.cli import app
from egresslens.estate import load_files
from egresslens.estate.arm import read_estate
from egresslens.recommend import recommend_fleet
from egresslens.simulate.estate import PARENT, sites
from egresslens.simulate import simulate_estate_to_dir
from egresslens.sources.files import ingest_paths
from egresslens.store import connect

from fakes.arm_server import ArmServer, FakeCredential

WEU, NEU, SEC = sites(3)


@pytest.fixture(scope="module")
def estate_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("estate")
    simulate_estate_to_dir(d, firewalls=3, hours=6, events_per_hour=3000, seed=11)
    con = connect(d / "s.duckdb")
    ingest_paths(con, [d / "logs"])
    con.close()
    return d


def _files(d: Path) -> list[Path]:
    return sorted((d / "estate").glob("*.json"))


def _adds(recs):
    return [r for r in recs.items if r.kind.startswith("add-")]


def _targets(r):
    return set(r.rule.target_fqdns + r.rule.fqdn_tags + r.rule.destination_addresses + r.rule.destination_fqdns)


def _picture(recs):
    return sorted((r.kind, r.policy, tuple(r.firewalls) or r.firewall, tuple(sorted(_targets(r))) if r.rule else (),
                   tuple((r.existing_rule or {}).get(k) for k in ("rule_collection_group", "rule"))) for r in recs.items)


def test_shared_needs_go_to_the_parent_once_and_the_rest_to_each_firewall(estate_dir):
    con = connect(estate_dir / "s.duckdb", read_only=True)
    window = resolve_window(con, since="1d")
    recs = recommend_fleet(con, window, load_files(_files(estate_dir)))
    con.close()
    adds = _adds(recs)
    shared = [r for r in adds if "registry-1.docker.io" in _targets(r)]
    by_policy = {r.policy: r for r in shared}
    # once in the parent for the two policy firewalls, and once for the classic firewall, which has no parent
    assert sorted(by_policy) == sorted([PARENT, SEC.name]) and len(shared) == 2
    assert by_policy[PARENT].firewalls == sorted([WEU.firewall_id, NEU.firewall_id])
    assert by_policy[PARENT].policy_id.endswith(f"/firewallPolicies/{PARENT}")
    assert by_policy[SEC.name].firewall == SEC.firewall_id and by_policy[SEC.name].policy_id.endswith("/azureFirewalls/fw-swedencentral")
    # each region's own partner API goes to its own child policy, and nowhere else
    for site in (WEU, NEU, SEC):
        mine = [r for r in adds if f"api.{site.region}.partner-example.com" in _targets(r)]
        assert len(mine) == 1 and mine[0].firewall == site.firewall_id
        assert mine[0].policy == (site.name if site.classic else site.policy_name)
    # no child keeps a name its parent now holds; the parent rule allows every child's observed subnets
    children = [r for r in adds if r.policy in (WEU.policy_name, NEU.policy_name)]
    assert not any(_targets(r) & _targets(by_policy[PARENT]) for r in children)
    src = set(by_policy[PARENT].rule.source_addresses)
    assert any(s.startswith("10.244.") for s in src) and any(s.startswith("10.224.") for s in src)
    assert {f["name"] for f in recs.firewalls} == {WEU.name, NEU.name, SEC.name}
    assert {f["name"]: f["parents"] for f in recs.firewalls}[WEU.name] == [PARENT]


def test_one_firewall_and_what_if_per_firewall(estate_dir):
    con = connect(estate_dir / "s.duckdb", read_only=True)
    window = resolve_window(con, since="1d")
    estate = load_files(_files(estate_dir))
    one = recommend_fleet(con, window, estate, firewall=WEU.firewall_id, what_if=True)
    con.close()
    assert {r.firewall for r in one.items} == {WEU.firewall_id}
    assert all(r.policy == WEU.policy_name for r in one.items if r.kind.startswith("add-"))
    assert all(r.what_if and r.what_if.get("replayed") for r in one.items if r.kind != "investigate")
    partner = next(r for r in _adds(one) if "api.westeurope.partner-example.com" in _targets(r))
    assert partner.what_if["deny_to_allow_hits"] > 0


def _serve(server: ArmServer, d: Path) -> None:
    """The estate's exports as ARM answers them: properties wrapped, each resource at its id."""
    def arm(doc):
        top = {k: doc[k] for k in ("id", "name", "type", "location") if k in doc}
        return {**top, "properties": {k: v for k, v in doc.items() if k not in top and k != "resourceGroup"}}
    for name in ("firewalls.json", "policies.json", "ip-groups.json"):
        for doc in json.loads((d / "estate" / name).read_text()):
            server.add(arm(doc))
    for f in (d / "estate").glob("rcg-*.json"):
        groups = json.loads(f.read_text())
        policy_id = groups[0]["id"].split("/ruleCollectionGroups/")[0]
        server.add_groups(policy_id, [arm(g) for g in groups])


def test_reading_from_azure_gives_what_the_exports_give_and_the_snapshot_keeps_it(estate_dir, monkeypatch, tmp_path):
    server = ArmServer(page_size=1).start()
    try:
        _serve(server, estate_dir)
        ids = [s.arm_id for s in (WEU, NEU, SEC)]
        remote = read_estate(ids, credential=FakeCredential(), endpoint=server.endpoint, retry_backoff_factor=0)
        con = connect(estate_dir / "s.duckdb", read_only=True)
        window = resolve_window(con, since="1d")
        from_azure = recommend_fleet(con, window, remote)
        from_files = recommend_fleet(con, window, load_files(_files(estate_dir)))
        con.close()
        assert _picture(from_azure) == _picture(from_files)

        import azure.identity

        monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())  # test-only
        db = tmp_path / "copy.duckdb"
        db.write_bytes((estate_dir / "s.duckdb").read_bytes())
        args = ["recommend", "--db", str(db), "--since", "1d", "--format", "json", "--arm-endpoint", server.endpoint]
        for i in ids:
            args += ["--firewall-id", i]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        assert any(x["policy"] == PARENT and len(x["firewalls"]) == 2 for x in doc["recommendations"])
        # the read was kept: without any policy option the same picture comes from the snapshot
        r2 = CliRunner().invoke(app, ["recommend", "--db", str(db), "--since", "1d", "--format", "json"])
        doc2 = json.loads(r2.stdout)
        assert any("policy snapshot of" in w for w in doc2["warnings"])
        assert [x["id"] for x in doc2["recommendations"]] == [x["id"] for x in doc["recommendations"]]
        r3 = CliRunner().invoke(app, ["recommend", "--db", str(db), "--since", "1d", "--firewall", "fw-northeurope",
                                      "--format", "draft"])
        assert r3.exit_code == 1 and "POLICY=fwp-northeurope" in r3.stdout and "fwp-westeurope" not in r3.stdout
        assert "az network firewall policy rule-collection-group draft create" in r3.stdout
        r4 = CliRunner().invoke(app, ["recommend", "--db", str(db), "--firewall", "fw-nowhere"])
        assert r4.exit_code == 2 and "fw-westeurope" in r4.output
    finally:
        server.stop()
