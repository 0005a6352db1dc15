"""One output convention for every command: the same flags for the same things, and one way to print.

- ``--format`` where a command has several forms (``table`` for a person, ``json``, ``csv``,
  ``markdown`` and the command's own), ``--json`` as its shorthand everywhere, ``--out FILE`` to write
  a file (replaced whole) instead of standard output, and the format read from the file's suffix
  when ``--format`` is not given (``--out plan.md`` writes Markdown);
- ``--since/--start/--end`` with one default window, :data:`DEFAULT_SINCE`;
- ``--version`` and ``--no-color`` on every command (``NO_COLOR`` in the environment does the same:
  no colour and no bold, italics or underline either);
- tables that fit the terminal (80 columns when the output is a file or a pipe): a column too wide
  for the screen is dropped, least important first, and the table says which (:func:`fit_table`);
  a number, an address or a time is never split across lines.

The command class :class:`Command` adds the shared flags to every command and keeps old spellings
(``nightly --out-dir``, ``demo --dir``) working as hidden aliases.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import typer
import typer.core

from egresslens import __version__

DEFAULT_SINCE = "24h"
FILE_WIDTH = 80  # width of tables written to a file or a pipe

SINCE_HELP = f"Window length ending at the newest data: 30m, 24h, 7d, 2w (default {DEFAULT_SINCE})."
START_HELP = "Window start, ISO 8601 UTC (instead of --since)."
END_HELP = "Window end, ISO 8601 UTC (default: the newest data in the store)."
JSON_HELP = "Shorthand for --format json."
OUT_HELP = "Write to FILE (replaced whole) instead of standard output; its suffix picks the format when --format is not given."

SinceOption = typer.Option(DEFAULT_SINCE, "--since", metavar="DURATION", help=SINCE_HELP, show_default=False)
StartOption = typer.Option(None, "--start", metavar="TIME", help=START_HELP)
EndOption = typer.Option(None, "--end", metavar="TIME", help=END_HELP)
JsonOption = typer.Option(False, "--json", help=JSON_HELP)
OutOption = typer.Option(None, "--out", "-o", metavar="FILE", help=OUT_HELP)

# the format a file's suffix stands for
SUFFIXES = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".html": "html",
            ".htm": "html", ".tf": "terraform", ".bicep": "bicep", ".sh": "az", ".txt": "table"}


def format_option(choices: Sequence[str], default: str = "table", extra: str = "") -> Any:
    """`--format/-f`, one of `choices` (default: `default`, or what --out's suffix says)."""
    return typer.Option(None, "--format", "-f", metavar="|".join(choices),
                        help=f"Output format: {', '.join(choices)} (default {default}" +
                             (", or what --out's suffix says" if len(choices) > 1 else "") + ")." + (f" {extra}" if extra else ""),
                        show_default=False)


def resolve_format(fmt: str | None, as_json: bool, out: Path | None, choices: Sequence[str], default: str = "table") -> str:
    """The format asked for: --json, else --format, else the suffix of --out, else `default`. A usage
    error in one sentence when it is not one of `choices`."""
    from egresslens import exitcodes
    from egresslens.cliutil import fail

    if as_json:
        if fmt and fmt.lower() != "json":
            raise fail(f"--json and --format {fmt} say different things: give one", exitcodes.USAGE)
        fmt = "json"
    if not fmt and out is not None:
        by_suffix = SUFFIXES.get(Path(out).suffix.lower())
        fmt = by_suffix if by_suffix in choices else None
    fmt = (fmt or default).lower()
    if fmt not in choices:
        raise fail(f"--format must be one of {', '.join(choices)}, not {fmt!r}", exitcodes.USAGE)
    return fmt


def write(text: str, out: Path | None) -> None:
    """`text` to standard output, or to `out` replaced whole (:mod:`egresslens.atomic`)."""
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from egresslens import atomic

    atomic.write_text(out, text)


# -- colour and the console ------------------------------------------------------------------------

_NO_COLOR = False


def no_color() -> bool:
    """True when output must be plain: --no-color was given or NO_COLOR is set (to anything)."""
    return _NO_COLOR or bool(os.environ.get("NO_COLOR"))


def set_no_color(value: bool = True) -> None:
    global _NO_COLOR
    _NO_COLOR = value
    if value:
        import typer.rich_utils

        typer.rich_utils.COLOR_SYSTEM = None  # help text too


def console(*, stderr: bool = False, file=None, width: int | None = None):  # noqa: ANN001, ANN201
    """A Rich console for people: plain (no ANSI sequence at all) under NO_COLOR / --no-color or when
    writing to a file or a pipe, which also gets 80 columns (or $COLUMNS)."""
    from rich.console import Console

    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    tty = file is None and stream.isatty()
    if width is None and not tty:
        width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else FILE_WIDTH
    plain = no_color() or not tty
    return Console(file=_NoTrailingSpace(stream), width=width, color_system=None if plain else "auto",
                   highlight=False, emoji=False, no_color=plain, force_terminal=False if plain else None,
                   soft_wrap=False)


# the end of a line: spaces among the style sequences that close it (a bold header's padding)
_TRAILING = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)+(?=\r?\n)")


