"""The cause of an Azure SDK failure in a few words, for the one-sentence errors of every Azure source.

An SDK error is often a dozen lines (DefaultAzureCredential lists every credential it tried) whose
useful part is deep inside: a DNS lookup that failed, a refused connection, a timeout, a rejected
certificate. :func:`cause` finds it; :func:`status` gives an HTTP status only when there was one, so
no message ever says "(None)".
"""

from __future__ import annotations

import re

from egresslens.redact import text as redact

_RESOLVE = re.compile(r"Failed to resolve '([^']+)'|host='([^']+)'.*?(?:Name or service not known|"
                      r"nodename nor servname|getaddrinfo failed|Temporary failure in name resolution)", re.S)
_HOST = re.compile(r"host='([^']+)'|Failed to resolve '([^']+)'|https?://([^/:'\s]+)")
_DNS_WORDS = ("Name or service not known", "nodename nor servname", "getaddrinfo failed",
              "Temporary failure in name resolution", "No address associated with hostname")

def _texts(exc: BaseException, depth: int = 6) -> list[str]:
    """The messages of the exception and of what caused it (chained and SDK inner exceptions)."""
    out: list[str] = []
    seen: set[int] = set()
    todo = [exc]
    while todo and len(out) < depth:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(str(getattr(e, "message", "") or e))
        todo += [getattr(e, "inner_exception", None), e.__cause__, e.__context__]
    return out


def _host(text: str) -> str | None:
    m = _HOST.search(text)
    return next((g for g in m.groups() if g), None) if m else None


def cause(exc: BaseException) -> str:
    """A few words on why an Azure call failed: "DNS lookup of login.microsoftonline.com failed",
    "connection to x refused", "timed out", "TLS certificate of x not trusted", or the first line
    of the message (secrets redacted, at most 200 characters)."""
    text = "\n".join(_texts(exc))
    host = _host(text)
    at = f" of {host}" if host else ""
    m = _RESOLVE.search(text)
    if m or any(w in text for w in _DNS_WORDS):
        name = next((g for g in m.groups() if g), None) if m else host
        return f"DNS lookup of {name} failed" if name else "a DNS lookup failed"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return f"connection{' to ' + host if host else ''} refused"
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text or "SSLCertVerificationError" in text:
        return f"TLS certificate{at} not trusted"
    if re.search(r"timed out|Timeout", text):
        return f"timed out{' reaching ' + host if host else ''}"
    if "Network is unreachable" in text or "No route to host" in text:
        return f"network unreachable{' for ' + host if host else ''}"
    lines = [ln.strip() for t in _texts(exc) for ln in t.splitlines() if ln.strip()]
    # DefaultAzureCredential: "failed to retrieve a token ... Attempted credentials:" then one per line
    tried = [ln for ln in lines if re.match(r"^\w+Credential:", ln)]
    first = (tried or lines or [type(exc).__name__])[0]
    return redact(first)[:200]


def status(exc: BaseException) -> str:
    """" (HTTP 403)" when the service answered with a status, else ""."""
    code = getattr(exc, "status_code", None)
    return f" (HTTP {code})" if code else ""
