"""KQL kept as data: templates in `egresslens/queries/*.kql`, typed parameters, safe literals.

Each template starts with a marker line `// egresslens:template NAME` and declares its inputs with
`declare query_parameters(name:type, ...);`. The Log Analytics query API carries no separate
parameter list, so `render` turns the declaration into one with typed default values
(`declare query_parameters(start:datetime = datetime(2025-07-01T00:00:00.0000000Z), ...)`):
every value becomes exactly one literal of its declared type, built by this module from a typed
Python value — never by pasting user text into the query. Strings are quoted with every quote,
backslash and control character escaped; anything else (table names) is checked against an
allow-list before a template is chosen.

Templates name the Log Analytics tables (`AZFWNetworkRule`, `AzureDiagnostics`, ...). The same text runs
against an Azure Data Explorer database whose tables hold the Log Analytics schema under other names:
`render(..., tables={"AZFWNetworkRule": "FirewallNetwork"})` puts each mapped name, bracket-quoted, where
the template names the table (in its code, never inside a string literal or a comment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources

from egresslens.escape import UnsafeValue, kql_string

MARKER = "// egresslens:template "
_DECLARE_RE = re.compile(r"^declare query_parameters\((?P<body>[^)]*)\);\s*$", re.M)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TYPES = ("datetime", "string", "long", "int", "real", "bool", "timespan")
MAX_STRING = 4096


class KqlError(ValueError):
    """A template or a parameter value that cannot be rendered safely."""


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    params: tuple[tuple[str, str], ...]  # (name, type) in declaration order

    def render(self, tables: dict[str, str] | None = None, **values) -> str:
        return render(self, values, tables)


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def literal(kql_type: str, value) -> str:
    """One KQL literal of `kql_type` for a Python value; raises KqlError for anything else."""
    if kql_type == "datetime":
        if not isinstance(value, datetime):
            raise KqlError(f"expected a datetime, got {type(value).__name__}")
        return "datetime(" + _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z)"
    if kql_type == "string":
        try:
            return kql_string(value, MAX_STRING)
        except UnsafeValue as exc:
            raise KqlError(str(exc)) from None
    if kql_type in ("long", "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise KqlError(f"expected an integer, got {type(value).__name__}")
        return f"{kql_type}({value})"
    if kql_type == "real":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise KqlError(f"expected a number, got {value!r}")
        return "real(+inf)" if value == float("inf") else f"real({float(value)!r})"  # -inf reads as is
    if kql_type == "bool":
        if not isinstance(value, bool):
            raise KqlError(f"expected a bool, got {type(value).__name__}")
        return "bool(true)" if value else "bool(false)"
    if kql_type == "timespan":
        if not isinstance(value, timedelta):
            raise KqlError(f"expected a timedelta, got {type(value).__name__}")
        # whole ticks (100 ns), the unit Kusto keeps timespans in: exact for every timedelta, and never
        # the exponent form (`1e-06s`) a float's repr gives, which Kusto rejects
        return f"{value // timedelta(microseconds=1) * 10}tick"
    raise KqlError(f"unsupported KQL parameter type {kql_type!r}")


def parse_template(name: str, text: str) -> Template:
    first = text.splitlines()[0] if text else ""
    if not first.startswith(MARKER) or first[len(MARKER):].strip() != name:
        raise KqlError(f"query template {name}: first line must be `{MARKER}{name}`")
    decls = _DECLARE_RE.findall(text)
    m = _DECLARE_RE.search(text)
    if m is None or len(decls) != 1:
        raise KqlError(f"query template {name}: needs exactly one `declare query_parameters(...);` line")
    params = []
    for part in filter(None, (p.strip() for p in m.group("body").split(","))):
        pname, _, ptype = (s.strip() for s in part.partition(":"))
        if not _NAME_RE.match(pname) or ptype not in TYPES:
            raise KqlError(f"query template {name}: bad parameter declaration {part!r}")
        params.append((pname, ptype))
    return Template(name, text, tuple(params))


def render(template: Template, values: dict, tables: dict[str, str] | None = None) -> str:
    names = [n for n, _ in template.params]
    missing = [n for n in names if n not in values]
    extra = [n for n in values if n not in names]
    if missing or extra:
        raise KqlError(f"query {template.name}: missing parameters {missing}, unknown {extra}")
    decl = ", ".join(f"{n}:{t} = {literal(t, values[n])}" for n, t in template.params)
    line = f"declare query_parameters({decl});"
    text = _map_tables(template.text, tables) if tables else template.text
    return _DECLARE_RE.sub(lambda _m: line, text, count=1)


# KQL text split into what is not code (comments, string literals: verbatim @"..", plain ".." and '..')
# and the code between them
_NOT_CODE_RE = re.compile(r"""//[^\n]*|@"[^"]*"|@'[^']*'|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")
_TABLE_NAME_RE = re.compile(r"^[A-Za-z0-9_ .-]{1,256}$")  # what Azure Data Explorer allows in a table name