class _NoTrailingSpace:
    """A text stream that drops the spaces Rich pads a line with (a table's short cells, a wrapped
    line): no output line ends in whitespace, in a terminal or in a file."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(_TRAILING.sub(lambda m: re.sub(r"[ \t]+", "", m.group(0)), text))

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - isatty, flush, fileno, encoding, ...
        return getattr(self._stream, name)


def render(draw: Callable[[Any], None], width: int | None = None) -> str:
    """What `draw(console)` prints, as plain text (for --out FILE and for tests)."""
    import io

    buf = io.StringIO()
    draw(console(file=buf, width=width or FILE_WIDTH))
    return buf.getvalue()


def show(draw: Callable[[Any], None], out: Path | None) -> None:
    """`draw(console)` to the terminal, or as plain text to `out`."""
    if out is None:
        draw(console())
    else:
        write(render(draw), out)


# -- tables that fit -------------------------------------------------------------------------------

NUM, TEXT, KEEP = "num", "text", "keep"  # a number (right-aligned, never split), free text, a token never split


@dataclass
class Col:
    """A column of :func:`fit_table`: `kind` NUM or KEEP cells are never split; lower `priority`
    columns are dropped first when the table does not fit (0: never dropped)."""

    name: str
    kind: str = TEXT
    priority: int = 0
    min_width: int = 12  # TEXT: the narrowest it may be folded to
    style: str | None = None


_MARKUP = re.compile(r"(?<!\\)\[/?[a-z#][^\]]*\]")


def _cell_width(markup: str) -> int:
    from rich.text import Text

    longest = 0
    for line in str(markup).split("\n"):
        try:
            longest = max(longest, Text.from_markup(line).cell_len)
        except Exception:  # noqa: BLE001 - not markup: count it as it is
            longest = max(longest, len(line))
    return longest


_WORD = re.compile(r"\S+")
# a token up to and with its separator: a path's, a URL's or a list's first, then a name's
_PIECES = (re.compile(r"[^/,;|&?=]*[/,;|&?=]?"), re.compile(r"[^.:\-]*[.:\-]?"))


def _pieces(text: str, start: int, end: int, width: int, level: int = 0) -> list[tuple[int, int]]:
    """text[start:end] as tokens that fit `width` where a separator allows: broken after `/` (and `,` `;`
    `|` `&` `?` `=`) first, a token still too long after `.` `:` `-` too."""
    out: list[tuple[int, int]] = []
    for p in _PIECES[level].finditer(text, start, end):
        ps, pe = p.span()
        if ps == pe:
            continue
        if pe - ps > width and level + 1 < len(_PIECES):
            out += _pieces(text, ps, pe, width, level + 1)
        else:
            out.append((ps, pe))
    return out


def fold_spans(text: str, width: int, split_long: bool = True) -> list[tuple[int, int]]:
    """Where `text` breaks into lines of at most `width`, as (start, end) offsets: at spaces (dropped),
    a word that fits a line moved whole to the next one, a longer word (an ARM id, a URL, a DNS name)
    broken after its separators (`/` `,` `;` `|` `&` `?` `=`, then `.` `:` `-` of a part still too long),
    never inside a token; a token longer than the line split (`split_long`) or kept whole. A line break
    in `text` stays one."""
    width = max(width, 1)
    out: list[tuple[int, int]] = []
    offset = 0
    for segment in text.split("\n"):
        start = end = None
        for m in _WORD.finditer(segment):
            ws, we = m.start() + offset, m.end() + offset
            if start is not None and we - start <= width:
                end = we
                continue
            if start is not None:
                out.append((start, end))
            start = end = ws
            if we - ws <= width:
                end = we
                continue
            for ps, pe in _pieces(text, ws, we, width):  # a word longer than the line: at its separators
                if pe - start <= width or end == start:
                    end = pe
                else:
                    out.append((start, end))
                    start, end = ps, pe
                while split_long and end - start > width:
                    out.append((start, start + width))
                    start += width
        out.append((start, end) if start is not None else (offset, offset))
        offset += len(segment) + 1
    return out


def fold(text: str, width: int, split_long: bool = True) -> list[str]:
    """`text` in lines of at most `width` (:func:`fold_spans`)."""
    return [text[a:b] for a, b in fold_spans(text, width, split_long)]


def _folded_cell(markup: str, width: int) -> Any:  # noqa: ANN401 - a rich Text
    """A cell (Rich markup) pre-broken to `width` by :func:`fold_spans`, its styles kept."""
    from rich.text import Text

    try:
        text = Text.from_markup(str(markup))
    except Exception:  # noqa: BLE001 - not markup: the text as it is
        text = Text(str(markup))
    return Text("\n").join(text[a:b] for a, b in fold_spans(text.plain, width))


def fit_table(title: str | None, cols: Sequence[Col], rows: Iterable[Sequence[str]], width: int,
              **table_kw: Any):  # noqa: ANN401
    """A Rich table of `rows` (Rich markup strings, log text already through `escape.terminal`) that fits
    `width` columns: NUM and KEEP cells keep their whole width, TEXT cells fold down to their
    `min_width`, and while that is still too wide the lowest-priority column goes. Returns
    (table, names of the columns left out)."""
    from rich import box
    from rich.table import Table

    rows = [list(r) for r in rows]
    keep = list(range(len(cols)))

    def need(i: int) -> int:
        c = cols[i]
        words = max((len(w) for w in c.name.split()), default=1)
        content = max((_cell_width(r[i]) for r in rows), default=0)
        if c.kind == TEXT:
            return max(words, min(content, c.min_width))
        return max(words, content)

    def total(idx: list[int]) -> int:
        return sum(need(i) for i in idx) + 3 * len(idx) + 1  # one space of padding each side, one rule between

    while total(keep) > width and any(cols[i].priority for i in keep):
        drop = min((i for i in keep if cols[i].priority), key=lambda i: (cols[i].priority, -i))
        keep.remove(drop)
    # the room left goes to the text columns up to their longest line, the one that needs least first and
    # an even share at most each (a name gets its whole width, the prose what is left); their cells are
    # then broken by hand (at spaces and separators, not mid-token) to exactly that width
    widths = {i: need(i) for i in keep}
    room = width - total(keep)
    wants = {i: max(_cell_width(r[i]) for r in rows) if rows else 0 for i in keep if cols[i].kind == TEXT}
    short = sorted((i for i in wants if widths[i] < wants[i]), key=lambda i: wants[i] - widths[i])
    for n, i in enumerate(short):
        if room <= 0:
            break
        give = min(wants[i] - widths[i], room // (len(short) - n))
        widths[i] += give
        room -= give
    while room < 0 and any(widths[i] > 8 for i in wants):  # nothing left to drop: the widest text gives way
        widths[max(wants, key=lambda i: widths[i])] -= 1
        room += 1
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, **table_kw)
    for i in keep:
        c = cols[i]
        if c.kind == TEXT:
            table.add_column(c.name, overflow="fold", width=widths[i], style=c.style)
        else:  # the header of a column that never wraps is broken over lines by hand, at its width
            import textwrap

            header = "\n".join(textwrap.wrap(c.name, need(i), break_long_words=False)) or c.name
            table.add_column(header, no_wrap=True, min_width=need(i), justify="right" if c.kind == NUM else "left",
                             style=c.style)
    for r in rows:
        table.add_row(*(_folded_cell(r[i], widths[i]) if cols[i].kind == TEXT else r[i] for i in keep))
    return table, [cols[i].name for i in range(len(cols)) if i not in keep]


def hanging(console: Any, rows: Sequence[tuple[str, str]]) -> None:  # noqa: ANN401 - a rich Console
    """Label and text (Rich markup, log text already through `escape.terminal`), a long text wrapping
    under itself rather than under its label."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, text in rows:
        grid.add_row(label, text)
    console.print(grid)


