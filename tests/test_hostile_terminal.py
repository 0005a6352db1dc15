"""The shared hostile corpus (tests/hostile.py) through what a person reads in a terminal: `recommend` (its
list and `show ID`), `snat`, `dns` and `sql` as tables, at 80 columns and in a wide terminal. Log text is
inert: no escape sequence or control character reaches the terminal, Rich markup and emoji codes print as
the text they are, and nothing breaks the layout (one line per recommendation, no line wider than the
screen or ending in spaces, every value on the line it belongs to)."""

from __future__ import annotations

import json
import re

import pytest
from rich.cells import cell_len
from test_hostile import CORPUS, RICH_MARKUP, SQL, assert_clean, hostile_db, snat_config  # noqa: F401 - fixtures
from typer.testing import CliRunner

from egresslens.escape import plain, visible
from egresslens.cli import app

WIDTHS = (80, 1000)
runner = CliRunner()


def tty(width: int, *args: str, codes=(0, 1)) -> str:
    """The command's output for a terminal `width` columns wide, checked for raw control characters."""
    result = runner.invoke(app, list(args), env={"COLUMNS": str(width), "NO_COLOR": "1"})
    out = assert_clean(result, codes)
    assert "\x1b" not in out
    return out


def assert_layout(out: str, width: int, *, whole_tokens: bool = False) -> None:
    """No line wider than the screen (`whole_tokens`: but a single token that cannot be broken), none
    ending in spaces."""
    for line in out.splitlines():
        assert line == line.rstrip(), repr(line)
        if cell_len(line) > width:
            assert whole_tokens and " " not in line.split(" = ", 1)[-1].strip(), repr(line[:200])


@pytest.fixture(scope="module")
def recs(hostile_db):  # noqa: F811
    return json.loads(tty(160, "recommend", "--db", str(hostile_db), "--format", "json"))["recommendations"]


@pytest.mark.parametrize("width", WIDTHS)
def test_recommend_lists_every_item_on_one_line_with_its_title_as_text(hostile_db, recs, width):  # noqa: F811
    out = tty(width, "recommend", "--db", str(hostile_db))
    assert_layout(out, width)
    lines = [line for line in out.splitlines() if re.match(r"[0-9a-f]{10}  ", line)]
    assert sorted(line[:10] for line in lines) == sorted(r["id"] for r in recs)  # one line each, nothing split
    hostile = [r for r in recs if any(visible(t).lower() in plain(r["title"]).lower() for t in CORPUS.values())]
    assert len(hostile) >= len(CORPUS) - 5  # (a few are quoted as Python writes them: it\x27s -> it\\\x27s)
    if width > 100:  # wide enough for whole titles: exactly the text, not styled, linked or turned into emoji
        for r in recs:
            assert plain(r["title"]) in out, r["title"]
        titles = " ".join(r["title"] for r in recs)
        shown = [text for text in RICH_MARKUP if text in titles]
        assert len(shown) >= 3 and all(text in out for text in shown)


@pytest.mark.parametrize("width", WIDTHS)
def test_recommend_show_prints_each_hostile_item_as_text(hostile_db, recs, width):  # noqa: F811
    markup = [r for r in recs if re.search(r"\[|\\x|\\u", plain(r["title"]))]  # markup, escapes, controls
    assert len(markup) >= 10
    for r in markup:
        out = tty(width, "recommend", "show", r["id"], "--db", str(hostile_db), codes=(0,))
        assert_layout(out, width)
        if width > 100:
            assert out.splitlines()[0] == plain(r["title"])  # the title line: exactly the text
            assert plain(r["rationale"]) in out


@pytest.mark.parametrize("width", WIDTHS)
def test_snat_and_dns_tables_keep_every_value_on_its_own_row(hostile_db, snat_config, width):  # noqa: F811
    snat = tty(width, "snat", "--db", str(hostile_db), "--config", str(snat_config), "--hold-time", "24h")
    assert_layout(snat, width)
    dns = tty(width, "dns", "--db", str(hostile_db), "--top", "1000")
    assert_layout(dns, width)
    if width > 100:  # each value whole on one line of its row: no newline, CR or separator got through
        for text in RICH_MARKUP:
            assert text in snat and text in dns
        names = [r["query_name"] for r in json.loads(tty(160, "dns", "--db", str(hostile_db), "--json"))["by_name"]]
        lines = dns.splitlines()
        for name in names:
            assert any(visible(name) in line for line in lines), name


@pytest.mark.parametrize("width", WIDTHS)
def test_sql_tables_and_one_field_per_line_keep_the_layout(hostile_db, width):  # noqa: F811
    out = tty(width, "sql", SQL, "--db", str(hostile_db))
    assert_layout(out, width, whole_tokens=True)
    rows = [json.loads(line) for line in tty(160, "sql", SQL, "--db", str(hostile_db), "--format", "json").splitlines()]
    if width > 100:  # a table, one line per row under its header
        body = [line for line in out.splitlines()[2:] if line.strip() and not line.endswith(" rows")]
        assert len(body) == len(rows)
        for row, line in zip(rows, body):
            assert visible(row["destination_fqdn"]) in line and visible(row["rule"]) in line
        for text in RICH_MARKUP:
            assert text in out
    else:  # one field per line: every field of every row, each starting its own line
        fields = [line for line in out.splitlines() if re.match(r"\s*(destination_fqdn|rule|rule_collection) =( |$)", line)]
        assert len(fields) == 3 * len(rows)
