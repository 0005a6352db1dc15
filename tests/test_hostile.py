"""Every command and every output format over a store built from the shared hostile corpus
(tests/hostile.py): nothing comes out unescaped, nothing crashes, no rule is widened.

The corpus goes in where an attacker can put it: the FQDN of denied and allowed application
traffic, the rule, collection, group, policy and web-category names of allowed traffic, the DNS
query name and error message, and (in their own store) the source address.
"""

from __future__ import annotations

import csv
import html as _html
import io
import ipaddress
import json
import re
import shlex
import subprocess
from html.parser import HTMLParser

import hcl2
import pytest
from hostile import NEVER_PROPOSED, NON_IP_SOURCES, TEXTS, assert_no_raw_controls
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from egresslens import exitcodes
from egresslens.cli import app
from egresslens.escape import visible

FIREWALL = ("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000001/RESOURCEGROUPS/HUB/PROVIDERS/"
            "MICROSOFT.NETWORK/AZUREFIREWALLS/FW-HUB")
PUNYCODE = "punycode look-alike"
# The main store holds every text but the punycode look-alike: that one is still proposed until the
# look-alike check decodes IDNA, and has its own (expected to fail) cases below.
CORPUS = {name: text for name, text in TEXTS.items() if name != PUNYCODE}
RICH_MARKUP = [TEXTS["rich style"], TEXTS["rich link"], TEXTS["rich bad close"], TEXTS["rich emoji code"]]
WIDE = {"COLUMNS": "1000", "NO_COLOR": "1"}  # a wide terminal: table cells are not folded

RECOMMEND_FORMATS = ["markdown", "json", "az", "terraform", "bicep"]

runner = CliRunner()


def _record(category: str, time: str, **properties) -> str:
    return json.dumps({"category": category, "time": time, "resourceId": FIREWALL, "properties": properties})


def _app_rule(time: str, source: str, fqdn: str, *, action: str = "Deny", rule: str = "", port: int = 40000) -> str:
    return _record("AZFWApplicationRule", time, Action=action, DestinationPort=443, Fqdn=fqdn, Protocol="HTTPS",
                   ActionReason="" if action == "Allow" else "No rule matched. Proceeding with default action",
                   IsExplicitProxyRequest=False, IsTlsInspected=False, Policy=rule, Rule=rule, RuleCollection=rule,
                   RuleCollectionGroup=rule, SourceIp=source, SourcePort=port, TargetUrl="", WebCategory=rule)


def _dns(time: str, source: str, name: str, code: str, *, error: str = "") -> str:
    return _record("AZFWDnsQuery", time, QueryName=name + ".", QueryType="A", ResponseCode=code, Protocol="udp",
                   QueryClass="IN", QueryId=1, RequestDurationSecs=0.01, RequestSize=60, ResponseSize=100,
                   ResponseFlags="qr", SourceIp=source, SourcePort=5353, DnssecOkBit=False, EDNS0BufferSize=512,
                   ErrorMessage=error, ErrorNumber=2 if error else 0)


def hostile_records(texts: dict[str, str]) -> list[str]:
    """Per text: denied in three hours (a recommendation candidate), allowed six times in one minute
    under a rule named by it (rule scores, SNAT), queried through the DNS proxy (NXDOMAIN twice),
    named in an upstream DNS error, and describing a threat-intelligence hit. The threat hit is on a
    name and from a source of its own: a flagged name or source is kept out of every rule, and the
    corpus names must be kept out by validation, not by that flag."""
    lines = []
    for i, text in enumerate(texts.values()):
        source = f"10.1.{i}.5"
        for hour in range(3):
            lines += [_app_rule(f"2026-03-01T0{hour}:1{k}:00Z", source, text, port=40000 + k) for k in range(2)]
            lines.append(_dns(f"2026-03-01T0{hour}:05:00Z", source, text, "NXDOMAIN" if hour else "NOERROR"))
        lines.append(_dns("2026-03-01T02:06:00Z", source, text, "SERVFAIL", error=text))  # an upstream error
        lines.append(_record("AZFWThreatIntel", "2026-03-01T02:07:00Z", Protocol="HTTPS", SourceIp=f"10.9.{i}.5",
                             SourcePort=42000, DestinationIp="", DestinationPort=443, Fqdn=f"threat{i}.test",
                             TargetUrl=text, Action="Deny", ThreatDescription=text, IsTlsInspected=False))
        lines += [_app_rule(f"2026-03-01T02:30:0{k}Z", source, text, action="Allow", rule=text, port=41000 + k)
                  for k in range(6)]
    return lines