PROSE_BELOW_WIDTH = 120  # narrower screens print a table's long prose column (a fix, evidence) under the table


def prose_below(console: Any, heading: str, items: Sequence[tuple[str, Sequence[str]]]) -> None:  # noqa: ANN401
    """What a narrow table left out, at the full width: `heading`, then each row's head line (Rich markup)
    and its parts, a line each, wrapping under themselves."""
    console.print(f"\n[bold]{heading}[/bold]")
    for head, parts in items:
        console.print(head)
        hanging(console, [("  -", part) for part in parts])


def dropped_note(dropped: list[str], wider: str = "a wider terminal or --format json") -> str:
    return f"[dim]not shown to fit the width: {', '.join(dropped)} ({wider})[/dim]" if dropped else ""


# -- the command class every command is built with ---------------------------------------------------

# old spellings kept working, hidden from --help: {command name: {old: new}}
ALIASES: dict[str, dict[str, str]] = {}

_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "FILE", "Path": "FILE", "bool": None}


def _type_label(param: Any, shown: str | None) -> str | None:  # noqa: ANN401 - a typer parameter
    """The type column of --help: nothing for a flag, the metavar, else a plain word for the type
    (`TEXT`, `INTEGER`, `FILE`, `... (repeatable)`) instead of typer's `<list[Path]>`."""
    if getattr(param, "is_flag", False):
        return None
    if getattr(param, "metavar", None):
        return param.metavar
    if not shown:
        return shown
    inner = shown.strip("<>")
    many = inner.startswith("list[")
    inner = inner[5:-1] if many else inner
    word = _TYPE_WORDS.get(inner, inner.upper())
    return None if word is None else word + (" (repeatable)" if many else "")


