"""Every KQL query EgressLens sends, analysed by Microsoft's own Kusto language service.

The queries are captured on the wire: `ingest loganalytics` runs against the loopback workspace in
every mode (raw and summary, structured and legacy tables, with and without a firewall filter, by
workspace and by resource), and each request's text is kept exactly as the client sent it. They are
analysed, in one Node process (`tests/kusto/check.js`), by `@kusto/language-service-next` (the
Kusto.Language parser and semantic analyser, installed by `make test` into `.kusto/` from the npm
registry) against the schema of every table they read, transcribed from Microsoft's table reference
(`tests/kusto/tables.json`, each table with its source). Any diagnostic of severity Error fails.

The same templates are analysed once more with their tables renamed, as an Azure Data Explorer database
holding the Log Analytics schema under other names would have them, both as rendered here and as
`ingest adx` sends them (captured at the loopback cluster, every mode, with and without a firewall); every parameter type is rendered
with awkward values (the hostile corpus included) and analysed; and deliberately broken queries prove
that the check fails: a misspelt column, an unknown function, a type mismatch, the `ResourceId` column
the AzureDiagnostics reference does not list, and the old `1e-06s` timespan literal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import unicodedata
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import polars as pl
import pytest
from fakes.adx_server import FakeAdx
from fakes.loganalytics_server import FakeCredential, FakeLogAnalytics, fixture_tables, legacy_fixture
from hostile import TEXTS

from egresslens import store
from egresslens.sources import kql
from conftest import run_loganalytics
from egresslens import ingest
from egresslens.sources.adx import AdxSource, AdxTarget
from egresslens.sources.loganalytics import RAW_TABLES, Settings, Target

REPO = Path(__file__).resolve().parent.parent
KUSTO_DIR = Path(os.environ.get("EGRESSLENS_KUSTO_DIR", REPO / ".kusto"))
PACKAGE = KUSTO_DIR / "node_modules" / "@kusto" / "language-service-next"
SCHEMAS = json.loads((Path(__file__).parent / "kusto" / "tables.json").read_text())["tables"]
WS = "11111111-2222-3333-4444-555555555555"
START = datetime(2025, 7, 1)
END = START + timedelta(hours=2)
FIREWALL = "/subscriptions/3f1c2a9e-7b4d-4e61-9a0c-5d2e8b7f4a13/resourcegroups/rg-hub-networking-weu/providers/microsoft.network/azurefirewalls/fw-hub-weu-01"
# Azure Data Explorer tables holding the Log Analytics schema under names of the estate's choosing
ADX_NAMES = {t: f"fw-{t.lower()}.v2" for t in SCHEMAS}


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the KQL parser check")
    pytest.skip(reason)


def _package() -> Path:
    if (PACKAGE / "package.json").exists():
        return PACKAGE
    npm = shutil.which("npm")
    if npm is None:
        _missing("npm is not installed: the Kusto language service comes from the npm registry")
    version = re.search(r"^KUSTO_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    KUSTO_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(KUSTO_DIR),
                           f"@kusto/language-service-next@{version}"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not (PACKAGE / "package.json").exists():
        pytest.fail(f"npm install @kusto/language-service-next failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return PACKAGE


# -- the queries, as the tool sends them ------------------------------------------------------------

def _empty_table(name: str) -> pl.DataFrame:
    """A table the simulator writes no rows to, with its reference columns (the fake serves them)."""
    types = {"string": pl.Utf8, "int": pl.Int64, "long": pl.Int64, "real": pl.Float64, "bool": pl.Boolean,
             "datetime": pl.Datetime("us")}
    cols = {c: types.get(t, pl.Utf8) for c, t in SCHEMAS[name]["columns"].items()}
    return pl.DataFrame(schema={**cols, "_Ingest": pl.Datetime("us")})


@lru_cache(maxsize=None)
def sent_queries() -> tuple[tuple[str, str], ...]:
    """(case, query text) of every request `ingest loganalytics` makes, in every mode."""
    structured = fixture_tables(hours=2, events_per_hour=300, start=START)
    for t in RAW_TABLES:
        if t != "AzureDiagnostics" and t not in structured:
            structured[t] = _empty_table(t)
    legacy = legacy_fixture(hours=2, events_per_hour=300, start=START)
    every = ",".join(t for t in RAW_TABLES if t != "AzureDiagnostics")
    runs = [  # (case, workspace tables, target, mode, tables)
        ("raw", structured, Target(workspace_id=WS), "raw", "auto"),
        ("raw-all", structured, Target(workspace_id=WS), "raw", every),
        ("raw-firewall", structured, Target(workspace_id=WS, firewall=FIREWALL), "raw", every),
        ("raw-firewall-auto", structured, Target(workspace_id=WS, firewall=FIREWALL), "raw", "auto"),
        ("raw-legacy", legacy, Target(workspace_id=WS), "raw", "auto"),
        ("raw-legacy-firewall", legacy, Target(workspace_id=WS, firewall=FIREWALL), "raw", "AzureDiagnostics"),
        ("raw-resource", structured, Target(resource_id=FIREWALL), "raw", "auto"),
        ("summary", structured, Target(workspace_id=WS), "summary", "auto"),
        ("summary-firewall", structured, Target(workspace_id=WS, firewall=FIREWALL), "summary", "auto"),
        ("summary-legacy", legacy, Target(workspace_id=WS), "summary", "auto"),
        ("summary-legacy-firewall", legacy, Target(workspace_id=WS, firewall=FIREWALL), "summary", "flows_legacy,dns_legacy"),
        ("summary-resource", {**structured, **legacy}, Target(resource_id=FIREWALL), "summary", "auto"),
    ]
    out: dict[str, str] = {}
    for case, tables, target, mode, chosen in runs:
        con = store.connect_memory()
        with FakeLogAnalytics(WS, tables=dict(tables)) as fake:
            run_loganalytics(con, FakeCredential(), target, start=START, end=END, now=END + timedelta(hours=1),
                             mode=mode, tables=chosen, endpoint=fake.endpoint, settings=Settings(backoff_base=0.001))
            for r in fake.requests:
                assert r.status == 200, (case, r.template, r.status)
                out.setdefault(f"{case}/{r.template}", r.query)  # one request per template and case
        con.close()
    return tuple(sorted(out.items()))


@lru_cache(maxsize=None)
def sent_adx_queries() -> tuple[tuple[str, str], ...]:
    """(case, query text) of every request `ingest adx` makes to a database whose tables have other names
    (`ADX_NAMES`), in every mode, captured at the loopback cluster."""
    structured = fixture_tables(hours=2, events_per_hour=300, start=START)
    for t in RAW_TABLES:
        if t != "AzureDiagnostics" and t not in structured:
            structured[t] = _empty_table(t)
    legacy = legacy_fixture(hours=2, events_per_hour=300, start=START)
    names = {t: ADX_NAMES[t] for t in RAW_TABLES}
    every = ",".join(t for t in RAW_TABLES if t != "AzureDiagnostics")
    runs = [  # (case, database tables, firewall, mode, tables)
        ("adx-raw", structured, "", "raw", "auto"),
        ("adx-raw-all", structured, "", "raw", every),
        ("adx-raw-firewall", structured, FIREWALL, "raw", every),
        ("adx-raw-legacy", legacy, "", "raw", "auto"),
        ("adx-raw-legacy-firewall", legacy, FIREWALL, "raw", "AzureDiagnostics"),
        ("adx-summary", structured, "", "summary", "auto"),
        ("adx-summary-firewall", structured, FIREWALL, "summary", "auto"),
        ("adx-summary-legacy", legacy, "", "summary", "auto"),
        ("adx-summary-legacy-firewall", legacy, FIREWALL, "summary", "flows_legacy,dns_legacy"),
    ]
    out: dict[str, str] = {}
    for case, tables, firewall, mode, chosen in runs:
        con = store.connect_memory()
        with FakeAdx("FirewallLogs", tables=dict(tables), mapping=names) as fake:
            source = AdxSource(FakeCredential(), AdxTarget(fake.endpoint, "FirewallLogs", firewall=firewall),
                               tables_map=names, start=START, end=END, now=END + timedelta(hours=1), mode=mode,
                               tables=chosen, settings=Settings(backoff_base=0.001))
            ingest.run(con, source)
            for r in fake.requests:
                assert r.status == 200, (case, r.template, r.status)
                out.setdefault(f"{case}/{r.template}", r.query)
        con.close()
    return tuple(sorted(out.items()))


def _renderings() -> dict[str, str]:
    """Every template rendered with its tables renamed (an Azure Data Explorer database)."""
    values = {"time_start": START, "time_end": END, "ingest_start": START, "ingest_end": END, "firewall": FIREWALL}
    out = {}
    for name in kql.template_names():
        t = kql.load(name)
        out[f"adx/{name}"] = t.render(tables=ADX_NAMES, **{p: values[p] for p, _ in t.params})
    return out


LITERALS = {  # parameter type -> values rendered by kql.literal
    "datetime": [START, datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)],
    "timespan": [timedelta(microseconds=1), timedelta(0), timedelta(days=-3, microseconds=7), timedelta(days=36500),
                 timedelta(hours=1)],
    "long": [0, -1, 2**63 - 1, -(2**63)],
    "int": [0, 2**31 - 1, -(2**31)],
    "real": [0.0, 1e-06, -2.5e300, 3.0, float("inf"), float("-inf")],
    "bool": [True, False],
    "string": ["", *TEXTS.values()],
}


def _hidden(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in "\n\r\t" for c in text)


def _literal_queries() -> dict[str, str]:
    out = {}
    for typ, vals in LITERALS.items():
        for i, v in enumerate(vals):
            try:
                lit = kql.literal(typ, v)
            except kql.KqlError:
                assert typ == "string" and _hidden(v), (typ, v)  # only hidden characters are refused
                continue
            out[f"literal/{typ}/{i}"] = f"declare query_parameters(x:{typ} = {lit});\nprint x"
    return out


def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _broken() -> dict[str, str]:
    """Queries the check must refuse: real queries with one fault each."""
    q = dict(sent_queries())
    flows, legacy = q["summary/summary_flows"], q["summary-legacy/summary_flows_legacy"]
    return {
        "broken/misspelt-column": _mutate(flows, "SourceIp,", "SourceIP,"),
        "broken/unknown-function": _mutate(flows, "tolower(", "tolowercase("),
        "broken/type-mismatch": _mutate(flows, "bin(TimeGenerated, 1h)", "bin(Fqdn, 1h)"),
        "broken/resourceid-on-azurediagnostics": _mutate(legacy, "_ResourceId =~ firewall", "ResourceId =~ firewall"),
        "broken/float-timespan-literal": "declare query_parameters(x:timespan = 1e-06s);\nprint x",
    }


@lru_cache(maxsize=None)
def diagnostics() -> dict[str, list[dict]]:
    """All queries analysed by the Kusto language service in one Node process: case -> diagnostics."""
    node = shutil.which("node")
    if node is None:
        _missing("Node.js is not installed: the Kusto language service runs on it")
    package = _package()
    workspace = {t: s["columns"] for t, s in SCHEMAS.items()}
    queries = [{"id": k, "database": "workspace", "text": v} for k, v in sent_queries()]
    queries += [{"id": k, "database": "adx", "text": v} for k, v in {**_renderings(), **dict(sent_adx_queries())}.items()]
    queries += [{"id": k, "database": "workspace", "text": v} for k, v in {**_literal_queries(), **_broken()}.items()]
    request = {"databases": {"workspace": workspace, "adx": {ADX_NAMES[t]: c for t, c in workspace.items()}},
               "queries": queries}
    done = subprocess.run([node, str(Path(__file__).parent / "kusto" / "check.js"), str(package)],
                          input=json.dumps(request), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["id"]: r["diagnostics"] for r in json.loads(done.stdout)}


def _errors(case: str) -> list[str]:
    return [f"{d['code']} at {d['start']}: {d['message']}" for d in diagnostics()[case] if d["severity"] == "Error"]


# -- the checks ------------------------------------------------------------------------------------

def test_every_template_is_sent_in_every_variant():
    sent = [k.split("/") for k, _ in sent_queries()]
    for name in kql.template_names():
        cases = {case for case, template in sent if template == name}
        # with and without a firewall filter (by resource, the text is the one without a filter)
        assert any("firewall" in c for c in cases) and any("firewall" not in c for c in cases), (name, cases)
    texts = dict(sent_queries())
    assert FIREWALL in texts["raw-firewall/raw_AZFWNetworkRule"]
    assert 'firewall:string = ""' in texts["raw/raw_AZFWNetworkRule"]


def test_every_query_sent_is_clean():
    bad = {case: _errors(case) for case, _ in sent_queries() if _errors(case)}
    assert not bad, json.dumps(bad, indent=1)


def test_every_query_sent_to_azure_data_explorer_is_clean():
    sent = dict(sent_adx_queries())
    for name in kql.template_names():
        cases = {k.split("/")[0] for k in sent if k.split("/")[1] == name}
        assert any("firewall" in c for c in cases) and any("firewall" not in c for c in cases), (name, cases)
    assert '["fw-azfwnetworkrule.v2"]' in sent["adx-raw/raw_AZFWNetworkRule"]
    bad = {case: _errors(case) for case in sent if _errors(case)}
    assert not bad, json.dumps(bad, indent=1)


def test_templates_run_against_renamed_tables():
    bad = {case: _errors(case) for case in _renderings() if _errors(case)}
    assert not bad, json.dumps(bad, indent=1)
    text = _renderings()["adx/summary_flows"]
    assert '["fw-azfwnetworkrule.v2"]' in text and "AZFWNetworkRule" not in text.split("declare")[1]


def test_every_parameter_literal_is_one_clean_literal():
    cases = _literal_queries()
    assert len(cases) >= sum(len(v) for k, v in LITERALS.items() if k != "string") + 20
    bad = {case: _errors(case) for case in cases if _errors(case)}
    assert not bad, json.dumps(bad, indent=1)


@pytest.mark.parametrize("case,code", [
    ("broken/misspelt-column", "KS142"),
    ("broken/unknown-function", "KS211"),
    ("broken/type-mismatch", "KS127"),
    ("broken/resourceid-on-azurediagnostics", "KS142"),
    ("broken/float-timespan-literal", "KS132"),
])
def test_the_check_refuses_broken_queries(case, code):
    errors = _errors(case)
    assert errors and any(e.startswith(code) for e in errors), (case, diagnostics()[case])


def test_schemas_name_their_source():
    for table, schema in SCHEMAS.items():
        assert schema["reference"].startswith("https://learn.microsoft.com/azure/azure-monitor/reference/tables/")
        assert {"TimeGenerated", "_ResourceId"} <= set(schema["columns"]), table
    assert "ResourceId" not in SCHEMAS["AzureDiagnostics"]["columns"]
    assert set(RAW_TABLES) <= set(SCHEMAS)


def test_timespan_and_real_literals_read_back_exactly():
    t = kql.parse_template("t", "// egresslens:template t\ndeclare query_parameters(a:timespan, b:real);\nprint a, b")
    for span, real in ((timedelta(microseconds=1), 1e-06), (timedelta(days=-3, microseconds=7), float("inf")),
                       (timedelta(hours=1), -2.5e300)):
        text = t.render(a=span, b=real)
        assert "e-06s" not in text
        assert kql.parse_rendered(text)[1] == {"a": span, "b": real}
