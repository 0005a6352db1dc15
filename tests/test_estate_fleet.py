"""A three-firewall estate (two regions on child policies of one parent, one classic firewall, IP
Groups): proposals go to the policy each firewall uses, a need every child shares goes to the parent
once, and the same comes out of exports offline, out of Azure (a loopback ARM server) with
`--firewall-id`, and out of the snapshot the store keeps."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from egresslens.analyse import resolve_window
from egresslens.cli import app
from egresslens.estate import load_files
from egresslens.estate.arm import read_estate
from egresslens.recommend import recommend_fleet
from egresslens.simulate.estate import PARENT, sites
from egresslens.simulate import simulate_estate_to_dir
from egresslens.ingest import ingest_files
from egresslens.store import connect

from fakes.arm_server import ArmServer, FakeCredential

WEU, NEU, SEC = sites(3)
NET = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-net/providers/Microsoft.Network"


@pytest.fixture(scope="module")
def estate_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("estate")
    simulate_estate_to_dir(d, firewalls=3, hours=6, events_per_hour=3000, seed=11)
    con = connect(d / "s.duckdb")
    ingest_files(con, [d / "logs"])
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
    # one recommendation per id: an address of low support that resolves to a name already proposed joins that rule
    assert len({r.id for r in recs.items}) == len(recs.items)
    # the parent's broad ICMP rule is narrowed once, in the parent, to what both its firewalls use together
    (icmp,) = [r for r in recs.items if r.existing_rule and r.existing_rule["rule"] == "allow-icmp-hub"
               and r.policy == PARENT]
    assert icmp.kind == "narrow-rule" and icmp.firewalls == sorted([WEU.firewall_id, NEU.firewall_id])
    assert not any(r.existing_rule and r.existing_rule["rule"] == "allow-icmp-hub" and r.policy != PARENT
                   and r.firewall != SEC.firewall_id for r in recs.items)
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


def test_one_firewall_is_judged_on_its_own_traffic_only(estate_dir, tmp_path):
    """`recommend --firewall X` reads X's flows, as the fleet run's part for X does, never every firewall's."""
    con = connect(estate_dir / "s.duckdb", read_only=True)
    window = resolve_window(con, since="1d")
    estate = load_files(_files(estate_dir))
    one = recommend_fleet(con, window, estate, firewall=WEU.firewall_id)
    mine = con.execute("SELECT count(*) FROM flows WHERE firewall = ? AND time >= ? AND time < ?",
                       [WEU.firewall_id, window.start, window.end]).fetchall()[0][0]
    every = con.execute("SELECT count(*) FROM flows WHERE time >= ? AND time < ?", [window.start, window.end]).fetchall()[0][0]
    # the report scopes itself and then asks for that firewall's recommendations: the inner scope leaves
    # the outer one in place for the report's SNAT and DNS sections
    from egresslens import fleet

    with fleet.scoped(con, WEU.firewall_id):
        recommend_fleet(con, window, estate, firewall=WEU.firewall_id)
        after = con.execute("SELECT count(*) FROM flows WHERE time >= ? AND time < ?",
                            [window.start, window.end]).fetchall()[0][0]
    con.close()
    assert after == mine
    targets = set().union(*(_targets(r) for r in _adds(one)))
    assert "api.westeurope.partner-example.com" in targets
    assert not {f"api.{s.region}.partner-example.com" for s in (NEU, SEC)} & targets  # the others' own needs
    assert all(not (r.evidence.destinations and any(f"api.{s.region}." in d for s in (NEU, SEC)
                                                    for d in r.evidence.destinations)) for r in one.items)
    assert 0 < mine < every
    # the command line says the same
    db = tmp_path / "one.duckdb"
    db.write_bytes((estate_dir / "s.duckdb").read_bytes())
    res = CliRunner().invoke(app, ["recommend", "--db", str(db), "--since", "1d", "--firewall", WEU.name,
                                   "--format", "json", *sum((["--policy", str(f)] for f in _files(estate_dir)), [])])
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(res.stdout)
    text = json.dumps(doc["recommendations"])
    assert "api.westeurope.partner-example.com" in text
    assert not any(f"api.{s.region}.partner-example.com" in text for s in (NEU, SEC))


