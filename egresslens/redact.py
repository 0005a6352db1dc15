"""Secrets out of everything EgressLens says or stores: one helper for URLs and the text around them.

- :func:`url` (a URL named in a message): without its query, its userinfo masked.
- :func:`text` (messages, reports, terminal output): a URL's userinfo
  (``https://user:secret@host``) becomes ``***@``, and the value of every secret-looking parameter
  (``sig``, ``token``, ``secret``, ``key``, ``password`` ... in a query string or a connection string)
  becomes ``REDACTED``. :func:`egresslens.escape.visible`, which every text medium goes through, calls
  :func:`text`, so a message, a report, a table cell or a CSV cell never shows one; JSON outputs go
  through :func:`document`.
- :func:`stored_url` and :func:`stored_url_sql` (the store): a logged ``TargetUrl`` keeps its scheme,
  host and path, and its query keeps parameter names with their values dropped
  (``https://h/p?user=&sig=``), unless ``EGRESSLENS_KEEP_URL_QUERY=1`` keeps them whole (docs/security.md).
"""

from __future__ import annotations

import os
import re
from typing import Any

KEEP_QUERY_ENV = "EGRESSLENS_KEEP_URL_QUERY"
MARK = "REDACTED"

# parameter names whose value is a credential: SAS `sig`, OAuth tokens, API keys, passwords
_SECRET_NAME = r"(?:sig|signature|[a-z_.-]*token|[a-z_.-]*secret|[a-z_.-]*key|[a-z_.-]*passw(?:or)?d|pwd|" \
               r"sharedaccesssignature|[a-z_.-]*credential|auth|authorization)"
_PARAM = re.compile(rf"(?i)(?<![a-z0-9_.-])({_SECRET_NAME})=([^&;\s'\"<>]+)")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s'\"<>]+@")
_HINT = re.compile(r"[=@]")


def text(value: Any) -> str:
    """`value` as text with URL userinfo and secret parameter values replaced."""
    s = "" if value is None else str(value)
    if not _HINT.search(s):
        return s
    s = _USERINFO.sub(r"\1***@", s)
    return _PARAM.sub(lambda m: f"{m.group(1)}={MARK}", s)


def url(value: str) -> str:
    """A URL named in a message (an account URL): its userinfo masked and its query (a SAS token, say)
    left out."""
    base = str(value).split("#", 1)[0].split("?", 1)[0]
    return _USERINFO.sub(r"\1***@", base)


def document(value: Any) -> Any:
    """A JSON-ready document with every string redacted (lists, dicts and tuples walked)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {k: document(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [document(v) for v in value]
    return value


def keep_query() -> bool:
    return os.environ.get(KEEP_QUERY_ENV, "").strip().lower() in ("1", "true", "yes")


def stored_url(value: str | None) -> str | None:
    """A TargetUrl as the store keeps it (see the module docstring); Python twin of :func:`stored_url_sql`."""
    if value is None:
        return None
    if keep_query():
        return value
    head, _, frag = value.partition("#")
    del frag  # never sent to the server: nothing to keep
    base, q, query = head.partition("?")
    base = _USERINFO.sub(r"\1", base)
    if not q:
        return base
    names = [p.split("=", 1)[0] + ("=" if "=" in p else "") for p in query.split("&")]
    return f"{base}?{'&'.join(names)}"


def stored_url_sql(col: str) -> str:
    """DuckDB SQL for :func:`stored_url` over the column `col` (read when the statement is built)."""
    if keep_query():
        return col
    no_frag = f"split_part({col}, '#', 1)"
    base = f"regexp_replace(split_part({no_frag}, '?', 1), '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@', '\\1')"
    query = f"substr({no_frag}, strpos({no_frag}, '?') + 1)"
    # a URL with no query, fragment or user information (nearly every one) is kept as it is: no pattern runs
    plain = f"NOT (contains({col}, '?') OR contains({col}, '#') OR contains({col}, '@'))"
    return (f"CASE WHEN {col} IS NULL THEN NULL WHEN {plain} THEN {col} WHEN strpos({no_frag}, '?') = 0 THEN {base} "
            f"ELSE {base} || '?' || regexp_replace({query}, '=[^&]*', '=', 'g') END")
