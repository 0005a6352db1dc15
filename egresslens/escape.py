"""One escaping helper per output medium.

Everything a firewall logs is attacker-controlled: FQDNs, URLs, SNI, rule names, DNS names and even
source fields come from the network. Whatever leaves EgressLens goes through the helper of the
medium it goes to, and nowhere else is escaping written by hand:

| medium | helper | what it guarantees |
|---|---|---|
| any text shown to a person | :func:`visible` | no control, format or line-separator character survives; each becomes a visible `\\xNN` / `\\uNNNN`; no secret (URL userinfo, `sig=`, `token=` ... values: :mod:`egresslens.redact`) |
| terminal, Rich markup string | :func:`terminal` | visible, and Rich markup (`[bold]`, `[link=...]`, `[/x]`) and emoji codes (`:smile:`) are shown as text |
| terminal, plain line | :func:`plain` | visible (no ESC sequence, no carriage-return overwrite) |
| Markdown inline text | :func:`markdown` | visible, one line, every Markdown/HTML-significant character backslash-escaped |
| Markdown code span | :func:`markdown_code` | visible, one line, a fence longer than any backtick run inside; `\\|` in tables |
| HTML text and attribute values | :func:`html` | visible, `& < > " '` as entities |
| Plotly label (axis tick, legend, hover) | :func:`plotly` | visible, `& < >` as entities: Plotly reads a few tags and decodes `&lt;` `&gt;` `&amp;`, but would show `&quot;` as those six characters |
| JSON inside an HTML `<script>` | :func:`script_json` | `<`, `>`, `&`, U+2028/2029 as `\\uXXXX` so `</script>` cannot close the element |
| CSV cell | :func:`csv_cell` | visible; a leading `= + - @` (formula injection) is neutralised with `'` |
| POSIX shell word | :func:`shell` | visible, then single-quoted (`shlex.quote`) |
| shell / HCL / Bicep comment | :func:`comment` | one visible line after `# ` or `// ` |
| HCL (Terraform) string | :func:`hcl_string` | double-quoted; `\\`, `"`, `${`, `%{` and control characters escaped |
| Bicep string | :func:`bicep_string` | single-quoted; `\\`, `'`, `${` and control characters escaped |
| KQL string | :func:`kql_string` | double-quoted; control characters refused (a query is never built from them) |
| DuckDB SQL string literal | :func:`sql_string` | single-quoted, `'` doubled (for text a statement cannot take as a parameter: views, DDL) |
| DuckDB SQL identifier | :func:`sql_identifier` | double-quoted, `"` doubled (column names read from input files) |

JSON documents need no helper of their own: ``json.dumps(..., ensure_ascii=True)`` escapes every
control and non-ASCII character. The shared hostile corpus (``tests/hostile.py``) is run through every
command and output format by the tests.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from typing import Any

from egresslens.redact import text as redact

# Unicode categories that must never reach an output as themselves: controls (ESC, BEL, CR, LF,
# DEL, C1), format characters (bidi overrides, zero-width joiners), line/paragraph separators,
# surrogates and private use.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES


def visible(value: Any) -> str:
    """The text with every control, format and separator character shown as an escape sequence, and
    no secret: URL userinfo and secret parameter values redacted (:func:`egresslens.redact.text`)."""
    text = redact("" if value is None else str(value))
    if text.isprintable() and text.isascii():  # the common case: nothing to do
        return text
    return "".join(_escape_char(ch) if _hidden(ch) else ch for ch in text)


def terminal(value: Any) -> str:
    """For a Rich markup string (console.print, table cells): markup and emoji codes shown as text,
    no raw control bytes."""
    from rich.markup import escape

    text = visible(value)
    if text.endswith("\\"):
        # Rich doubles a trailing backslash (so it cannot escape a closing tag after it) and then
        # prints both: show it as its code instead, the same in a cell and inside markup
        text = text[:-1] + "\\x5c"
    # Rich turns `:smile:` into an emoji and has no escape for it; it matches within one run of text
    # between tags, so each colon goes in a tag of its own (`none` is the empty style). Backslashes
    # before the tag are doubled, as Rich reads them as escaping it.
    return _COLON.sub(lambda m: m.group(1) * 2 + "[none]:[/none]", escape(text))


_COLON = re.compile(r"(\\*):")


def plain(value: Any) -> str:
    """For a plain terminal line (typer.echo, print): no raw control bytes."""
    return visible(value)


# Every ASCII punctuation character that Markdown (CommonMark + GFM tables, strikethrough, autolinks)
# or inline HTML gives a meaning to. CommonMark allows a backslash before any ASCII punctuation.
_MD_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~&:\"'=$%^;@")


def markdown(value: Any) -> str:
    """Inline Markdown text (also safe inside a table cell): shown literally, on one line."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in visible(value))


