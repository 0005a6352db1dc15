"""The fast route (storage-archive records parsed straight into their table) gives exactly the rows,
rejects and event ids of the generic route, on every corpus, and takes the records it is meant for.

The fast route only guesses a record's category from its text; these tests feed it records built to
mislead that guess (category text inside a field, case variants, a second category key, legacy text
under a structured category, non-compact JSON, values of every odd type) and hold both routes to the
same result, row for row.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egresslens import normalise, store
from egresslens.stage import register_tabular
from egresslens.canonical import canon_table
from egresslens.schema import EVENT_TABLES
from egresslens.simulate import simulate_to_dir
from hostile import NON_IP_SOURCES, TEXTS

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = [line for line in (FIXTURES / "reference_records.jsonl").read_text().splitlines() if line.strip()]
FIREWALL = "/SUBSCRIPTIONS/0/RESOURCEGROUPS/HUB/PROVIDERS/MICROSOFT.NETWORK/AZUREFIREWALLS/FW"

APP = {"time": "2026-03-01T10:00:00.1234567Z", "resourceId": FIREWALL, "category": "AZFWApplicationRule",
       "properties": {"Protocol": "HTTPS", "SourceIp": "10.0.0.4", "SourcePort": 50000, "DestinationPort": 443,
                      "Fqdn": "api.example.com", "TargetUrl": "", "Action": "Allow", "Policy": "p",
                      "RuleCollectionGroup": "g", "RuleCollection": "c", "Rule": "r", "ActionReason": "",
                      "IsTlsInspected": False, "WebCategory": "", "IsExplicitProxyRequest": False}}
NET = {"time": "2026-03-01T10:00:01Z", "resourceId": FIREWALL, "category": "AZFWNetworkRule",
       "properties": {"Protocol": "TCP", "SourceIp": "10.0.0.5", "SourcePort": 40000, "DestinationIp": "20.1.2.3",
                      "DestinationPort": 8443, "Action": "Deny", "Policy": "", "RuleCollectionGroup": "",
                      "RuleCollection": "", "Rule": "", "ActionReason": "Default Action"}}
DNS = {"time": "2026-03-01T10:00:02+00:00", "resourceId": FIREWALL, "category": "AZFWDnsQuery",
       "properties": {"SourceIp": "10.0.0.6", "SourcePort": 53000, "QueryId": 7, "QueryType": "A", "QueryClass": "IN",
                      "QueryName": "api.example.com.", "Protocol": "udp", "RequestSize": 60, "DnssecOkBit": False,
                      "EDNS0BufferSize": 1232, "ResponseCode": "NOERROR", "ResponseFlags": "qr,rd,ra",
                      "ResponseSize": 120, "RequestDurationSecs": 0.002, "ErrorNumber": 0, "ErrorMessage": ""}}
IDPS = {"time": "2026-03-01T10:00:03Z", "resourceId": FIREWALL, "category": "AZFWIdpsSignature",
        "properties": {"Protocol": "TCP", "SourceIp": "10.0.0.7", "SourcePort": 41000, "DestinationIp": "20.1.2.4",
                       "DestinationPort": 443, "Action": "alert", "SignatureId": "2024897", "Category": "Trojan",
                       "Description": "ET MALWARE", "Severity": 1}}
THREAT = {"time": "2026-03-01T10:00:04Z", "resourceId": FIREWALL, "category": "AZFWThreatIntel",
          "properties": {"Protocol": "TCP", "SourceIp": "10.0.0.8", "SourcePort": 42000, "DestinationIp": "",
                         "DestinationPort": 443, "Fqdn": "bad.example", "TargetUrl": "", "Action": "Deny",
                         "ThreatDescription": "ThreatIntel: known bad", "IsTlsInspected": False}}
BASES = [APP, NET, DNS, IDPS, THREAT]


def both_routes(lines: list[str]) -> tuple[dict, dict, int]:
    """Normalise one batch both ways; return each route's rows per table (and rejects), and how many
    records the fast route left to the generic one."""
    con = store.connect_memory()
    try:
        con.register("batch", pa.table({
            "rid": list(range(1, len(lines) + 1)), "source": ["t"] * len(lines),
            "position": list(range(1, len(lines) + 1)), "record_index": pa.nulls(len(lines), pa.int32()),
            "raw": lines}))
        return _normalise_both_ways(con)
    finally:
        con.close()


def _normalise_both_ways(con: duckdb.DuckDBPyConnection, tabular: tuple | None = None) -> tuple[dict, dict, int]:
    """The registered batch through the fast route and through the generic one: each route's rows per
    table and rejects, and how many records the fast route left to the generic one."""
    results = []
    routes: dict = {}
    for fast in (True, False):
        built = normalise.normalise_batch(con, fast=fast, routes=routes if fast else None,
                                          tabular=tabular if fast else None)
        out = {t.name: con.execute(f"SELECT * FROM {canon_table(t)} ORDER BY rid").fetchall()
               for t in EVENT_TABLES if t.name in built}
        out["rejects"] = con.execute("SELECT rid, reason FROM stage_rejects ORDER BY rid").fetchall()
        results.append(out)
    return results[0], results[1], routes["generic"]


def _assert_same_rows(fast: dict, generic: dict) -> None:
    assert fast.keys() == generic.keys()
    for name in generic:
        assert fast[name] == generic[name], name


def assert_same(lines: list[str]) -> int:
    fast, generic, left = both_routes(lines)
    _assert_same_rows(fast, generic)
    return left


def test_a_simulated_storage_archive_takes_the_fast_route_whole_with_the_same_rows(tmp_path):
    simulate_to_dir(tmp_path, hours=2, events_per_hour=400, seed=3, incident=True)
    lines = [line for f in sorted(tmp_path.rglob("PT1H.json")) for line in f.read_text().splitlines()]
    assert len(lines) > 800
    assert assert_same(lines) == 0  # every record confirmed by the fast route


def test_a_simulated_legacy_archive_takes_the_fast_route_whole_with_the_same_rows(tmp_path):
    simulate_to_dir(tmp_path, hours=2, events_per_hour=400, seed=3, fmt="legacy", incident=True)
    lines = [line for f in sorted(tmp_path.rglob("PT1H.json")) for line in f.read_text().splitlines()]
    assert len(lines) > 800
    assert assert_same(lines) == 0


def test_published_records_give_the_same_rows_by_either_route():
    messages = json.loads((FIXTURES / "reference_lines.json").read_text())
    legacy = [json.dumps({"category": category, "operationName": "x", "properties": {"msg": msg},
                          "resourceId": FIREWALL, "time": "2025-11-26T14:16:47.1397390Z"}, separators=(",", ":"))
              for msg in messages for category in ("AzureFirewallNetworkRule", "AzureFirewallApplicationRule")]
    assert assert_same(REFERENCE + legacy) == 0


def test_hostile_legacy_text_gives_the_same_rows_by_either_route():
    lines = []
    for i, text in enumerate([*TEXTS.values(), *NON_IP_SOURCES]):
        for msg in (f"HTTPS request from 10.0.0.{i % 250}:5{i:04d} to {text}:443. Action: Allow. Rule Collection: c. Rule: {text}",
                    f"TCP request from {text}:1 to 10.0.0.2:2. Action: Deny. ",
                    f"DNS Request: 10.0.0.3:53000 - 7 A IN {text}. udp 60 false 1232 NOERROR qr,rd,ra 120 0.002s",
                    f'{text} "category":"AZFWNetworkRule"'):
            lines.append(json.dumps({"category": "AzureFirewallNetworkRule", "properties": {"msg": msg},
                                     "resourceId": FIREWALL, "time": "2026-03-01T10:00:00Z"}, separators=(",", ":")))
    # a structured category with legacy text, and a legacy category with structured fields
    lines.append(json.dumps(dict(NET, properties={"msg": "TCP request from 10.0.0.1:1 to 10.0.0.2:2. Action: Deny. "}),
                            separators=(",", ":")))
    lines.append(json.dumps(dict(NET, category="AzureFirewallNetworkRule"), separators=(",", ":")))
    assert_same(lines)


def test_category_text_inside_a_field_does_not_mislead_the_route():
    sneaky = [
        dict(NET, properties={**NET["properties"], "Rule": '"category":"AZFWDnsQuery"'}),
        dict(APP, properties={**APP["properties"], "Fqdn": 'x"category":"AZFWNetworkRule".example'}),
        # a nested object with a category key, before the real one
        {"extra": {"category": "AZFWNetworkRule"}, **DNS},
    ]
    assert assert_same([json.dumps(r, separators=(",", ":")) for r in sneaky]) == 1  # the nested key misleads the guess


def test_records_the_fast_route_must_not_confirm_go_the_generic_way():
    odd = [
        {k: v for k, v in APP.items() if k != "resourceId"},  # firewall named only by a case variant
        {**{k: v for k, v in APP.items() if k != "resourceId"}, "ResourceId": FIREWALL},
        dict(NET, properties={"msg": "TCP request from 10.0.0.1:1 to 10.0.0.2:2. Action: Deny."}),  # legacy text
        dict(APP, properties=None),
        [APP],
        "AZFWNetworkRule",
    ]
    lines = [json.dumps(r, separators=(",", ":")) for r in odd]
    lines += ['{"category":"AZFWNetworkRule","properties":{"Protocol":"TCP"',  # torn
              "\x00" + json.dumps(NET, separators=(",", ":")),  # marked as invalid UTF-8 by the reader
              json.dumps(NET, indent=1)]  # not compact: the guess fails, the generic route reads it
    assert assert_same(lines) == len(lines)


def test_odd_shapes_the_fast_route_may_take_give_the_same_rows():
    # a DNS-category envelope with network fields is a DNS record (refused by both for its missing name);
    # properties that are not an object read as an envelope of empty fields by both routes
    odd = [dict(NET, category="AZFWDnsQuery"), dict(APP, properties="not an object"), dict(APP, properties=[1, 2])]
    assert_same([json.dumps(r, separators=(",", ":")) for r in odd])


def test_one_torn_record_sends_its_table_the_generic_way_with_the_same_result():
    lines = [json.dumps(r, separators=(",", ":")) for r in BASES]
    lines.append('{"category":"AZFWApplicationRule","time":"2026-03-01T10:00:00Z","properties":{"Fqdn":"a.exa')
    assert assert_same(lines) >= 2


ODD_VALUES = st.one_of(
    st.sampled_from([*TEXTS.values(), *NON_IP_SOURCES, "65536", "-1", "443.0", "0", " 443", "1e3", "true", "FALSE",
                     "2026-13-45T99:00:00Z", "03/01/2026, 10:00:00.123 AM", "", "null"]),
    st.integers(-70000, 70000), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(BASES))),
                          st.dictionaries(st.sampled_from(sorted({k for b in BASES for k in b["properties"]}
                                                                 | {"time", "category", "resourceId", "msg", "Url"})),
                                          ODD_VALUES, max_size=4)),
                min_size=1, max_size=12))
def test_odd_values_in_any_field_give_the_same_rows_by_either_route(mutations):
    lines = []
    for base, changes in mutations:
        record = json.loads(json.dumps(BASES[base]))
        for key, value in changes.items():
            if key in ("time", "category", "resourceId"):
                record[key] = value
            else:
                record["properties"][key] = value
        lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
    assert_same(lines)


@pytest.mark.parametrize("name", sorted(normalise.FAST_CATEGORIES))
def test_each_fast_table_reads_every_field_its_canonical_statement_uses(name):
    # the fast parse is built from the statement's own f_<Field> references, so a field added to the
    # canonical SQL is parsed by the fast route too; a record using every field proves it end to end
    full = {**{k: v for b in BASES for k, v in b["properties"].items()}}
    lines = [json.dumps(dict(b, properties={**full, **b["properties"]}), separators=(",", ":"))
             for b in BASES if b["category"] in normalise.FAST_CATEGORIES[name]]
    assert assert_same(lines) == 0


# -- tabular rows (Log Analytics results, CSV exports) ------------------------------------------------

def tabular_both_routes(rows: pa.Table, log_table: str | None = None) -> tuple[dict, dict, int]:
    con = store.connect_memory()
    try:
        names = register_tabular(con, rows, source="t", log_table=log_table)
        return _normalise_both_ways(con, ("raw_rows", names))
    finally:
        con.close()


def assert_same_tabular(rows: pa.Table, log_table: str | None = None) -> int:
    fast, generic, left = tabular_both_routes(rows, log_table)
    _assert_same_rows(fast, generic)
    return left


def _csv(path: Path) -> pa.Table:
    con = duckdb.connect()
    try:  # as `ingest files` reads an export: every value as text, `[UTC]` header suffixes dropped
        table = con.sql("SELECT * FROM read_csv($p, all_varchar = true, header = true)", params={"p": str(path)}
                        ).to_arrow_table()
    finally:
        con.close()
    return table.rename_columns([n.split(" [", 1)[0].strip() for n in table.column_names])


def test_published_csv_exports_take_the_fast_route_with_the_same_rows():
    for path in sorted((FIXTURES / "real" / "logs" / "sentinel-asim").glob("*.csv")):
        assert assert_same_tabular(_csv(path)) == 0, path.name


def test_a_simulated_csv_export_takes_the_fast_route_with_the_same_rows(tmp_path):
    simulate_to_dir(tmp_path, hours=2, events_per_hour=300, seed=3, layout="csv", incident=True)
    for path in sorted(tmp_path.glob("*.csv")):
        table = _csv(path)
        assert assert_same_tabular(table) == 0, path.name
        # an export without its Type column, named by its file
        assert assert_same_tabular(table.drop_columns(["Type"]), log_table=path.stem) == 0, path.name


def test_tabular_rows_with_columns_the_generic_route_reads_differently_go_its_way():
    row = {"TimeGenerated": "2026-03-01T10:00:00Z", "Type": "AZFWNetworkRule", "_ResourceId": FIREWALL,
           "Protocol": "TCP", "SourceIp": "10.0.0.1", "SourcePort": "1", "DestinationIp": "10.0.0.2",
           "DestinationPort": "2", "Action": "Deny"}
    for extra in ({"category": "AZFWDnsQuery"}, {"time": "2026-03-02T00:00:00Z"}, {"msg_s": "TCP request from"},
                  {"properties": "{}"}, {"resourceId": "/other"}):
        rows = pa.table({k: [v] for k, v in {**row, **extra}.items()})
        assert assert_same_tabular(rows) == 1, extra


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(
    st.sampled_from(["TimeGenerated", "Type", "_ResourceId", "ResourceId", "Resource", "Category", "Protocol",
                     "SourceIp", "SourcePort", "DestinationIp", "DestinationPort", "Fqdn", "Action", "QueryName",
                     "ErrorNumber", "Severity", "IsTlsInspected", "TranslatedPort"]),
    st.one_of(st.none(), st.sampled_from(["", "AZFWNetworkRule", "AZFWIdpsSignature", "AZFWDnsQuery",
                                          "AzureDiagnostics", "AZFWNewThing", "10.0.0.1", "65536", "443",
                                          "2026-03-01T10:00:00Z", "03/01/2026, 10:00:00.123 AM", FIREWALL,
                                          *TEXTS.values(), *NON_IP_SOURCES])),
    min_size=1), min_size=1, max_size=8))
def test_odd_tabular_rows_give_the_same_rows_by_either_route(records):
    columns = sorted({k for r in records for k in r})
    rows = pa.table({c: pa.array([r.get(c) for r in records], pa.string()) for c in columns})
    assert_same_tabular(rows, log_table="AZFWNetworkRule")


def test_typed_query_results_give_the_same_rows_by_either_route():
    from datetime import datetime

    rows = pa.table({
        "TimeGenerated": pa.array([datetime(2026, 3, 1, 10, 0, 0, 123456), None], pa.timestamp("us")),
        "Type": ["AZFWApplicationRule", "AZFWDnsQuery"], "_ResourceId": [FIREWALL, FIREWALL],
        "Protocol": ["HTTPS", "udp"], "SourceIp": ["10.0.0.1", "10.0.0.2"], "SourcePort": pa.array([50000, 53000], pa.int64()),
        "DestinationPort": pa.array([443, None], pa.int32()), "Fqdn": ["a.example", None], "Action": ["Allow", None],
        "IsTlsInspected": pa.array([True, None], pa.bool_()), "QueryName": [None, "a.example."],
        "RequestDurationSecs": pa.array([None, 0.002], pa.float64()),
    })
    assert assert_same_tabular(rows) == 0


# -- whole archive blobs read by DuckDB (egresslens/sources/archive.py) -------------------------------

HIVE = ("resourceId=/SUBSCRIPTIONS/0/RESOURCEGROUPS/HUB/PROVIDERS/MICROSOFT.NETWORK/AZUREFIREWALLS/FW/"
        "y=2026/m=03/d=01/h={hour:02d}/m=00/PT1H.json")


def _store_contents(db: Path) -> dict:
    con = store.connect(db, read_only=True)
    try:
        out = {t.name: sorted(con.execute(f"SELECT * EXCLUDE (ingest_run_id) FROM {t.name}").fetchall(), key=repr)
               for t in EVENT_TABLES}
        out["quarantine"] = sorted(con.execute("SELECT source, position, raw, reason FROM quarantine").fetchall())
        out["run"] = con.execute("SELECT records_read, stored, duplicates, quarantined FROM ingest_runs").fetchall()
        return out
    finally:
        con.close()


def archive_and_lines(directory: Path, tmp_path: Path, monkeypatch) -> tuple[dict, dict, int]:
    """Ingest a directory as usual, with the blobs read whole staged first (not inserted straight from
    DuckDB's reader: the store must be the same) and with every file read line by line; return the usual
    and the line-by-line stores' contents and the files DuckDB read whole."""
    from egresslens import ingest
    from egresslens.sources import archive

    whole = []
    real = ingest.Pipeline.read_archive

    def spy(self, paths, route, until):
        taken = real(self, paths, route, until)
        whole.extend(paths[i] for i in taken)
        return taken

    monkeypatch.setattr(ingest.Pipeline, "read_archive", spy)
    route_of = archive.route_of
    by_archive, by_lines = _stores_by(directory, tmp_path, monkeypatch, archive, "route_of",
                                      (("archive", route_of), ("lines", lambda *a, **k: None)))
    taken, whole[:] = list(whole), []
    monkeypatch.setattr(archive, "route_of", route_of)
    # blobs read whole are inserted straight from DuckDB's reader; staged first, they store the same
    (by_staged,) = _stores_by(directory, tmp_path, monkeypatch, normalise, "whole_archive",
                              (("staged", lambda *a: None),))
    assert by_staged == by_archive and sorted(whole) == sorted(taken)
    return by_archive, by_lines, taken


@pytest.mark.parametrize("fmt", ["structured", "legacy"])
def test_blobs_inserted_straight_from_duckdb_leave_out_what_the_staged_insert_leaves_out(tmp_path, monkeypatch, fmt):
    """Rows inserted straight from DuckDB's reader are checked in their transaction: an event twice in one
    read (a blob delivered again under another name) or already stored (a run with --force) is deleted
    from what was inserted, as the staged insert never inserts it: the same rows, the same counts."""
    from egresslens import ingest
    from egresslens.load import Loader

    logs = tmp_path / "logs"
    simulate_to_dir(logs, hours=2, events_per_hour=300, seed=8, fmt=fmt)
    blob = sorted(logs.rglob("PT1H.json"))[0]
    again = blob.parent.parent / "m=30" / "PT1H.json"
    again.parent.mkdir()
    again.write_bytes(blob.read_bytes())
    straight, real = [], Loader.commit_whole

    def spy(self, *args):
        got = real(self, *args)
        straight.append(got)
        return got

    monkeypatch.setattr(Loader, "commit_whole", spy)
    stores = {}
    for label, whole_archive in (("straight", normalise.whole_archive), ("staged", lambda *a: None)):
        monkeypatch.setattr(normalise, "whole_archive", whole_archive)
        db = tmp_path / f"{label}.duckdb"
        con = store.connect(db)
        try:
            first, _, _ = ingest.ingest_files(con, [logs])
            forced, _, _ = ingest.ingest_files(con, [logs], force=True)
        finally:
            con.close()
        stores[label] = _store_contents(db)
        assert first.duplicates >= blob.read_text().count("\n") and first.balanced
        assert forced.stored == 0 and forced.duplicates == forced.read == first.read
    assert stores["straight"] == stores["staged"]
    assert straight and all(c is not None for c in straight)  # every read went straight in


def _stores_by(directory: Path, tmp_path: Path, monkeypatch, module, name: str, variants) -> list[dict]:
    """`directory` ingested once per (label, replacement of `module.name`): each store's contents."""
    from egresslens import ingest

    results = []
    for label, value in variants:
        monkeypatch.setattr(module, name, value)
        db = tmp_path / f"{label}.duckdb"
        con = store.connect(db)
        try:
            ingest.ingest_files(con, [directory])
        finally:
            con.close()
        results.append(_store_contents(db))
    return results


def test_a_simulated_archive_read_whole_by_duckdb_stores_what_the_line_reader_stores(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    simulate_to_dir(logs, hours=3, events_per_hour=500, seed=5, incident=True)
    whole, lines, taken = archive_and_lines(logs, tmp_path, monkeypatch)
    assert whole == lines
    blobs = len(list(logs.rglob("PT1H.json")))
    assert 0 < len(taken) <= blobs  # blobs with a record the simulator spoiled are read line by line


def test_blobs_with_anything_odd_fall_back_to_the_line_reader_with_the_same_result(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    compact = [json.dumps(r, separators=(",", ":")) for r in (APP, NET, dict(NET, time="2026-03-01T10:00:09Z"))]
    blobs = {
        0: compact,  # clean: read whole
        9: [json.dumps(r, separators=(",", ":")) for r in BASES],  # every table in one blob: line by line
        1: compact + [json.dumps(dict(NET, properties={**NET["properties"], "SourceIp": "10.0.0.0/8"}),
                                 separators=(",", ":"))],  # a refused record
        2: compact[:1] + [json.dumps(dict(APP, category="AZFWNewThing"), separators=(",", ":"))],  # unknown category
        3: compact[:1] + ['{"category":"AZFWNetworkRule","properties":{"Protocol":"TCP"'],  # torn line mid-file
        4: compact[:1] + ["", "   "] + compact[1:2],  # blank lines
        5: compact[:1] + [json.dumps(dict(NET, properties={"msg": "TCP request from 10.0.0.1:1 to 10.0.0.2:2. "
                                                           "Action: Deny. "}), separators=(",", ":"))],  # legacy text
        6: [json.dumps(dict(NET, properties={**NET["properties"], "Rule": text}), separators=(",", ":"),
                       ensure_ascii=False) for text in TEXTS.values()],  # hostile values, refused or not
    }
    for hour, lines in blobs.items():
        path = logs / HIVE.format(hour=hour)
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(lines) + "\n")
    crlf = logs / HIVE.format(hour=7)
    crlf.parent.mkdir(parents=True)
    crlf.write_bytes(("\r\n".join(compact) + "\r\n").encode())
    bad_utf8 = logs / HIVE.format(hour=8)
    bad_utf8.parent.mkdir(parents=True)
    bad_utf8.write_bytes(compact[0].encode() + b"\n" + compact[1].encode().replace(b"10.0.0.5", b"10.0.0.\xff") + b"\n")
    whole, lines, taken = archive_and_lines(logs, tmp_path, monkeypatch)
    assert whole == lines
    assert len(taken) == 4  # the clean blob, blank lines, hostile rule names (text, stored escaped on output), CRLF


def test_a_simulated_legacy_archive_read_whole_by_duckdb_stores_what_the_line_reader_stores(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    simulate_to_dir(logs, hours=3, events_per_hour=500, seed=5, fmt="legacy", incident=True)
    whole, lines, taken = archive_and_lines(logs, tmp_path, monkeypatch)
    assert whole == lines
    assert whole["flows"] and whole["dns_queries"] and whole["threats"]
    assert 0 < len(taken) <= len(list(logs.rglob("PT1H.json")))


def _legacy(msg: str, category: str = "AzureFirewallNetworkRule", **fields) -> str:
    return json.dumps({"category": category, "operationName": "AzureFirewallNetworkRuleLog", "properties": {"msg": msg},
                       "resourceId": FIREWALL, "time": "2026-03-01T10:00:00.0000000Z", **fields},
                      separators=(",", ":"), ensure_ascii=False)


def test_legacy_blobs_with_anything_odd_fall_back_to_the_line_reader_with_the_same_result(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    messages = json.loads((FIXTURES / "reference_lines.json").read_text())
    net = "TCP request from 10.0.0.5:40000 to 20.1.2.3:8443. Action: Deny. No rule matched. Proceeding with default action"
    dns = ("DNS Request: 10.0.0.6:53000 - 7 A IN api.example.com. udp 60 false 1232 NOERROR qr,rd,ra 120 "
           "0.002000s")
    clean = [_legacy(net), _legacy(dns, "AzureFirewallDnsProxy"), _legacy(net, time="2026-03-01T10:00:09Z")]
    blobs = {
        0: clean,  # clean, all three legacy categories' shapes: read whole
        1: [_legacy(m, c) for m in messages for c in ("AzureFirewallNetworkRule", "AzureFirewallApplicationRule")],
        2: clean + [_legacy(net.replace("10.0.0.5", "10.0.0.0/8"))],  # a refused record (not an address)
        3: clean[:1] + [_legacy("GARBAGE request text that no grammar reads")],  # unrecognised text
        4: clean[:1] + [_legacy(net, category="AzureFirewallSomethingNew")],  # not a legacy category it knows
        5: clean[:1] + [_legacy("")],  # a legacy record without its text
        6: clean[:1] + [json.dumps(APP, separators=(",", ":"))],  # a structured record among legacy ones
        7: clean[:1] + ['{"category":"AzureFirewallNetworkRule","properties":{"msg":"TCP'],  # torn line
        8: clean[:1] + [_legacy(net, properties={"msg": 5})],  # text of another type
        9: [_legacy(net.replace("Deny. No rule matched. Proceeding with default action", f"Allow. Rule Collection: c. "
                                f"Rule: {text}")) for text in TEXTS.values()
            if "\n" not in text and "\r" not in text],  # hostile rule names the grammar reads
        10: [_legacy(net.replace("Deny. No rule matched. Proceeding with default action", "Allow. Rule Collection: c. "
                                 "Rule: line\nbreak"))],  # text the grammar refuses (one line per message)
    }
    for hour, lines in blobs.items():
        path = logs / HIVE.format(hour=hour).replace("y=2026", "y=2025")
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole, lines, taken = archive_and_lines(logs, tmp_path, monkeypatch)
    assert whole == lines
    assert whole["quarantine"], "the odd records are quarantined with their reasons, by either reader"
    assert sorted(int(p.split("/h=")[1][:2]) for p in taken) == [0, 1, 9]


# -- CSV exports read whole by DuckDB (normalise.normalise_csv) ---------------------------------------

def _csv_whole_and_by_rows(directory: Path, tmp_path: Path, monkeypatch) -> tuple[dict, dict, list[str]]:
    """Ingest the exports in `directory` as usual, with every export that is read whole staged first
    (not inserted straight from DuckDB's reader), and with every export read row by row: the usual
    store's contents (the staged one's must be the same), the row-by-row store's, and the exports read
    whole as usual."""
    from egresslens import ingest

    whole, straight, direct, staged = [], [], ingest.Pipeline._csv_whole, normalise.normalise_csv

    def direct_spy(self, group):
        got = direct(self, group)
        if got is not None:
            names = [Path(b.records.path).name for b in group]
            whole.extend(names)
            straight.extend(names)
        return got

    def staged_spy(con, path, log_table):
        got = staged(con, path, log_table)
        if got is not None:
            whole.append(Path(path).name)
        return got

    def ingested(label: str, direct_route, staged_route) -> tuple[dict, list[str]]:
        whole.clear()
        monkeypatch.setattr(normalise, "normalise_csv", staged_route)
        (contents,) = _stores_by(directory, tmp_path, monkeypatch, ingest.Pipeline, "_csv_whole",
                                 ((label, direct_route),))
        return contents, sorted(whole)

    by_direct, taken = ingested("direct", direct_spy, staged_spy)
    by_staged, taken_staged = ingested("staged", lambda *a: None, staged_spy)
    by_rows, none_taken = ingested("rows", lambda *a: None, lambda *a: None)
    assert by_direct == by_staged and taken == taken_staged and not none_taken
    assert sorted(straight) == taken  # an export the staged route reads whole goes straight into the store
    return by_direct, by_rows, taken


def test_csv_exports_read_whole_by_duckdb_store_what_reading_them_row_by_row_stores(tmp_path, monkeypatch):
    exports = tmp_path / "exports"
    simulate_to_dir(exports, hours=2, events_per_hour=300, seed=3, layout="csv")
    (tmp_path / "exports" / "truth.json").unlink()
    (tmp_path / "exports" / "policy.json").unlink()
    network = (exports / "AZFWNetworkRule.csv").read_text().splitlines()
    # an export without its Type column (named after its table), one with a refused row, one with a
    # malformed line, one with a value spanning lines, one of two tables
    header = network[0].split(",")
    no_type = [",".join(v for v, h in zip(line.split(","), header) if h != "Type") for line in network[:20]]
    (exports / "untyped").mkdir()
    (exports / "untyped" / "AZFWNetworkRule.csv").write_text("\n".join(no_type) + "\n")
    refused = network[:10] + [network[10].replace("10.240.", "10.0.0.0/8 10.240.", 1)]
    (exports / "refused.csv").write_text("\n".join(refused) + "\n")
    (exports / "malformed.csv").write_text("\n".join(network[:10] + ["too,few"]) + "\n")
    spanning = network[:5] + [network[5].replace(",fw-policy,", ',"fw-\npolicy",', 1)]
    (exports / "spanning.csv").write_text("\n".join(spanning) + "\n")
    assert "\n" in spanning[-1]
    whole, rows, taken = _csv_whole_and_by_rows(exports, tmp_path, monkeypatch)
    assert whole == rows
    assert {Path(q[0]).name for q in whole["quarantine"]} >= {"refused.csv", "malformed.csv"}
    assert whole["flows"] and whole["dns_queries"]
    assert {"AZFWApplicationRule.csv", "AZFWDnsQuery.csv"} <= set(taken) and taken.count("AZFWNetworkRule.csv") == 2
    assert not {"refused.csv", "malformed.csv", "spanning.csv"} & set(taken)


def test_a_csv_export_larger_than_a_whole_read_is_still_read_whole_with_the_same_rows(tmp_path, monkeypatch):
    """A whole read bounds the archive blobs DuckDB reads in one statement; a CSV export of any size is read
    whole (its canonical rows spill, as the row-by-row route's table does), not row by row."""
    exports = tmp_path / "exports"
    simulate_to_dir(exports, hours=2, events_per_hour=300, seed=4, layout="csv")
    (exports / "truth.json").unlink()
    (exports / "policy.json").unlink()
    monkeypatch.setenv("EGRESSLENS_ARCHIVE_FILE_BYTES", str(32 << 10))
    big = exports / "AZFWApplicationRule.csv"
    assert big.stat().st_size > 32 << 10
    whole, rows, taken = _csv_whole_and_by_rows(exports, tmp_path, monkeypatch)
    assert whole == rows and whole["flows"]
    assert big.name in taken


def _csv_exports(tmp_path: Path, seed: int) -> Path:
    exports = tmp_path / "exports"
    simulate_to_dir(exports, hours=2, events_per_hour=300, seed=seed, layout="csv")
    (exports / "truth.json").unlink()
    (exports / "policy.json").unlink()
    return exports


def test_csv_exports_are_stored_together_in_one_transaction_with_the_rows_each_alone_stores(tmp_path, monkeypatch):
    """The exports of a run are gathered, up to a whole read's bytes, and go into the store in one
    transaction (one statement per table: no overlap with rows of another export to look for): the same
    rows and counts as each export read alone, in its own transaction."""
    from egresslens import ingest

    exports = _csv_exports(tmp_path, seed=6)
    names = sorted(p.name for p in exports.glob("*.csv"))
    groups, real = [], ingest.Pipeline._csv_whole

    def spy(self, group):
        groups.append(sorted(Path(b.records.path).name for b in group))
        return real(self, group)

    monkeypatch.setattr(ingest.Pipeline, "_csv_whole", spy)
    (together,) = _stores_by(exports, tmp_path, monkeypatch, ingest.Pipeline, "_csv_whole", (("together", spy),))
    assert groups == [names] and len(names) >= 5
    groups.clear()
    monkeypatch.setenv("EGRESSLENS_ARCHIVE_FILE_BYTES", "1")  # a whole read of one byte: one export at a time
    (alone,) = _stores_by(exports, tmp_path, monkeypatch, ingest.Pipeline, "_csv_whole", (("alone", spy),))
    assert sorted(groups) == [[n] for n in names]
    assert together == alone and together["flows"] and together["dns_queries"]


def test_an_export_gone_before_its_group_is_read_is_skipped_with_its_reason_and_the_others_are_stored(tmp_path,
                                                                                                      monkeypatch):
    from egresslens import ingest

    exports = _csv_exports(tmp_path, seed=7)
    gone = exports / "AZFWNetworkRule.csv"
    network_rows = len(gone.read_text().splitlines()) - 1
    real = ingest.Pipeline._flush_exports

    def remove_then_flush(self):
        gone.unlink(missing_ok=True)
        real(self)

    monkeypatch.setattr(ingest.Pipeline, "_flush_exports", remove_then_flush)
    con = store.connect(tmp_path / "store.duckdb")
    counts, results, _ = ingest.ingest_files(con, [exports])
    skipped = {Path(r.path).name: r.problem for r in results if r.fmt == "skipped"}
    assert list(skipped) == ["AZFWNetworkRule.csv"] and "No such file" in skipped["AZFWNetworkRule.csv"]
    assert network_rows and counts.read == counts.stored + counts.duplicates + counts.quarantined
    kinds = dict(con.execute("SELECT kind, count(*) FROM flows GROUP BY kind").fetchall())
    assert "network" not in kinds and kinds["application"] and counts.per_table["dns_queries"]
    assert con.execute("SELECT count(*) FROM ingest_sources WHERE source LIKE '%AZFWNetworkRule.csv'").fetchall() == [(0,)]
    con.close()


def test_a_statement_without_the_legacy_branch_gives_the_same_rows_and_types_from_structured_records(tmp_path):
    """Files read whole of one table's structured categories hold no legacy record: their statement leaves
    the legacy branch out (`legacy=False`), and gives what the full statement gives, column for column."""
    from egresslens.canonical import canonical_select

    exports = _csv_exports(tmp_path, seed=10)
    con = store.connect(tmp_path / "store.duckdb")
    normalise._empty_stage(con)
    tables = set()
    for path in sorted(exports.glob("*.csv")):
        table, source = normalise.csv_records(str(path), path.stem)
        full, structured = canonical_select(table, source), canonical_select(table, source, legacy=False)
        assert "UNION ALL BY NAME SELECT * FROM structured_" in full
        assert "UNION ALL BY NAME SELECT * FROM structured_" not in structured
        assert con.execute(f"DESCRIBE {structured}").fetchall() == con.execute(f"DESCRIBE {full}").fetchall()
        for a, b in ((full, structured), (structured, full)):
            assert con.execute(f"SELECT count(*) FROM (({a}) EXCEPT ALL ({b}))").fetchall() == [(0,)]
        tables.add(table)
    assert tables == {"flows", "dns_queries", "threats"}
    con.close()
