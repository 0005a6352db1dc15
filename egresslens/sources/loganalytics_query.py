"""The Log Analytics query client: one rendered KQL query per call, with deliberate retry handling.

Throttling (429 + Retry-After), transient 5xx and timeouts are retried here with backoff (the
SDK's own retries are switched off); permanent errors become `LogAnalyticsError` with one sentence
for the user.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pyarrow as pa

from egresslens.sources.azure_errors import cause

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class LogAnalyticsError(RuntimeError):
    """A permanent failure, with a message meant for the user as is."""


@dataclass
class Settings:
    row_cap: int = 500_000  # the service's record limit per result
    window: timedelta = timedelta(hours=1)  # raw mode grid (ingestion time)
    summary_window: timedelta = timedelta(hours=6)  # summary mode grid (event time, whole hours)
    min_window: timedelta = timedelta(milliseconds=1)
    max_concurrency: int = 5  # the service runs 5 queries per identity at once
    requests_per_30s: int = 180  # the service allows 200
    max_attempts: int = 8
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0
    ingestion_lag: timedelta = timedelta(minutes=2)  # leave the newest minutes for the next run
    ingest_margin: timedelta = timedelta(hours=1)  # first run: ingestion windows start this long before --since
    summary_lookback: timedelta = timedelta(hours=3)  # summary mode re-reads these hours for late records
    server_timeout: int = 180  # seconds, sent as Prefer: wait=N
    read_timeout: float = 240.0  # client read timeout: must exceed server_timeout
    connection_timeout: float = 30.0
    batch_rows: int = 200_000  # raw rows gathered across windows per store transaction
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Target:
    """What to query: a workspace (optionally one firewall inside it) or one firewall resource."""

    workspace_id: str | None = None
    resource_id: str | None = None
    firewall: str = ""  # optional _ResourceId filter inside a workspace

    @property
    def scope(self) -> str:
        return f"resource:{self.resource_id.lower()}" if self.resource_id else f"workspace:{self.workspace_id}"


def utc_naive(dt: datetime) -> datetime:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


# -- the query client ----------------------------------------------------------------------------

class RateLimiter:
    """At most `n` query starts in any 30-second span (the service allows 200 per identity)."""

    def __init__(self, n: int, sleep):
        self.n, self.sleep, self.times, self.lock = n, sleep, deque(), threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                while self.times and now - self.times[0] >= 30:
                    self.times.popleft()
                if len(self.times) < self.n:
                    self.times.append(now)
                    return
                wait_s = 30 - (now - self.times[0])
            self.sleep(max(wait_s, 0.01))


@dataclass
class QueryResult:
    table: pa.Table | None  # None: empty (204 or no rows)
    partial: bool
    bytes: int
    retries: int
    partial_reason: str = ""


class Querier:
    """Runs one rendered query with deliberate retry handling. Thread-safe."""

    def __init__(self, credential, target: Target, *, endpoint: str | None, settings: Settings):
        from azure.monitor.query import LogsQueryClient

        self.target = target
        self.settings = settings
        kwargs: dict[str, Any] = {"retry_total": 0}  # retries are handled below, deliberately
        if endpoint:
            kwargs["endpoint"] = endpoint
        self.endpoint = endpoint or "https://api.loganalytics.io"
        self.client = LogsQueryClient(credential, **kwargs)
        self.insecure = self.endpoint.startswith("http://")
        self.limiter = RateLimiter(settings.requests_per_30s, settings.sleep)

    def close(self) -> None:
        self.client.close()

    def run(self, query: str, timespan, *, what: str) -> QueryResult:
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ServiceRequestError,
                                           ServiceResponseError)

        st = self.settings
        retries = 0
        for attempt in range(1, st.max_attempts + 1):
            seen: dict[str, Any] = {}

            def hook(response, _seen=seen):
                http = response.http_response
                _seen["status"] = http.status_code
                _seen["headers"] = http.headers
                try:
                    _seen["bytes"] = len(http.body() or b"")
                except Exception:  # body not loaded (streamed error)
                    _seen["bytes"] = 0

            if isinstance(timespan, tuple):
                timespan = tuple(t.replace(tzinfo=timezone.utc) if isinstance(t, datetime) and t.tzinfo is None else t
                                 for t in timespan)
            kwargs: dict[str, Any] = dict(timespan=timespan, server_timeout=st.server_timeout,
                                          raw_response_hook=hook, read_timeout=st.read_timeout,
                                          connection_timeout=st.connection_timeout)
            if self.insecure:
                kwargs["enforce_https"] = False
            self.limiter.acquire()
            delay = None
            try:
                if self.target.resource_id:
                    res = self.client.query_resource(self.target.resource_id, query, **kwargs)
                else:
                    res = self.client.query_workspace(self.target.workspace_id, query, **kwargs)
            except ClientAuthenticationError as exc:
                raise LogAnalyticsError(credential_sentence(exc)) from None
            except HttpResponseError as exc:
                status = exc.status_code or seen.get("status")
                if status in TRANSIENT_STATUS:
                    delay = self._retry_delay(attempt, exc.response.headers if exc.response is not None else {})
                else:
                    raise LogAnalyticsError(self._permanent_sentence(status, exc, what)) from None
            except (ServiceRequestError, ServiceResponseError) as exc:  # connection failures, read timeouts
                delay = self._retry_delay(attempt, {})
                if attempt == st.max_attempts:
                    raise LogAnalyticsError(
                        f"Log Analytics at {self.endpoint} did not answer ({cause(exc)}) after "
                        f"{attempt} attempts; completed windows are stored, re-run to resume.") from None
            except (AttributeError, TypeError, ValueError):
                if seen.get("status") == 204:  # no data: the service may answer 204 with an empty body
                    return QueryResult(None, False, 0, retries)
                raise
            else:
                return _to_result(res, seen.get("bytes", 0), retries)
            if attempt == st.max_attempts:
                break
            retries += 1
            st.sleep(delay)
        raise LogAnalyticsError(
            f"Log Analytics kept refusing or failing the query for {what} after {st.max_attempts} attempts "
            "(throttled or unavailable); completed windows are stored, re-run later to resume.")

    def _retry_delay(self, attempt: int, headers) -> float:
        return retry_delay(self.settings, attempt, headers)

    def _permanent_sentence(self, status, exc, what: str) -> str:
        where = (f"resource {self.target.resource_id}" if self.target.resource_id
                 else f"workspace {self.target.workspace_id}")
        text = str(getattr(exc, "message", "") or exc)
        inner = _inner_message(exc)
        if status == 401:
            return (f"Log Analytics at {self.endpoint} rejected the credential (401): sign in again "
                    "(az login) or check the service principal's secret and tenant.")
        if status == 403:
            return (f"The signed-in identity may not read {where} (403): grant it the Log Analytics Reader "
                    "role on the workspace (or Reader on the firewall for --resource-id).")
        if status == 404:
            return (f"{where[0].upper() + where[1:]} was not found at {self.endpoint} (404): check the workspace ID "
                    "(a GUID on the workspace's Overview page) and --endpoint for sovereign clouds.")
        if status == 400 and ("Failed to resolve table" in (inner + text) or "resolve table" in (inner + text)):
            return (f"Table {what.split(' ')[0]} does not exist in {where}: send that log category to the workspace in the "
                    "firewall's diagnostic settings, or use --tables auto.")
        if not status:  # no answer from the service: the cause is on this side (credential, network)
            if "Credential" in text:
                return credential_sentence(exc)
            return f"Log Analytics at {self.endpoint} did not answer the query for {what} ({cause(exc)})."
        return f"Log Analytics refused the query for {what} ({status}): {(inner or text).splitlines()[0]}"


def retry_delay(st: Settings, attempt: int, headers) -> float:
    """Seconds to wait before attempt `attempt` + 1: the service's Retry-After (or x-ms-retry-after-ms) when it
    sent one, capped at `max_retry_after`; else exponential backoff with jitter."""
    ra = None
    for key in ("Retry-After", "retry-after", "x-ms-retry-after-ms"):
        v = headers.get(key) if headers else None
        if v:
            try:
                ra = float(v) / (1000 if key.endswith("-ms") else 1)
            except ValueError:
                ra = None
            break
    backoff = min(st.backoff_max, st.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
    return min(ra, st.max_retry_after) if ra is not None else backoff


def _inner_message(exc) -> str:
    err = getattr(exc, "error", None)
    try:
        inner = getattr(err, "innererror", None) or {}
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        details = getattr(err, "details", None) or []
        for d in details:
            m = (d.get("innererror") or {}).get("message") if isinstance(d, dict) else None
            if m:
                return str(m)
    except Exception:  # pragma: no cover - best effort
        pass
    try:
        import json

        body = exc.response.text() if exc.response is not None else ""
        doc = json.loads(body) if body else {}
        e = doc.get("error", {})
        return str((e.get("innererror") or {}).get("message") or e.get("message") or "")
    except Exception:
        return ""


def credential_sentence(exc) -> str:
    return ("No usable Azure credential: sign in with `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
            "AZURE_CLIENT_SECRET (or use a managed / workload identity) "
            f"({cause(exc)}).")


def _to_result(res, nbytes: int, retries: int) -> QueryResult:
    from azure.monitor.query import LogsQueryPartialResult

    partial = isinstance(res, LogsQueryPartialResult)
    tables = res.partial_data if partial else res.tables
    reason = ""
    if partial:
        err = res.partial_error
        details = getattr(err, "details", None) or []
        msgs = [((d.get("innererror") or {}).get("message") or d.get("message", "")) for d in details if isinstance(d, dict)]
        reason = "; ".join(m for m in msgs if m) or getattr(err, "message", "partial result")
    if not tables:
        return QueryResult(None, partial, nbytes, retries, reason)
    t = tables[0]
    return QueryResult(_arrow(t), partial, nbytes, retries, reason)


def _arrow(t) -> pa.Table:
    """A LogsTable as an Arrow table of strings (datetimes ISO, booleans lower case, dynamic as JSON)."""
    import json

    cols = list(zip(*(list(r) for r in t.rows))) if t.rows else [() for _ in t.columns]
    out = {}
    for name, typ, values in zip(t.columns, t.columns_types, cols):
        if typ == "datetime":
            arr = [None if v is None else (utc_naive(v).isoformat() if isinstance(v, datetime) else str(v)) for v in values]
        elif typ == "bool":
            arr = [None if v is None else (("true" if v else "false") if isinstance(v, bool) else str(v).lower())
                   for v in values]
        else:
            arr = [None if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for v in values]
        out[name] = pa.array(arr, pa.string())
    return pa.table(out)