def markdown_code(value: Any, *, in_table: bool = False) -> str:
    """An inline code span. Backticks inside are kept (the fence is longer than any run of them);
    in a GFM table cell ``|`` must be escaped even inside code, which ``in_table`` does."""
    text = visible(value)
    if in_table:
        text = text.replace("|", "\\|")
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def html(value: Any) -> str:
    """HTML text or a double- or single-quoted attribute value."""
    import html as _html

    return _html.escape(visible(value), quote=True)


def plotly(value: Any) -> str:
    """A Plotly label: its pseudo-HTML (`<b>`, `<br>`, `<a href>`) shown as text, quotes as themselves."""
    import html as _html

    return _html.escape(visible(value), quote=False)


def script_json(document: Any) -> str:
    """A JSON value to embed in an HTML ``<script>`` element (data for a chart): nothing in it can
    end the element or open an HTML comment, whatever the strings hold."""
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=True, default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


_FORMULA_START = ("=", "+", "-", "@")


def csv_cell(value: Any) -> Any:
    """A CSV cell: numbers and None unchanged; text made visible, and a leading formula character
    (``= + - @``) prefixed with ``'`` so a spreadsheet shows it instead of evaluating it."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = visible(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def shell(value: Any) -> str:
    """One POSIX shell word."""
    return shlex.quote(visible(value))


def comment(value: Any, marker: str = "#") -> str:
    """A one-line comment for a script or template (``#`` for shell and HCL, ``//`` for Bicep)."""
    return f"{marker} {visible(value)}"


def _code_escape(ch: str, style: str) -> str:
    code = ord(ch)
    if style == "bicep":
        return f"\\u{{{code:x}}}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def hcl_string(value: Any) -> str:
    """A double-quoted HCL string literal: no template sequence, no raw control character."""
    out = []
    for ch in str(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif _hidden(ch):
            out.append(_code_escape(ch, "hcl"))
        else:
            out.append(ch)
    # HCL's own escapes for template openers ("$${", "%%{") are not understood by every HCL parser
    # (python-hcl2 fails on an unclosed "$${"); a Unicode escape of the opener means the same to all.
    s = "".join(out).replace("${", "\\u0024{").replace("%{", "\\u0025{")
    return f'"{s}"'


def bicep_string(value: Any) -> str:
    """A single-quoted Bicep string literal: no interpolation, no raw control character."""
    out = []
    for ch in str(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "$":
            out.append("\\$")
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif _hidden(ch):
            out.append(_code_escape(ch, "bicep"))
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


class UnsafeValue(ValueError):
    """A value that must not be written into a query or script at all."""


def kql_string(value: str, max_length: int = 4096) -> str:
    """A double-quoted KQL string literal. Control characters are refused, not escaped: no query is
    ever built from such a value."""
    if not isinstance(value, str):
        raise UnsafeValue(f"expected a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise UnsafeValue("string parameter too long")
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "'":
            out.append("\\'")
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif _hidden(ch):
            raise UnsafeValue(f"control character U+{ord(ch):04X} not allowed in a parameter")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def sql_string(value: str) -> str:
    """A single-quoted DuckDB string literal. Values go into queries as parameters wherever a statement
    takes them; this is for the rest (a view's text, grammar constants, the path a view names)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A double-quoted DuckDB identifier (column names come from input files)."""
    return '"' + str(name).replace('"', '""') + '"'