def build_store(tmp_path, lines: list[str]):
    """(store path, the ingest result) with `lines` ingested through the CLI."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "PT1H.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "s.duckdb"
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet"], env=WIDE)
    return db, result


# An ordinary dependency denied beside the corpus: it is proposed, so every emitter writes a rule and
# the checks on rules are not vacuous. Its owner zone imitates none of the corpus's (`x.example.net`
# beside many sources using `example.com` would be a swapped-suffix look-alike).
CONTROL = "api.partner-control.net"


def control_records() -> list[str]:
    return [_app_rule(f"2026-03-01T0{hour}:1{k}:00Z", "10.1.200.5", CONTROL, port=43000 + k)
            for hour in range(3) for k in range(2)]


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory):
    db, result = build_store(tmp_path_factory.mktemp("hostile"), hostile_records(CORPUS) + control_records())
    assert result.exit_code == exitcodes.OK, result.output
    return db


def run(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


def assert_clean(result, codes=(exitcodes.OK, exitcodes.FINDINGS)) -> str:
    """No traceback, an expected exit code, no raw control character; the output."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in codes, result.output[-2000:]
    assert_no_raw_controls(result.output)
    return result.output


def assert_markup_shown_as_text(output: str) -> None:
    """Rich markup from the logs is printed literally: not styled away, not turned into a link."""
    for text in RICH_MARKUP:
        assert text in output, f"{text!r} was interpreted as markup"


# -------------------------------------------------------------------- ingest


def test_ingest_prints_its_summary_plainly(tmp_path):
    lines = hostile_records(CORPUS)
    db, result = build_store(tmp_path, lines)
    out = assert_clean(result, (exitcodes.OK,))
    assert out.count("\n") == 1 and f"read {len(lines)} = stored {len(lines)}" in out
    again = assert_clean(run("ingest", "files", str(tmp_path / "logs"), "--db", str(db), "--json", "--force"), (exitcodes.OK,))
    summary = json.loads(again)
    assert summary["records_read"] == summary["stored"] + summary["duplicates"] + summary["quarantined"]


# -------------------------------------------------------------------- recommend


def _proposed_rules(db) -> list[dict]:
    doc = json.loads(assert_clean(run("recommend", "--db", str(db), "--format", "json")))
    return [r["rule"] for r in doc["recommendations"] if r.get("rule")]


def assert_no_widened_rule(rules: list[dict]) -> None:
    for rule in rules:
        sources = rule.get("source_addresses") or []
        assert sources or rule.get("source_ip_group"), f"rule {rule['name']} allows any source"
        for s in sources:
            net = ipaddress.ip_network(s, strict=False)  # "*", "any" or a name would raise
            assert net.prefixlen > 0, f"rule {rule['name']} allows {s}"
        for name in rule.get("target_fqdns", []) + rule.get("destination_fqdns", []):
            assert name not in NEVER_PROPOSED, f"{name!r} proposed in {rule['name']}"
            assert re.fullmatch(r"(\*\.)?[a-z0-9.-]+", name), f"{name!r} proposed in {rule['name']}"