def test_and_n_more_items_follow_the_items_they_summarise_in_a_fleet(estate_dir):
    from egresslens.recommend import Config

    con = connect(estate_dir / "s.duckdb", read_only=True)
    window = resolve_window(con, since="1d")
    recs = recommend_fleet(con, window, load_files(_files(estate_dir)), config=Config(max_investigate=1))
    con.close()
    inv = [r for r in recs.items if r.kind == "investigate"]
    last = [r.id in recs.summaries for r in inv]
    assert any(last) and last == sorted(last)  # every itemised one, then every "and N more"
    assert all(" more " in r.title for r in inv if r.id in recs.summaries)
    assert len({r.firewall for r in inv if r.id in recs.summaries}) > 1


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


def test_report_opens_with_the_fleet_and_says_what_changed_in_the_policy(estate_dir, tmp_path):
    import copy

    from egresslens.estate import parse_documents, snapshots
    from egresslens.report import build_report, render

    db = tmp_path / "r.duckdb"
    db.write_bytes((estate_dir / "s.duckdb").read_bytes())
    docs = {f.name: json.loads(f.read_text()) for f in _files(estate_dir)}
    con = connect(db)
    window = resolve_window(con, since="1d")
    snapshots.save(con, parse_documents(docs.items()), "yesterday", now=window.end - (window.end - window.start) - timedelta(hours=6))
    edited = copy.deepcopy(docs)
    rcg = edited[f"rcg-{WEU.policy_name}.json"]
    rules = rcg[-1]["ruleCollections"][-1]["rules"]
    removed = rules.pop()["name"]
    rules[0]["targetFqdns"] = ["api.github.com", "status.github.com"]
    for g in edited["ip-groups.json"]:
        if g["name"] == "ipg-aks-nodes":
            g["ipAddresses"].append("10.99.0.0/22")
    snapshots.save(con, parse_documents(edited.items()), "today", now=window.end - timedelta(hours=1))
    estate, notes = snapshots.in_force(con, window.end)[0].estate, []
    # each window is judged on the policy as it was at its end: an earlier window on yesterday's read
    assert snapshots.in_force(con, window.end)[0].source == "today"
    older = snapshots.in_force(con, window.end - timedelta(hours=2))[0]
    assert older.source == "yesterday"
    assert removed in {r.name for r in older.estate.rules_for_firewall(WEU.firewall_id.lower())}
    assert removed not in {r.name for r in estate.rules_for_firewall(WEU.firewall_id.lower())}
    report = build_report(con, window, estate=estate, policy_notes=["rules from the snapshot"])
    con.close()
    ids = [s.id for s in report.sections]
    assert ids[0] == "fleet" and "policy" in ids and {f"firewall-{s.name}" for s in (WEU, NEU, SEC)} <= set(ids)
    fleet_table = report.section("fleet").data["firewalls"]
    assert fleet_table.height == 3 and set(fleet_table["section"]) == {f"#firewall-{s.name}" for s in (WEU, NEU, SEC)}
    assert fleet_table.filter(pl.col("firewall") == SEC.name)["policy"].item() == "classic rules"
    assert fleet_table.filter(pl.col("firewall") == WEU.name)["policy"].item() == f"{WEU.policy_name} < {PARENT}"
    assert all(v is not None and v > 0 for v in fleet_table["connections"])
    changes = report.section("policy").tables[0].frame
    kinds = {(r["change"], r["rule"]) for r in changes.iter_rows(named=True)}
    assert ("removed", removed) in kinds and ("edited", rules[0]["name"]) in kinds
    assert ("IP Group members", "ipgroup:ipg-aks-nodes") in kinds
    assert any("the policy changed since" in f.message for f in report.section("policy").findings)
    # the DNS section judges each firewall's DNS proxy on its own, links to its section, and names whose rows are whose
    dns = report.section("dns")
    per = next(t for t in dns.tables if t.title == "Per firewall").frame
    assert sorted(per["firewall"]) == sorted(s.name for s in (WEU, NEU, SEC))
    assert set(per["section"]) == {f"#firewall-{s.name}" for s in (WEU, NEU, SEC)}
    groups = next(t for t in dns.tables if t.title == "Per source group").frame
    assert set(groups["firewall"]) == set(per["firewall"])
    for site in (WEU, NEU, SEC):
        facts = report.section(f"firewall-{site.name}").facts
        q = per.filter(pl.col("firewall") == site.name)["queries"].item()
        assert any(f.startswith(f"DNS proxy: {q:,} queries") for f in facts), facts
    text = render(report, "html")
    assert 'href="#firewall-fw-westeurope"' in text and '<section id="firewall-fw-westeurope"' in text
    # --firewall: one firewall's report, its traffic only, against its own policy
    r = CliRunner().invoke(app, ["report", "--db", str(db), "--since", "1d", "--firewall", NEU.name, "--compare-to", "",
                                 "--format", "json", "--out", str(tmp_path / "neu.json")])
    assert r.exit_code in (0, 1, 7), r.output
    one = json.loads((tmp_path / "neu.json").read_text())["sections"]
    assert "fleet" not in one and not any(k.startswith("firewall-") for k in one)
    mine = {r["source_group"]: r["queries"] for r in one["dns"]["tables"]["Per source group"]["head"]}
    assert mine and mine == dict(groups.filter(pl.col("firewall") == NEU.name).select("source_group", "queries").iter_rows())


