"""Pull Azure Firewall logs out of an Azure Data Explorer (or Fabric Eventhouse) database.

The database holds tables with the Log Analytics schema (`AZFWNetworkRule`, ..., `AzureDiagnostics`: filled by
diagnostic settings through Event Hub and a data connection, or by a Log Analytics data export), under the
names the estate chose. `AdxSource` is the Log Analytics reader (`egresslens.sources.loganalytics`: windows on
ingestion time, splitting at the result limits, the watermark, summary mode's front-coded rollups) with two
differences:

* every template is rendered with the table-name mapping (`kql.render(tables=...)`), and the tables the
  detection finds are mapped back;
* queries go through `azure.kusto.data.KustoClient` (POST /v2/rest/query, the v2 frames), with the same
  credential chain (an azure-identity credential, `KustoConnectionStringBuilder.with_azure_token_credential`)
  and the same deliberate retries: throttling (429 + Retry-After), transient 5xx and network failures.

A v2 response is complete only when nothing in it reports an error: an error row inside the primary table
(the service stops a result at its limits, 500,000 records or 64 MB, E_QUERY_RESULT_SET_TOO_LARGE, and
writes a OneApiErrors object after the rows it sent), an Error row of QueryCompletionInformation, or
`HasErrors` / `Cancelled` in the final DataSetCompletion frame. A result over the limits is partial: its
window is split until every piece is whole. Any other incomplete result is retried, then refused. The
incremental state (progress and watermark per window and table) is committed by the ingest loop, never here.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc

from egresslens.sources.azure_errors import cause
from egresslens.sources.loganalytics import RAW_TABLES, LogAnalyticsError, LogAnalyticsSource, Settings
from egresslens.sources.loganalytics_query import QueryResult, RateLimiter, credential_sentence, retry_delay

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# the Log Analytics tables a mapping may rename (AzureDiagnostics included)
MAPPABLE = RAW_TABLES
# a limit of the result (records, bytes) or of the query's resources: a smaller window fits
_LIMITS = re.compile(r"E_QUERY_RESULT_SET_TOO_LARGE|80DA0003|exceeded the (?:allowed|internal)|LimitsExceeded|"
                     r"E_LOW_MEMORY_CONDITION|E_RUNAWAY_QUERY|exceed the set limit", re.I)


class AdxError(LogAnalyticsError):
    """A permanent failure of `ingest adx`, with a message meant for the user as is."""


@dataclass
class AdxTarget:
    """What to query: one database of one cluster (optionally one firewall's records in it)."""

    cluster: str
    database: str
    firewall: str = ""  # optional _ResourceId filter
    resource_id: None = None  # (a Log Analytics target's field: ADX has no resource-centric queries)

    @property
    def scope(self) -> str:
        return f"adx:{cluster_host(self.cluster)}/{self.database}"


def cluster_host(url: str) -> str:
    parsed = urlparse(url)
    return (parsed.netloc or parsed.path).lower()


def check_cluster(url: str) -> str:
    """The cluster URL as the client needs it (https://<name>.<region>.kusto.windows.net, a Fabric Eventhouse
    query URI, or http://127.0.0.1:PORT for a local emulator); ValueError with the reason otherwise."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError(f"--cluster must be the cluster's URL, e.g. https://mycluster.westeurope.kusto.windows.net, "
                         f"not {url!r}")
    if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError("--cluster must use https (plain http is only for a local emulator on this machine)")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise ValueError("--cluster takes the cluster's URL alone (no query string, user or fragment)")
    return f"{parsed.scheme}://{parsed.netloc}"


def parse_mapping(pairs: list[str], config: dict | None = None) -> dict[str, str]:
    """The table-name mapping: `config` (a {"tables": {LA name: ADX name}} document) overlaid by `--table
    LA=ADX` pairs. Names are checked: a Log Analytics table the tool reads, an ADX name ADX allows."""
    from egresslens.sources import kql

    out: dict[str, str] = {}
    items = list(((config or {}).get("tables") or {}).items())
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep:
            raise ValueError(f"--table takes LOGANALYTICS_NAME=ADX_NAME, not {pair!r}")
        items.append((src.strip(), dst.strip()))
    for src, dst in items:
        if src not in MAPPABLE:
            raise ValueError(f"unknown table {src!r} in the table mapping: choose from {', '.join(MAPPABLE)}")
        try:
            kql.check_table_mapping({src: dst})
        except kql.KqlError:
            raise ValueError(f"{dst!r} is not a table name Azure Data Explorer allows (letters, digits, "
                             "spaces, '_', '-', '.'; at most 256)") from None
        out[src] = dst
    return out


class AdxSource(LogAnalyticsSource):
    """`egresslens ingest adx`: the Log Analytics reader over a database whose tables hold the Log Analytics
    schema, named by `tables_map` (Log Analytics name -> ADX name; unmapped tables keep their names)."""

    kind = "adx"
    error = AdxError

    def __init__(self, credential, target: AdxTarget, *, tables_map: dict[str, str] | None = None,
                 settings: Settings | None = None, **kw):
        self.tables_map = dict(tables_map or {})
        self._reverse = {v.lower(): k for k, v in self.tables_map.items()}
        super().__init__(credential, target, settings=settings or default_settings(), **kw)

    def _querier(self, credential, endpoint):
        return KustoQuerier(credential, self.target, settings=self.settings)

    def _render(self, name: str, **values) -> str:
        from egresslens.sources import kql

        return kql.load(name).render(tables=self.tables_map, **values)

    def _detect(self) -> set[str]:
        # `union withsource=` names the database's tables: back to the Log Analytics names the tool reads
        return {self._reverse.get(t.lower(), t) for t in super()._detect()}


# -- the query client ------------------------------------------------------------------------------

class KustoQuerier:
    """Runs one rendered query against a database with `azure.kusto.data.KustoClient`, retrying throttling and
    transient failures deliberately; a result over the service's limits comes back `partial`. Thread-safe."""

    def __init__(self, credential, target: AdxTarget, *, settings: Settings):
        from azure.kusto.data import KustoClient, KustoConnectionStringBuilder

        self.target, self.settings = target, settings
        self.cluster = check_cluster(target.cluster)
        kcsb = KustoConnectionStringBuilder.with_azure_token_credential(self.cluster, credential)
        kcsb.application_for_tracing = "egresslens"
        self.client = KustoClient(kcsb)
        self.limiter = RateLimiter(settings.requests_per_30s, settings.sleep)
        self._seen = threading.local()
        session = getattr(self.client, "_session", None)  # the client's requests.Session: sizes and final frame
        if session is not None and hasattr(session, "hooks"):
            session.hooks.setdefault("response", []).append(self._hook)

    def close(self) -> None:
        self.client.close()

    def _hook(self, response, *args, **kwargs):
        body = response.content or b""
        self._seen.info = {"status": response.status_code, "bytes": len(body), "headers": response.headers,
                           "completion": _completion(body) if response.status_code == 200 else None}
        return response

    def run(self, query: str, timespan=None, *, what: str) -> QueryResult:
        from azure.kusto.data import ClientRequestProperties
        from azure.kusto.data.exceptions import (KustoApiError, KustoAuthenticationError, KustoMultiApiError,
                                                 KustoNetworkError, KustoServiceError, KustoThrottlingError)

        st = self.settings
        retries = 0
        for attempt in range(1, st.max_attempts + 1):
            props = ClientRequestProperties()
            props.set_option(ClientRequestProperties.request_timeout_option_name, timedelta(seconds=st.server_timeout))
            self._seen.info = {}
            self.limiter.acquire()
            delay = None
            try:
                res = self.client.execute_query(self.target.database, query, props)
            except KustoAuthenticationError as exc:
                raise AdxError(credential_sentence(exc.exception if getattr(exc, "exception", None) else exc)) from None
            except KustoMultiApiError as exc:  # an error inside the primary table: the rows stop short
                reason = _api_errors(exc)
                if _LIMITS.search(reason):
                    return QueryResult(None, True, self._seen.info.get("bytes", 0), retries, reason)
                delay = retry_delay(st, attempt, {})
                last = reason
            except KustoThrottlingError as exc:
                delay = retry_delay(st, attempt, _headers(exc) or self._seen.info.get("headers") or {})
                last = "throttled (429)"
            except KustoNetworkError as exc:
                delay = retry_delay(st, attempt, {})
                last = cause(exc)
            except (KustoApiError, KustoServiceError) as exc:
                status = _status(exc) or self._seen.info.get("status")
                if status in TRANSIENT_STATUS:
                    delay = retry_delay(st, attempt, _headers(exc) or {})
                    last = f"HTTP {status}"
                else:
                    raise AdxError(self._permanent_sentence(status, exc, what)) from None
            else:
                info = self._seen.info
                problem = _incomplete(res, info.get("completion"))
                if problem is None:
                    return _to_result(res, info.get("bytes", 0), retries)
                if _LIMITS.search(problem):
                    return QueryResult(None, True, info.get("bytes", 0), retries, problem)
                delay = retry_delay(st, attempt, {})
                last = problem
            if attempt == st.max_attempts:
                break
            retries += 1
            st.sleep(delay)
        raise AdxError(
            f"Azure Data Explorer at {self.cluster} kept refusing or failing the query for {what} after "
            f"{st.max_attempts} attempts ({last.splitlines()[0][:200]}); completed windows are stored, re-run later "
            "to resume.")

    def _permanent_sentence(self, status, exc, what: str) -> str:
        db, where = self.target.database, self.cluster
        text = _api_errors(exc) or str(getattr(exc, "message_text", "") or exc)
        if status == 401:
            return (f"Azure Data Explorer at {where} rejected the credential (401): sign in again (az login) or "
                    "check the service principal's secret and tenant.")
        if status == 403:
            return (f"The signed-in identity may not read database {db} on {where} (403): grant it the Database "
                    "Viewer role on the database (or AllDatabasesViewer on the cluster).")
        if "of kind 'Database'" in text or (status == 404 and "endpoint" in text):
            return (f"Database {db} was not found on {where}: check --database (the database's name, case "
                    "sensitive) and --cluster (the cluster's query URI).")
        m = re.search(r"Failed to resolve (?:table|table or column) expression named '([^']+)'", text)
        if m:
            name = m.group(1)
            return (f"Table {name} does not exist in database {db}: map the Log Analytics name to the database's "
                    "table with --table (e.g. --table AZFWNetworkRule=MyNetworkTable), or use --tables auto.")
        if not status:
            return f"Azure Data Explorer at {where} did not answer the query for {what} ({cause(exc)})."
        first = text.strip().splitlines()[0] if text.strip() else "no reason given"
        return f"Azure Data Explorer refused the query for {what} ({status}): {first[:300]}"


def _status(exc) -> int | None:
    resp = getattr(exc, "http_response", None)
    if resp is None and exc.args[1:]:
        resp = exc.args[1]
    return getattr(resp, "status_code", None) or getattr(resp, "status", None)


def _headers(exc) -> Any:
    resp = getattr(exc, "http_response", None)
    if resp is None and exc.args[1:]:
        resp = exc.args[1]
    return getattr(resp, "headers", None)


def _api_errors(exc) -> str:
    """The service's own words in a Kusto error: each OneApiError's @message (or message)."""
    errs = exc.get_api_errors() if hasattr(exc, "get_api_errors") else (
        [exc.get_api_error()] if hasattr(exc, "get_api_error") else [])
    texts = [e.description or e.message or e.code or "" for e in errs]
    return "; ".join(t for t in texts if t)


def _completion(body: bytes) -> dict | None:
    """The final DataSetCompletion frame of a v2 response (the SDK's non-streaming reader drops it)."""
    i = body.rfind(b'"DataSetCompletion"')
    if i < 0:
        return None
    start = body.rfind(b"{", 0, i)
    end = body.rfind(b"]")
    try:
        frame = json.loads(body[start:end])
    except ValueError:
        return None
    return frame if isinstance(frame, dict) and frame.get("FrameType") == "DataSetCompletion" else None


def _incomplete(res, completion: dict | None) -> str | None:
    """Why a v2 response that parsed is not whole (None: it is): Critical or Error rows (Level 1, 2) of
    QueryCompletionInformation, or HasErrors / Cancelled in DataSetCompletion. Warnings (3) do not count."""
    reasons = []
    for t in res.tables:
        if t.table_kind is not None and t.table_kind.value == "QueryCompletionInformation":
            names = [c.column_name for c in t.columns]
            for row in t.raw_rows:
                rec = dict(zip(names, row))
                if isinstance(rec.get("Level"), int) and rec["Level"] <= 2:
                    reasons.append(_payload_message(rec.get("Payload")) or "the query completed with errors")
    if completion is not None and (completion.get("HasErrors") or completion.get("Cancelled")):
        for e in completion.get("OneApiErrors") or []:
            err = (e or {}).get("error") or {}
            reasons.append(str(err.get("@message") or err.get("message") or err.get("code") or ""))
        if completion.get("Cancelled"):
            reasons.append("the query was cancelled")
        reasons = reasons or ["the query completed with errors"]
    return "; ".join(dict.fromkeys(r for r in reasons if r)) or None


def _payload_message(payload) -> str:
    try:
        doc = json.loads(payload) if isinstance(payload, str) else payload
    except ValueError:
        return str(payload)
    if isinstance(doc, dict):
        err = doc.get("error") or {}
        return str(err.get("@message") or err.get("message") or doc.get("Message") or doc)
    return str(doc)


_DATETIME = r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?\d*Z?$"


def _to_result(res, nbytes: int, retries: int) -> QueryResult:
    primary = res.primary_results
    if not primary:
        return QueryResult(None, False, nbytes, retries)
    return QueryResult(arrow(primary[0]), False, nbytes, retries)


def arrow(table) -> pa.Table:
    """A v2 result table as an Arrow table of text, column by column, in the form the Log Analytics reader
    gives (datetimes ISO 8601 to the microsecond without a zone, booleans lower case, dynamic values as JSON)."""
    rows = table.raw_rows
    cols = list(zip(*rows)) if rows else [() for _ in table.columns]
    out = {}
    for col, values in zip(table.columns, cols):
        typ = (col.column_type or "string").lower()
        if typ in ("dynamic", "object"):
            arr = pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                            for v in values], pa.string())
        elif typ in ("bool", "boolean"):
            arr = pa.array(values, pa.bool_()).cast(pa.string()) if all(
                v is None or isinstance(v, bool) for v in values) else pa.array(
                [None if v is None else str(v).lower() for v in values], pa.string())
        elif typ in ("string", "guid", "uniqueid"):
            arr = pa.array(values, pa.string())
        elif typ in ("datetime", "date"):
            arr = pc.replace_substring_regex(pa.array(values, pa.string()), _DATETIME, r"\1\2")
        else:  # long, int, real, decimal, timespan: their text
            arr = pa.array([None if v is None else str(v) for v in values], pa.string())
        out[col.column_name] = arr
    return pa.table(out)


def default_settings(**overrides) -> Settings:
    """The reader's settings for Azure Data Explorer: queued ingestion commits in batches (up to 5 minutes by
    default), so the newest 10 minutes of ingestion time are left for the next run."""
    return Settings(**{"ingestion_lag": timedelta(minutes=10), **overrides})