def test_no_hostile_name_is_proposed_and_no_rule_is_widened(hostile_db):
    rules = _proposed_rules(hostile_db)
    assert [r["target_fqdns"] for r in rules] == [[CONTROL]]
    assert_no_widened_rule(rules)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def assert_safe_markdown(text: str) -> None:
    """Rendered as GFM, the log text adds no element, attribute, link, heading or table cell."""
    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(text)
    parser = _Tags()
    parser.feed(rendered)
    assert set(parser.tags) <= {"h1", "h2", "h3", "p", "ul", "li", "code", "strong", "blockquote", "table", "thead",
                                "tbody", "tr", "th", "td"}, set(parser.tags)
    assert not parser.attrs, parser.attrs
    assert "<h2>Injected heading" not in rendered
    for table in re.findall(r"<table>.*?</table>", rendered, re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", table, re.S)}
        assert len(widths) == 1, f"a table row has a different number of cells: {widths}"


def assert_safe_shell(text: str) -> None:
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    for line in text.splitlines():
        if line.startswith("az "):
            words = shlex.split(line)
            assert not any("`" in w or "$(" in w for w in words if not w.startswith("$")), line
            if "--source-addresses" in words:
                assert words[words.index("--source-addresses") + 1] not in ("*", "any"), line


def assert_safe_terraform(text: str) -> None:
    hcl2.loads(text)  # parses
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        assert not re.search(r"(?<!\$)\$\{|(?<!%)%\{", stripped), line
        assert not re.fullmatch(r"source_addresses\s*=\s*\[\s*\]", stripped), line


def assert_safe_bicep(text: str) -> None:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        assert not re.search(r"(?<!\\)\$\{", stripped), line
    assert not re.search(r"sourceAddresses: \[\s*\]", text)


@pytest.mark.parametrize("fmt", RECOMMEND_FORMATS)
def test_recommend_output_is_escaped_for_its_format(hostile_db, fmt):
    out = assert_clean(run("recommend", "--db", str(hostile_db), "--format", fmt))
    assert CONTROL in out
    {"markdown": assert_safe_markdown, "az": assert_safe_shell, "terraform": assert_safe_terraform,
     "bicep": assert_safe_bicep, "json": lambda t: json.loads(t)}[fmt](out)
    if fmt == "markdown":
        # every hostile rule name reaches the rule-score table, and only as text
        rendered = _html.unescape(MarkdownIt("commonmark").enable("table").render(out))
        for text in (TEXTS["pipe"], TEXTS["table row"], TEXTS["rich link"]):
            assert visible(text) in rendered


# -------------------------------------------------------------------- dns, snat, sql


def test_dns_table_shows_log_text_literally(hostile_db):
    out = assert_clean(run("dns", "--db", str(hostile_db), "--top", "1000"))
    assert_markup_shown_as_text(out)
    assert visible(TEXTS["ansi colour"]) in out


def test_dns_json_is_valid_ascii_json(hostile_db):
    out = assert_clean(run("dns", "--db", str(hostile_db), "--json"))
    assert out.isascii()
    names = {r["query_name"] for r in json.loads(out)["by_name"]}
    assert TEXTS["rich bad close"] in names


@pytest.fixture(scope="module")
def snat_config(tmp_path_factory):
    """Thresholds low enough that every hostile destination is a finding."""
    path = tmp_path_factory.mktemp("snat") / "snat.toml"
    path.write_text("hold_time = 86400\n[thresholds]\nwarning = 0.0005\ncritical = 0.001\n")
    return path


def test_snat_table_shows_destinations_and_fixes_literally(hostile_db, snat_config):
    out = assert_clean(run("snat", "--db", str(hostile_db), "--config", str(snat_config), "--hold-time", "24h"))
    assert "Destinations near SNAT exhaustion" in out
    assert_markup_shown_as_text(out)


def test_snat_json_is_valid_ascii_json(hostile_db, snat_config):
    out = assert_clean(run("snat", "--db", str(hostile_db), "--config", str(snat_config), "--json"))
    assert out.isascii()
    assert len(json.loads(out)["findings"]) == len(CORPUS)


SQL = f"SELECT destination_fqdn, rule, rule_collection FROM flows WHERE destination_fqdn <> '{CONTROL}' ORDER BY 1, 2"


def test_sql_table_shows_log_text_literally(hostile_db):
    out = assert_clean(run("sql", SQL, "--db", str(hostile_db)))
    assert_markup_shown_as_text(out)


def test_sql_csv_has_no_formula_and_one_record_per_row(hostile_db):
    out = assert_clean(run("sql", SQL, "--db", str(hostile_db), "--format", "csv"))
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) == 1 + 12 * len(CORPUS)
    for row in rows:
        assert len(row) == 3
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row