def test_snat_judges_each_firewall_against_its_own_capacity(tmp_path, monkeypatch):
    from datetime import datetime

    from fakes.arm_server import API_VERSION  # noqa: F401 - the server checks it

    rows, t0 = [], datetime(2026, 3, 1, 10, 0)
    for fw in ("fw-small", "fw-large"):
        for m in range(15):
            for i in range(1200):  # 1,200 new connections a minute to one destination, each holding a port 240 s
                rows.append({"time": t0 + timedelta(minutes=m, seconds=i % 60), "firewall": f"{NET}/azurefirewalls/{fw}".lower(),
                             "kind": "network", "protocol": "TCP", "source_ip": f"10.1.{i % 200}.{i % 250}",
                             "destination_ip": "203.0.113.80", "destination_port": 443, "action": "Allow"})
    db = tmp_path / "snat.duckdb"
    con = connect(db)
    con.register("f", pl.DataFrame(rows).to_arrow())
    con.execute("INSERT INTO flows BY NAME SELECT *, md5(random()::VARCHAR) AS event_id, 'structured' AS log_format FROM f")
    con.close()
    server = ArmServer().start()
    try:
        for fw, ips in (("fw-small", 1), ("fw-large", 8)):
            server.add({"id": f"{NET}/azureFirewalls/{fw}", "name": fw, "type": "Microsoft.Network/azureFirewalls",
                        "properties": {"ipConfigurations": [{"name": f"c{i}", "properties": {
                            "publicIPAddress": {"id": f"{NET}/publicIPAddresses/p{fw}{i}"}}} for i in range(ips)]}})
        import azure.identity

        monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())  # test-only
        r = CliRunner().invoke(app, ["snat", "--db", str(db), "--since", "1d", "--json", "--arm-endpoint", server.endpoint,
                                     "--instances", "2", "--nat-gateway-ips", "0",
                                     "--firewall-id", f"{NET}/azureFirewalls/fw-small",
                                     "--firewall-id", f"{NET}/azureFirewalls/fw-large"])
    finally:
        server.stop()
    out = json.loads(r.stdout)
    by = {f["firewall"].rsplit("/", 1)[-1]: f for f in out["firewalls"]}
    assert by["fw-small"]["config"]["public_ips"] == 1 and by["fw-large"]["config"]["public_ips"] == 8
    assert by["fw-small"]["findings"] and not by["fw-large"]["findings"]
    assert {f["firewall"].rsplit("/", 1)[-1] for f in by["fw-small"]["findings"]} == {"fw-small"}
    assert r.exit_code == 1  # critical on the small firewall
    # --firewall: one firewall's traffic only, by its name (the store holds ids), against the capacity given
    base = ["snat", "--db", str(db), "--since", "1d", "--json", "--instances", "2", "--nat-gateway-ips", "0"]
    one = CliRunner().invoke(app, base + ["--public-ips", "1", "--firewall", "fw-large"])
    found = json.loads(one.stdout)["findings"]
    assert one.exit_code == 1 and found and {f["firewall"].rsplit("/", 1)[-1] for f in found} == {"fw-large"}
    roomy = CliRunner().invoke(app, base + ["--public-ips", "8", "--firewall", "fw-large"])
    assert roomy.exit_code == 0 and not json.loads(roomy.stdout)["findings"]