def _plain_types(params: list) -> None:
    for p in params:
        original = p.display_type_rich
        p.display_type_rich = lambda ctx, _p=p, _o=original: _type_label(_p, _o(ctx))  # type: ignore[method-assign]


def reflow(text: str | None) -> str | None:
    """A docstring as help: paragraphs kept, the line breaks inside one paragraph removed, so the help
    wraps at the terminal's width instead of where the source was broken."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


class _PlainHelp:
    """Flags shown without a `<bool>` type in --help, the --help flag itself too (commands and groups)."""

    params: list

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_types(self.params)

    def get_help_option(self, ctx: Any) -> Any:  # noqa: ANN401
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _plain_types([option] if option is not None else [])
        return option


class Group(_PlainHelp, typer.core.TyperGroup):
    """The top level and `ingest`: flags without a `<bool>` type in --help, commands in workflow order."""

    ORDER = ("ingest", "recommend", "snat", "dns", "report", "drilldown", "nightly", "sql", "simulate", "demo",
             "files", "loganalytics", "adx", "storage", "metrics")

    def list_commands(self, ctx: Any) -> list[str]:  # noqa: ANN401
        names = super().list_commands(ctx)
        rank = {n: i for i, n in enumerate(self.ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


class Command(_PlainHelp, typer.core.TyperCommand):
    """Every command: flags shown without a `<bool>` type, help that wraps, and the old spellings of
    :data:`ALIASES` (hidden from --help)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = reflow(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # noqa: ANN401
        aliases = ALIASES.get(self.name or "", {})
        if aliases:
            out = []
            for a in args:
                head, eq, tail = a.partition("=")
                out.append(aliases[head] + eq + tail if head in aliases else a)
            args = out
        return super().parse_args(ctx, args)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"egresslens {__version__}")
        raise typer.Exit(0)


def no_color_callback(value: bool) -> None:
    if value:
        set_no_color(True)


VersionOption = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                             help="Print the version and exit.")
NoColorOption = typer.Option(False, "--no-color", callback=no_color_callback, is_eager=True,
                             help="Plain output: no colour or bold (as NO_COLOR=1).")


def _with_shared_flags(callback: Callable) -> Callable:
    """`callback` with --no-color and --version added to its parameters (typer reads the signature)."""
    import functools

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        kwargs.pop("_no_color", None)
        kwargs.pop("_version", None)
        return callback(*args, **kwargs)

    sig = inspect.signature(callback)
    extra = [inspect.Parameter("_no_color", inspect.Parameter.KEYWORD_ONLY, default=NoColorOption, annotation=bool),
             inspect.Parameter("_version", inspect.Parameter.KEYWORD_ONLY, default=VersionOption, annotation=bool)]
    params = list(sig.parameters.values())
    run.__signature__ = sig.replace(parameters=[p for p in params if p.kind != p.VAR_KEYWORD] + extra)  # type: ignore[attr-defined]
    return run


def finish(app: typer.Typer) -> None:
    """Every command of `app` (and its sub-apps) built with :class:`Command`, with --no-color and
    --version, its help reflowed and a one-sentence summary for the command list."""
    for info in app.registered_commands:
        if info.cls in (None, typer.core.TyperCommand):
            info.cls = Command
        if info.help is None and info.callback is not None:
            info.help = reflow(info.callback.__doc__)
        if info.short_help is None and info.help:
            first = info.help.split("\n\n")[0]
            info.short_help = re.split(r"(?<=\.)\s", first, maxsplit=1)[0].rstrip(".")
        if info.callback is not None and not getattr(info.callback, "__shared_flags__", False):
            info.callback = _with_shared_flags(info.callback)
            info.callback.__shared_flags__ = True  # type: ignore[attr-defined]
    for group in app.registered_groups:
        finish(group.typer_instance)


def app_options(version: Optional[bool], no_color_flag: Optional[bool]) -> None:
    """The main callback's share of the convention (`egresslens --no-color dns` works too)."""
    if no_color_flag or os.environ.get("NO_COLOR"):
        set_no_color(True)