def test_sql_json_is_one_ascii_object_per_row(hostile_db):
    out = assert_clean(run("sql", SQL, "--db", str(hostile_db), "--format", "json"))
    assert out.isascii()
    values = {json.loads(line)["destination_fqdn"] for line in out.splitlines()}
    assert {text.lower() for text in CORPUS.values()} <= values  # FQDNs are stored lower-case


def test_errors_that_quote_input_are_one_visible_line(tmp_path):
    out = assert_clean(run("sql", "SELECT 1", "--db", str(tmp_path / "\x1b[31mno\nstore.duckdb")), (exitcodes.INPUT_ERROR,))
    assert out.count("\n") == 1


# -------------------------------------------------------------------- cases that depend on work elsewhere


def test_non_ip_sources_are_quarantined_and_never_reach_a_rule(tmp_path):
    lines = [_app_rule(f"2026-03-01T0{h}:10:00Z", source, "api.nonip.example.com") for source in NON_IP_SOURCES
             for h in range(3)]
    db, result = build_store(tmp_path, lines)
    assert_clean(result, (exitcodes.PARTIAL,))
    assert f"quarantined {len(lines)}" in result.output
    assert_no_widened_rule(_proposed_rules(db))
    az = assert_clean(run("recommend", "--db", str(db), "--format", "az"))
    assert "--source-addresses '*'" not in az


@pytest.fixture(scope="module")
def punycode_db(tmp_path_factory):
    db, result = build_store(tmp_path_factory.mktemp("punycode"), hostile_records({PUNYCODE: TEXTS[PUNYCODE]}))
    assert result.exit_code == exitcodes.OK, result.output
    return db


@pytest.mark.parametrize("fmt", RECOMMEND_FORMATS)
def test_punycode_look_alike_is_never_proposed(punycode_db, fmt):
    out = assert_clean(run("recommend", "--db", str(punycode_db), "--format", fmt))
    if fmt == "json":
        assert not [r for r in json.loads(out)["recommendations"] if r.get("rule")]
    elif fmt == "markdown":  # it may be named as something to investigate, never as a destination
        assert not [line for line in out.splitlines() if line.startswith("- destinations:") and "pypal" in line]
    else:  # named in a comment at most, never in a command or resource
        assert not [line for line in out.splitlines()
                    if "pypal" in line and not line.lstrip().startswith(("#", "//"))]


def without_libraries(html_text: str) -> str:
    """The page without inlined script libraries (over 100 kB): they are code, not log text, and
    their own string literals may hold control bytes."""
    parts = re.split(r"(<script[^>]*>.*?</script>)", html_text, flags=re.S)
    return "".join(p for p in parts if not (p.startswith("<script") and len(p) > 100_000))


@pytest.mark.parametrize("fmt", ["html", "markdown", "json"])
def test_report_is_escaped_for_its_format(hostile_db, tmp_path, fmt):
    out_file = tmp_path / f"report.{fmt}"
    assert_clean(run("report", "--db", str(hostile_db), "--format", fmt, "--out", str(out_file)),
                 (exitcodes.OK, exitcodes.FINDINGS, exitcodes.CRITICAL))
    text = out_file.read_text(encoding="utf-8")
    assert_no_raw_controls(without_libraries(text) if fmt == "html" else text)
    if fmt == "markdown":
        assert_safe_markdown(text)
    elif fmt == "json":
        json.loads(text)
    else:
        parser = _Tags()
        parser.feed(text)
        assert "img" not in parser.tags
        assert not [v for k, v in parser.attrs if k.startswith("on") or (v or "").startswith("javascript:")]
        assert TEXTS["html script"] not in text and "alert(1)</script>" not in text