def test_drilldown_breaks_a_subject_down_per_firewall(estate_dir):
    """Without --firewall, a name seen behind every firewall shows which ones, the traffic and denies behind
    each, and the rule that matched there (an inherited rule names the parent policy that holds it)."""
    runner = CliRunner()
    base = ["drilldown", "--db", str(estate_dir / "s.duckdb"), "--since", "1d",
            *[a for f in _files(estate_dir) for a in ("--policy", str(f))], "--json"]
    doc = json.loads(runner.invoke(app, base + ["mcr.microsoft.com"]).stdout)
    per = {r["firewall"]: r for r in doc["tables"]["Per firewall"]}
    assert set(per) == {s.name for s in (WEU, NEU, SEC)}
    con = connect(estate_dir / "s.duckdb", read_only=True)
    counts = dict(con.execute("SELECT regexp_extract(firewall, '[^/]+$'), count(*) FROM flows "
                              "WHERE destination_fqdn = 'mcr.microsoft.com' OR ends_with(destination_fqdn, '.mcr.microsoft.com') "
                              "GROUP BY 1").fetchall())
    con.close()
    assert {n: r["allowed"] + r["denied"] for n, r in per.items()} == counts
    assert per[WEU.name]["policy"] == WEU.policy_name and per[SEC.name]["policy"] == SEC.name
    assert f"(Allow) of {PARENT}:" in per[WEU.name]["rules_that_matched"]  # inherited from the parent
    assert f"of {PARENT}" not in per[SEC.name]["rules_that_matched"]  # the classic firewall's own rule
    assert any(f.startswith("seen behind 3 firewalls: ") for f in doc["facts"])

    denied = json.loads(runner.invoke(app, base + ["registry-1.docker.io"]).stdout)
    rows = denied["tables"]["Per firewall"]
    assert len(rows) == 3 and all(r["allowed"] == 0 and r["denied"] > 0 for r in rows)
    assert all(r["rules_that_matched"].startswith("no rule: default action (Deny)") for r in rows)
    touching = denied["tables"]["Recommendations that touch it"]
    assert {r["policy"] for r in touching} == {PARENT, SEC.name}  # the parent once, the classic firewall on its own

    one = json.loads(runner.invoke(app, base + ["--firewall", WEU.name, "mcr.microsoft.com"]).stdout)
    assert "Per firewall" not in one["tables"] and not any(f.startswith("seen behind") for f in one["facts"])