def check_table_mapping(tables: dict[str, str]) -> None:
    """Raise KqlError unless every pair maps a template's table name to a name Azure Data Explorer allows."""
    for src, dst in tables.items():
        if not isinstance(src, str) or not _NAME_RE.match(src) or not isinstance(dst, str) or not _TABLE_NAME_RE.match(dst):
            raise KqlError(f"invalid table name mapping {src!r} -> {dst!r}")


def _map_tables(text: str, tables: dict[str, str]) -> str:
    check_table_mapping(tables)
    pattern = re.compile(r"(?<![\w.\[])(" + "|".join(map(re.escape, sorted(tables, key=len, reverse=True)))
                         + r")(?![\w\]])")
    out, pos = [], 0
    for m in _NOT_CODE_RE.finditer(text):
        out.append(pattern.sub(lambda t: "[" + kql_string(tables[t.group(1)]) + "]", text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(pattern.sub(lambda t: "[" + kql_string(tables[t.group(1)]) + "]", text[pos:]))
    return "".join(out)


def template_names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files("egresslens").joinpath("queries").iterdir() if p.name.endswith(".kql"))


_CACHE: dict[str, Template] = {}


def load(name: str) -> Template:
    """The template `egresslens/queries/<name>.kql` (names are checked: no path tricks)."""
    if not _NAME_RE.match(name):
        raise KqlError(f"invalid query template name {name!r}")
    if name not in _CACHE:
        path = resources.files("egresslens").joinpath("queries", f"{name}.kql")
        if not path.is_file():
            raise KqlError(f"no query template {name!r}")
        _CACHE[name] = parse_template(name, path.read_text(encoding="utf-8"))
    return _CACHE[name]


# -- reading a rendered query back (used by the loopback test server and by tests) -----------------

_LIT_RE = re.compile(
    r'\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<type>[a-z]+)\s*=\s*'
    r'(?:datetime\((?P<dt>[0-9T:.\-]+)Z\)|"(?P<str>(?:[^"\\]|\\.)*)"|(?:long|int)\((?P<int>-?\d+)\)'
    r'|real\((?P<real>[^)]*)\)|bool\((?P<bool>true|false)\)|(?P<ts>-?\d+)tick)\s*(?:,|$)'
)
_UNESCAPE = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def parse_rendered(query: str) -> tuple[str | None, dict, str]:
    """(template name, parameter values, query text with the declaration line blanked) of a rendered
    query. Raises KqlError when the declaration is not a sequence of single typed literals."""
    first = query.splitlines()[0] if query else ""
    name = first[len(MARKER):].strip() if first.startswith(MARKER) else None
    m = re.search(r"^declare query_parameters\((?P<body>.*)\);\s*$", query, re.M)
    if m is None:
        return name, {}, query
    body, pos, values = m.group("body"), 0, {}
    while pos < len(body):
        lm = _LIT_RE.match(body, pos)
        if lm is None:
            raise KqlError(f"unparseable parameter declaration at {body[pos:pos + 40]!r}")
        pos = lm.end()
        if lm.group("dt") is not None:
            v = datetime.strptime(lm.group("dt")[:26], "%Y-%m-%dT%H:%M:%S.%f")
        elif lm.group("str") is not None:
            v = re.sub(r"\\(.)", lambda e: _UNESCAPE[e.group(1)], lm.group("str"))
        elif lm.group("int") is not None:
            v = int(lm.group("int"))
        elif lm.group("real") is not None:
            v = float(lm.group("real"))
        elif lm.group("bool") is not None:
            v = lm.group("bool") == "true"
        else:
            v = timedelta(microseconds=int(lm.group("ts")) // 10)
        values[lm.group("name")] = v
    skeleton = query[: m.start()] + "declare query_parameters(...);" + query[m.end():]
    return name, values, skeleton


def skeleton(template: Template) -> str:
    m = _DECLARE_RE.search(template.text)
    assert m is not None
    return template.text[: m.start()] + "declare query_parameters(...);" + template.text[m.end():]
