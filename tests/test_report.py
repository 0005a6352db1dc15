"""`egresslens report`: every section from a real store, the three formats, exit codes a scheduler can
alert on, hostile log content shown as text, and a month of rollups reported quickly and compactly."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hostile import TEXTS, assert_no_raw_controls
from reportdata import START, dns, flow, make_store, simulated_store, threat
from typer.testing import CliRunner

from egresslens import exitcodes, store
from egresslens.cli import app
from egresslens.escape import html
from egresslens.report import build_report, render, windows

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["freshness", "egress", "changes", "denied", "rules", "snat", "dns", "threats"]
# the simulated day is the same as the day before it: nothing changed, said in a sentence
EMPTY = {"changes-counts": "Nothing changed against the comparison window."}
CHARTS = ["freshness-hourly", "egress-actions", "egress-groups", "changes-counts", "denied-top", "dns-groups",
          "snat-timeline", "threats-hourly"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("report"))


def _report(db, *args):
    return runner.invoke(app, ["report", "--db", str(db), *args])


def test_report_writes_every_section_and_chart_in_one_html_file_with_a_json_summary_beside_it(simulated, tmp_path):
    db, logs = simulated
    out = tmp_path / "r" / "report.html"
    result = _report(db, "--since", "24h", "--compare-to", "24h", "--policy", str(logs / "policy.json"),
                     "--out", str(out))
    text = out.read_text(encoding="utf-8")
    for sid in SECTIONS + ["policy"]:  # a policy given: the snapshot it was kept as, and what changed
        assert f'<section id="{sid}"' in text and f'href="#{sid}"' in text, sid
    for cid in CHARTS + ["rules-scatter"]:
        assert f'id="fig-{cid}"' in text or cid in EMPTY, cid
    for cid, sentence in EMPTY.items():  # nothing to draw: a sentence in place of the chart, not empty axes
        assert f'data-empty-chart="{cid}">{sentence}' in text and f'id="fig-{cid}"' not in text
    assert "Plotly" in text and "<script src" not in _without_plotly(text) and "https://" not in _without_plotly(text)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert list(summary["sections"]) == SECTIONS[:5] + ["policy"] + SECTIONS[5:]
    assert summary["exit_code"] == result.exit_code == exitcodes.CRITICAL  # the simulation holds threat-intel hits
    assert summary["counts"]["critical"] >= 1
    assert any(f["section"] == "threats" for f in summary["findings"])
    denied = summary["sections"]["denied"]["tables"]["Top denied destinations"]["head"]
    assert denied and all("drilldown" in r for r in denied)
    assert "az network firewall policy rule-collection-group" in text  # a snippet ready to copy
    assert out.stat().st_size < 10_000_000


def test_markdown_and_json_formats_hold_the_same_sections_and_findings(simulated, tmp_path):
    db, _ = simulated
    md = _report(db, "--format", "markdown", "--out", str(tmp_path / "r.md"))
    js = _report(db, "--format", "json", "--out", str(tmp_path / "r.json"))
    assert md.exit_code == js.exit_code == exitcodes.CRITICAL
    text = (tmp_path / "r.md").read_text()
    for title in ("## Data freshness", "## Egress over time", "## What changed", "## Top denied destinations",
                  "## SNAT capacity", "## DNS health", "## Threat\\-intel and IDPS events"):
        assert title in text, title
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == "egresslens-report/1" and len(doc["findings"]) == sum(doc["counts"].values())


def test_bad_arguments_and_a_missing_store_exit_with_one_sentence(tmp_path, simulated):
    db, _ = simulated
    assert _report(db, "--format", "pdf").exit_code == exitcodes.USAGE
    assert _report(db, "--fail-on", "sometimes").exit_code == exitcodes.USAGE
    assert _report(db, "--since", "yesterday", "--out", str(tmp_path / "x.html")).exit_code == exitcodes.USAGE
    missing = runner.invoke(app, ["report", "--db", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == exitcodes.INPUT_ERROR and "Traceback" not in missing.output


def _exit(db, tmp_path, *args) -> int:
    return _report(db, "--out", str(tmp_path / "out.html"), "--since", "24h", "--compare-to", "24h", *args).exit_code


def test_quiet_allowed_traffic_exits_ok(tmp_path):
    day = START + timedelta(days=1)
    db = make_store(tmp_path / "s.duckdb", flow(START, "api.example.com", rule="allow-api", n=20)
                    + flow(day, "api.example.com", rule="allow-api", n=20))
    assert _exit(db, tmp_path, "--fail-on", "finding") == exitcodes.OK


def test_warnings_fail_only_with_fail_on_warning(tmp_path):
    day = START + timedelta(days=1)
    # a destination seen for the first time and denied: a warning, not a finding
    db = make_store(tmp_path / "s.duckdb", flow(START, "api.example.com", rule="allow-api", n=20)
                    + flow(day, "api.example.com", rule="allow-api", n=20) + flow(day, "new.example.org", "Deny", n=1))
    assert _exit(db, tmp_path) == exitcodes.OK
    assert _exit(db, tmp_path, "--fail-on", "warning") == exitcodes.FINDINGS


def test_a_dependency_denied_now_that_was_allowed_before_is_critical(tmp_path):
    day = START + timedelta(days=1)
    db = make_store(tmp_path / "s.duckdb", flow(START, "pkg.example.com", rule="allow-pkg", n=20)
                    + flow(day, "pkg.example.com", "Deny", n=20))
    assert _exit(db, tmp_path, "--fail-on", "critical") == exitcodes.CRITICAL
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["sections"]["changes"]["summary"]["denied_now_allowed_before"] == 1
    assert "pkg.example.com" in summary["findings"][0]["message"]


def test_a_threat_intel_hit_is_critical_even_when_only_criticals_fail(tmp_path):
    day = START + timedelta(days=1)
    db = make_store(tmp_path / "s.duckdb", flow(START, "api.example.com", rule="allow-api", n=5)
                    + flow(day, "api.example.com", rule="allow-api", n=5),
                    threats=threat(day, "c2.evil.example", "known C2 server"))
    assert _exit(db, tmp_path, "--fail-on", "critical") == exitcodes.CRITICAL


def test_a_report_without_a_comparison_window_says_so_and_flags_no_change(tmp_path):
    db = make_store(tmp_path / "s.duckdb", flow(START, "api.example.com", "Deny", n=5))
    assert _report(db, "--compare-to", "", "--out", str(tmp_path / "r.html")).exit_code in (exitcodes.OK, exitcodes.FINDINGS)
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["baseline"] is None and summary["sections"]["changes"]["findings"] == []


# -- hostile log content ---------------------------------------------------------------------------

MARKER = "<img src=x onerror=window.__egresslensPwned=1>"


def hostile_store(db: Path) -> Path:
    """Every corpus text as a denied and an allowed FQDN, a rule name, a DNS name and a threat description."""
    day = START + timedelta(days=1)
    texts = [*TEXTS.values(), MARKER]
    rows, dns_rows, threats = [], [], []
    for i, text in enumerate(texts):
        src = f"10.0.{i // 200}.{i % 200 + 2}"
        rows += flow(START, text, rule=text, source=src, n=2) + flow(day, text, "Deny", source=src, n=3)
        rows += flow(day, text, rule=text, source=src, n=2)
        dns_rows += dns(day, text, source=src, code="NXDOMAIN", n=2)
        threats += threat(day, text, text, source=src)
    return make_store(db, rows, dns_rows, threats)


class _Markup(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "main", "footer", "h1", "h2", "h3", "p",
                "br", "div", "b", "nav", "strong", "ol", "ul", "li", "a", "span", "section", "table", "thead",
                "tbody", "tr", "th", "td", "details", "summary", "pre", "code", "button", "script"}


def _without_plotly(text: str) -> str:
    start = text.index("<script nonce=")
    return text[:start]


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory):
    return hostile_store(tmp_path_factory.mktemp("hostile") / "s.duckdb")


def test_hostile_names_render_as_text_in_the_html_report(hostile_db, tmp_path):
    out = tmp_path / "r.html"
    result = _report(hostile_db, "--since", "24h", "--compare-to", "24h", "--out", str(out))
    assert result.exit_code == exitcodes.CRITICAL, result.output
    text = out.read_text(encoding="utf-8")
    page = _without_plotly(text)
    parser = _Markup()
    parser.feed(page)
    assert parser.tags <= ALLOWED_TAGS, parser.tags - ALLOWED_TAGS
    assert not [a for a, _ in parser.attrs if a.startswith("on")]
    assert all(v.startswith("#") for a, v in parser.attrs if a == "href")
    assert "<img" not in page and "</script><script>" not in page and "<!-- x -->" not in page
    assert_no_raw_controls(page, "HTML report")
    # the hostile names are there, as text: in the tables and in the chart data
    assert html(MARKER) in page and html(TEXTS["html script"]) in page
    scripts = [s for s in page.split('<script type="application/json"')[1:]]
    assert all("</script" not in s.split("</script>", 1)[0] for s in scripts)


def test_hostile_names_stay_inert_in_markdown_and_json(hostile_db, tmp_path):
    _report(hostile_db, "--since", "24h", "--format", "markdown", "--out", str(tmp_path / "r.md"))
    _report(hostile_db, "--since", "24h", "--format", "json", "--out", str(tmp_path / "r.json"))
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert_no_raw_controls(md, "Markdown report")
    outside_code = re.sub(r"(`+).*?\1", "", md)  # a code span shows its text literally
    assert "\n## Injected heading" not in md
    assert not re.search(r"(?<!\\)<(img|script|!--)", outside_code)  # markup only ever backslash-escaped
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.rstrip().endswith("|")
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert_no_raw_controls((tmp_path / "r.json").read_text(encoding="utf-8"), "JSON report")
    assert any(MARKER in f["message"] for f in doc["findings"])  # kept exactly, as JSON text


# -- speed and size --------------------------------------------------------------------------------

def _bench_build():
    spec = importlib.util.spec_from_file_location("bench_recommend", ROOT / "benchmarks" / "bench_recommend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


@pytest.mark.slow
def test_a_thirty_day_report_over_hourly_rollups_renders_in_under_ten_seconds_and_ten_megabytes(tmp_path):
    db = tmp_path / "month.duckdb"
    _bench_build()(db, 30, 1_500)  # 1.1M rollup rows, ~23M underlying events
    con = store.connect(db, read_only=True)
    try:
        t = time.perf_counter()
        window, baseline = windows(con, "30d", "7d")
        report = build_report(con, window, baseline=baseline)
        text = render(report, "html", report.exit_code())
        elapsed = time.perf_counter() - t
    finally:
        con.close()
    assert elapsed < 10, f"{elapsed:.1f} s ({report.timings})"
    assert len(text.encode()) < 10_000_000
    assert report.section("egress").summary["allowed"] > 1_000_000


# -- the demo and the drilldown --------------------------------------------------------------------

def test_the_demo_ends_by_writing_the_report_and_printing_its_path(tmp_path):
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--events-per-hour", "300"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("report: ") and str(tmp_path / "demo" / "report.html") in last
    assert (tmp_path / "demo" / "report.html").exists() and (tmp_path / "demo" / "report.json").exists()


@pytest.mark.parametrize("subject,kind", [("github.com", "fqdn"), ("10.244.3.17", "source"),
                                          ("apiudp", "rule"), ("20.103.218.77", "destination")])
def test_drilldown_writes_a_page_for_every_subject_kind(simulated, tmp_path, subject, kind):
    db, _ = simulated
    out = tmp_path / "d.html"
    result = runner.invoke(app, ["drilldown", subject, "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{kind} {subject}" in result.output
    text = out.read_text(encoding="utf-8")
    for cid in ("drill-timeline", "drill-peers", "drill-ports", "drill-dns", "drill-rules"):
        # a network rule or an address without names has no DNS history: said in a sentence
        assert f'id="fig-{cid}"' in text or (cid == "drill-dns" and 'data-empty-chart="drill-dns"' in text), cid
    # no destination of these reaches the SNAT warning level: a sentence, not an empty chart with made-up axes
    assert 'data-empty-chart="drill-snat">SNAT: no minute at or above the warning level' in text


def test_drilldown_of_a_subject_the_store_never_saw_exits_3_with_one_sentence(simulated, tmp_path):
    db, _ = simulated
    out = tmp_path / "d.html"
    result = runner.invoke(app, ["drilldown", "nosuch.example.com", "--db", str(db), "--out", str(out)])
    assert result.exit_code == exitcodes.INPUT_ERROR
    assert result.output.startswith("error: nothing about 'nosuch.example.com' in ") and result.output.count("\n") == 1
    assert not out.exists()
    as_json = runner.invoke(app, ["drilldown", "github.com", "--db", str(db), "--json"])
    doc = json.loads(as_json.stdout)
    assert as_json.exit_code == 0 and doc["kind"] == "fqdn" and doc["tables"]["Ports"]


def test_drilldown_subjects_match_names_whatever_their_case_or_root_dot(simulated, tmp_path):
    db, _ = simulated
    lines = []
    for subject in ("github.com", "GitHub.COM.", "GITHUB.com"):
        result = runner.invoke(app, ["drilldown", subject, "--db", str(db), "--out", str(tmp_path / "d.html")])
        assert result.exit_code == 0, result.output
        lines.append(result.output.split(": ", 1)[1].split(" events")[0].split()[-1])
    assert lines[0] != "0" and lines == [lines[0]] * 3, lines


def test_drilldown_of_a_hostile_name_shows_it_as_text(hostile_db, tmp_path):
    out = tmp_path / "d.html"
    result = runner.invoke(app, ["drilldown", MARKER, "--kind", "fqdn", "--db", str(hostile_db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = _without_plotly(out.read_text(encoding="utf-8"))
    assert "<img" not in page and html(MARKER) in page


def test_the_report_reads_plainly_ports_as_logged_actions_named_axes_with_titles(simulated, tmp_path):
    """Ports and ids without thousands separators, no `nan%`, no `None/None`, no group of all zeros, and
    every chart's axes titled."""
    db, logs = simulated
    out = tmp_path / "report.html"
    _report(db, "--since", "24h", "--compare-to", "24h", "--policy", str(logs / "policy.json"), "--out", str(out))
    text = out.read_text(encoding="utf-8")
    page = _without_plotly(text)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page)
    assert ">5432<" in page and not [c for c in cells if c in ("5,432", "8,443", "4,444")]  # ports as logged
    assert "nan%" not in page and "None/None" not in page and "NaN" not in page
    groups = json.loads(out.with_suffix(".json").read_text())["sections"]["egress"]["tables"]["Per source group"]
    assert groups["head"] and all(g["allowed"] + g["denied"] > 0 for g in groups["head"])  # no all-zero group
    figures = [json.loads(f) for f in re.findall(r'<script type="application/json" id="fig-[^"]+">(.*?)</script>',
                                                 text, re.S)]
    assert len(figures) >= 6
    for fig in figures:  # the value axis titled with its unit, and the other one too unless it lists names
        layout = fig.get("layout", {})
        names_on_y = any(d.get("orientation") == "h" for d in fig.get("data", []))
        for axis in ("xaxis",) if names_on_y else ("xaxis", "yaxis"):
            title = (layout.get(axis) or {}).get("title") or {}
            title = title.get("text") if isinstance(title, dict) else title
            assert title, (axis, fig.get("data", [{}])[0].get("type"))