def test_the_drilldown_library_and_its_notebook_break_a_subject_down_per_firewall(estate_dir, tmp_path):
    """What the notebook imports: the breakdown per firewall from the store's policy snapshot, and `firewall`
    to look at one of them (the same names --firewall takes)."""
    import nbformat
    from nbclient import NotebookClient

    from egresslens.estate import parse_documents, snapshots
    from egresslens.report.drilldown import drilldown

    db = tmp_path / "s.duckdb"
    db.write_bytes((estate_dir / "s.duckdb").read_bytes())
    con = connect(db)
    window = resolve_window(con, since="1d")
    snapshots.save(con, parse_documents((f.name, json.loads(f.read_text())) for f in _files(estate_dir)), "exports",
                   now=window.end - timedelta(hours=1))
    estate = snapshots.in_force(con, window.end)[0].estate
    every = drilldown(con, window, "mcr.microsoft.com", estate=estate).frames["firewalls"]
    assert sorted(every["firewall"]) == sorted(s.name for s in (WEU, NEU, SEC))
    one = drilldown(con, window, "mcr.microsoft.com", estate=estate, firewall=WEU.name)
    weu = every.filter(pl.col("firewall") == WEU.name).drop("deny_share")
    assert one.frames["firewalls"].drop("deny_share").equals(weu)  # its own traffic, judged by its own rules
    assert int(one.frames["timeline"]["hits"].sum()) == weu["allowed"].item() + weu["denied"].item()
    with pytest.raises(ValueError, match="fw-nowhere"):
        drilldown(con, window, "mcr.microsoft.com", firewall="fw-nowhere")
    con.close()

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "drilldown-subject.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"db = {str(db)!r}\nsince = '1d'\nsubject = 'mcr.microsoft.com'"))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "seen behind 3 firewalls: " in printed
    (table,) = [c.outputs[0]["data"]["text/html"] for c in nb.cells
                if c.cell_type == "code" and c.source.startswith('drill.frames["firewalls"]')]
    assert all(f"<td>&quot;{s.name}&quot;</td>" in table for s in (WEU, NEU, SEC))
    assert f"<td>&quot;{WEU.policy_name}&quot;</td>" in table  # the policy that firewall evaluates


def test_the_nightly_job_reads_the_estate_from_azure_and_judges_each_firewall(estate_dir, monkeypatch, tmp_path):
    """What the CronJob does with Reader rights: every night the three firewalls' policies, parents and IP Groups
    from Azure, kept as a snapshot, a report per firewall; a night Azure refuses is said, on the last snapshot."""
    import azure.identity

    from egresslens import exitcodes

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())  # test-only
    server = ArmServer().start()
    try:
        _serve(server, estate_dir)
        db, out = tmp_path / "s.duckdb", tmp_path / "out"
        db.write_bytes((estate_dir / "s.duckdb").read_bytes())
        args = ["nightly", "--out", str(out), "--db", str(db), "--since", "1d", "--files", str(estate_dir / "logs"),
                "--arm-endpoint", server.endpoint, *[a for s in (WEU, NEU, SEC) for a in ("--firewall-id", s.arm_id)]]
        first = CliRunner().invoke(app, args)
        doc = json.loads((out / "latest.json").read_text())
        assert first.exit_code == doc["exit_code"] != exitcodes.REMOTE_ERROR, first.output
        fleet_rows = {r["firewall"]: r for r in doc["sections"]["fleet"]["tables"]["Firewalls"]["head"]}
        assert set(fleet_rows) == {WEU.name, NEU.name, SEC.name}
        assert fleet_rows[WEU.name]["policy"] == f"{WEU.policy_name} < {PARENT}"
        assert fleet_rows[SEC.name]["policy"] == "classic rules"
        weu = doc["sections"][f"firewall-{WEU.name}"]
        goes_to = {r["goes_to"] for r in weu["tables"]["Proposals"]["head"]}
        assert WEU.policy_name in goes_to and PARENT in goes_to and NEU.policy_name not in goes_to
        assert any(p.endswith(f"/azureFirewalls/{WEU.name}") for p in server.paths())  # read from Azure, not files

        server.status[WEU.arm_id.lower()] = 403  # the next night, the identity lost its Reader role on one firewall
        second = CliRunner().invoke(app, args)
        assert second.exit_code == exitcodes.REMOTE_ERROR, second.output
        doc2 = json.loads((out / "latest.json").read_text())
        assert any("reading the policy from Azure failed" in b and "Reader" in b for b in doc2["banner"]), doc2["banner"]
        rows2 = {r["firewall"]: r for r in doc2["sections"]["fleet"]["tables"]["Firewalls"]["head"]}
        assert rows2[WEU.name]["policy"] == fleet_rows[WEU.name]["policy"]  # judged on the last snapshot
        assert any("policy snapshot of" in f for f in doc2["sections"]["policy"]["facts"])
    finally:
        server.stop()
