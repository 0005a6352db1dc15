"""The escaping helpers, one per medium, each checked against the whole hostile corpus by parsing the
result the way that medium's consumer would (Rich, a CommonMark/GFM parser, an HTML parser, csv,
the shell, HCL, Bicep and KQL grammars)."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
from html.parser import HTMLParser

import hcl2
import pytest
from hostile import TEXTS, assert_no_raw_controls, raw_controls
from markdown_it import MarkdownIt
from rich.console import Console
from rich.table import Table

from egresslens import escape
from egresslens.sources import kql

CASES = pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))


def test_the_corpus_itself_is_hostile():
    """Guard against a corpus that stops exercising anything."""
    joined = "".join(TEXTS.values())
    assert raw_controls(joined)
    for needle in ("[bold", "\x1b", "|", "\n", "</script>", "${", "%{", "xn--", "=cmd", "\u202e"):
        assert needle in joined


@CASES
def test_visible_leaves_no_raw_control_character_and_keeps_printable_text(text):
    out = escape.visible(text)
    assert_no_raw_controls(out)
    printable = "".join(ch for ch in text if ch.isprintable())
    assert re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[nrt])", "", out) == printable.replace("\\", "")\
        or printable in out or all(part in out for part in re.split(r"[^\x20-\x7e]", text) if part)


def _rich(markup: str) -> tuple[str, str]:
    """(plain text, ANSI output) of printing a markup string to a colour terminal."""
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=500,
                      legacy_windows=False, highlight=False)
    console.print(markup, soft_wrap=True)
    ansi = console.file.getvalue()
    return re.sub(r"\x1b\[[0-9;]*m", "", ansi).rstrip("\n"), ansi


@CASES
def test_terminal_markup_is_shown_as_text_never_styled_or_linked(text):
    plain, ansi = _rich(escape.terminal(text))
    shown = escape.visible(text)
    assert plain == (shown[:-1] + "\\x5c" if shown.endswith("\\") else shown)
    wrapped, _ = _rich(f"[red]{escape.terminal(text)}[/red] after")
    assert wrapped == plain + " after"
    assert "\x1b]8;" not in ansi  # no hyperlink
    assert not re.search(r"\x1b\[(1|31|4)m", ansi)  # no bold / red / underline from the log text


@CASES
def test_terminal_text_in_a_table_cell_is_shown_as_text(text):
    console = Console(file=io.StringIO(), force_terminal=False, width=1000)
    table = Table("value")
    table.add_row(escape.terminal(text))
    console.print(table)
    out = console.file.getvalue()
    assert escape.visible(text)[:40] in out.replace("\n", "").replace("│", "")
    assert_no_raw_controls(out)


@CASES
def test_markdown_text_renders_literally_on_one_line(text):
    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    rendered = md.render(f"before {escape.markdown(text)} after")
    assert rendered.startswith("<p>") and rendered.count("<p>") == 1
    tags = set(re.findall(r"</?([a-z0-9]+)", rendered))
    assert tags == {"p"}, f"markup from log text: {tags}"
    body = rendered[3:-5]
    import html as _html
    assert _html.unescape(body) == f"before {escape.visible(text)} after"


@CASES
def test_markdown_in_a_table_cell_keeps_the_table_shape(text):
    md = MarkdownIt("commonmark").enable("table")
    for cell in (escape.markdown(text), escape.markdown_code(text, in_table=True)):
        rendered = md.render(f"| a | b |\n|---|---|\n| {cell} | x |\n")
        assert rendered.count("<td>") == 2 and rendered.count("<tr>") == 2


@CASES
def test_markdown_code_span_shows_the_text_exactly(text):
    rendered = MarkdownIt("commonmark").render(escape.markdown_code(text))
    m = re.fullmatch(r"<p><code>(.*)</code></p>\n", rendered, re.S)
    assert m, rendered
    import html as _html
    assert _html.unescape(m.group(1)).strip() == escape.visible(text).strip()


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_endtag(self, tag):
        self.tags.append("/" + tag)

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.tags.append("!--")


@CASES
def test_html_text_and_attributes_carry_no_markup(text):
    p = _Collect()
    p.feed(f'<span title="{escape.html(text)}">{escape.html(text)}</span>')
    p.close()
    assert p.tags == ["span", "/span"]
    assert p.attrs == [("title", escape.visible(text))]
    assert "".join(p.text) == escape.visible(text)


@CASES
def test_json_in_a_script_element_cannot_close_it(text):
    doc = {"name": text, "nested": [text]}
    p = _Collect()
    p.feed(f"<script>var d = {escape.script_json(doc)};</script><p>after</p>")
    assert p.tags == ["script", "/script", "p", "/p"]
    assert json.loads(escape.script_json(doc)) == doc


@CASES
def test_csv_cells_round_trip_and_never_start_a_formula(text):
    buf = io.StringIO()
    csv.writer(buf).writerow([escape.csv_cell(text), escape.csv_cell(3), escape.csv_cell(None)])
    row = next(csv.reader(io.StringIO(buf.getvalue())))
    assert len(row) == 3
    assert not row[0].startswith(("=", "+", "-", "@"))
    assert row[0].lstrip("'") == escape.visible(text)
    assert row[1] == "3"
    assert_no_raw_controls(buf.getvalue().rstrip("\r\n"))


@CASES
def test_shell_word_is_one_argument_and_runs_nothing(text):
    word = escape.shell(text)
    assert shlex.split(word) == [escape.visible(text)]
    out = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, text=True, check=True)
    assert out.stdout == escape.visible(text)


@CASES
def test_comments_are_one_line(text):
    assert "\n" not in escape.comment(text) and escape.comment(text, "//").startswith("// ")


def _hcl_unescape(literal: str) -> str:
    body = literal[1:-1]
    assert "${" not in body and "%{" not in body
    body = re.sub(r'\\(u[0-9a-f]{4}|U[0-9a-f]{8}|[\\"nrt])',
                  lambda m: {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}.get(m.group(1))
                  or chr(int(m.group(1)[1:], 16)), body)
    return body


@CASES
def test_hcl_strings_parse_and_hold_no_template(text):
    literal = escape.hcl_string(text)
    parsed = hcl2.loads(f"x = {literal}\n")
    assert parsed["x"] == literal  # one string token, nothing interpolated
    assert _hcl_unescape(literal) == text
    assert_no_raw_controls(literal)


def _bicep_unescape(literal: str) -> str:
    assert literal[0] == literal[-1] == "'"
    body = literal[1:-1]
    assert re.search(r"(?<!\\)(\\\\)*\$\{", body) is None  # no live interpolation
    return re.sub(r"\\(u\{[0-9a-f]+\}|[\\'nrt$])",
                  lambda m: {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}.get(m.group(1))
                  or chr(int(m.group(1)[2:-1], 16)), body)


@CASES
def test_bicep_strings_round_trip_without_interpolation(text):
    literal = escape.bicep_string(text)
    assert _bicep_unescape(literal) == text
    assert_no_raw_controls(literal)


@CASES
def test_kql_strings_round_trip_or_are_refused(text):
    try:
        literal = kql.literal("string", text)
    except kql.KqlError:
        assert raw_controls(text), "only text with control characters is refused"
        return
    _, values, _ = kql.parse_rendered(f"declare query_parameters(v:string = {literal});\nT")
    assert values["v"] == text


@CASES
def test_sql_strings_and_identifiers_round_trip_through_duckdb(text):
    import duckdb

    con = duckdb.connect()
    try:
        cur = con.execute(f"SELECT {escape.sql_string(text)} AS {escape.sql_identifier(text)}")
        assert cur.fetchall() == [(text,)]
        assert cur.description[0][0] == text
    finally:
        con.close()