def test_a_finding_counts_in_words_one_zone_two_zones():
    from egresslens.report.model import counted
    assert counted(1, "newly seen domain") == "1 newly seen domain"
    assert counted(2, "newly seen domain") == "2 newly seen domains"
    assert counted(0, "source") == "0 sources"
    assert counted(12_040, "threat-intel/IDPS event") == "12,040 threat-intel/IDPS events"
    assert counted(3, "policy", "policies") == "3 policies"
    assert counted(1, "rule change") == "1 rule change" and counted(2, "more destination") == "2 more destinations"


def test_within_a_severity_a_compromised_workload_and_threat_intelligence_come_first(tmp_path):
    from egresslens.report.model import CRITICAL, FINDING, Finding, urgency

    # the demo's day: a dependency newly denied (section `changes`) beside a compromised pod
    found = [Finding(CRITICAL, "changes", "registry.npmjs.org:443 is denied now"), Finding(FINDING, "snat", "SNAT warning"),
             Finding(CRITICAL, "snat", "SNAT critical"), Finding(CRITICAL, "threats", "120 threat-intel/IDPS events"),
             Finding(CRITICAL, "dns", "source 10.244.3.17 looks compromised")]
    assert [(f.severity, f.section) for f in sorted(found, key=urgency)] == [
        (CRITICAL, "dns"), (CRITICAL, "threats"), (CRITICAL, "changes"), (CRITICAL, "snat"), (FINDING, "snat")]
    # and so the report reads: a dependency newly denied and a threat-intel hit on one day, the hit first
    day = START + timedelta(days=1)
    db = make_store(tmp_path / "s.duckdb", flow(START, "pkg.example.com", rule="allow-pkg", n=20)
                    + flow(day, "pkg.example.com", "Deny", n=20), threats=threat(day, "c2.evil.example", "known C2 server"))
    assert _exit(db, tmp_path, "--fail-on", "critical") == exitcodes.CRITICAL
    findings = json.loads((tmp_path / "out.json").read_text())["findings"]
    # the source that reached the C2 name is compromised (dns), then the hit itself (threats), then the change
    assert [f["section"] for f in findings if f["severity"] == CRITICAL] == ["dns", "threats", "changes"]
    first_item = (tmp_path / "out.html").read_text(encoding="utf-8").split('<ul class="findings">', 1)[1].split("</li>")[0]
    assert "looks compromised" in first_item
