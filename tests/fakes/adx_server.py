"""A loopback stand-in for an Azure Data Explorer cluster's query endpoint, in the Kusto v2 REST format.

A real HTTP server on 127.0.0.1 that answers what `azure.kusto.data.KustoClient` sends:

* `GET /v1/rest/auth/metadata`: the cluster's cloud metadata (the client asks it once for the token audience);
* `POST /v2/rest/query` with a Bearer token and `{"db", "csl", "properties"}`: a JSON array of frames, as the
  service writes them (Microsoft's "Query V2 HTTP response"): `DataSetHeader`, `DataTable` frames (TableKind
  `QueryProperties`, `PrimaryResult`, `QueryCompletionInformation`), then `DataSetCompletion` with `HasErrors`,
  `Cancelled` and, when something went wrong, `OneApiErrors`.

It does not run KQL: it recognises EgressLens's templates by their marker line, reads the typed parameter
literals back, finds which of the database's tables the query names (the table-name mapping) and refuses any
text that differs from the template rendered with those names. The database holds Log Analytics-shaped
fixture tables (those of `loganalytics_server`, rows answered by the same code) under the names `mapping`
gives them. Like the service it stops a result at its limits (`row_cap` records, `byte_cap` bytes), writing a
OneApiErrors object after the rows sent (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003), an Error row in
QueryCompletionInformation and `HasErrors` in DataSetCompletion; faults inject throttling (429 + Retry-After),
5xx, 401/403, dropped connections, partial failures, cancellations and an error only the final frame reports.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

import polars as pl
from fakes.loganalytics_server import FakeLogAnalytics, Request

from egresslens.sources import kql
from egresslens.sources.loganalytics import RAW_TABLES

LIMIT_TYPE = "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLimitsExceededException"
RECORDS_LIMIT = ("Query execution has exceeded the allowed limits (80DA0003): The results of this query exceed the set "
                 "limit of {cap} records, so not all records were returned (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003). "
                 "See https://aka.ms/kustoquerylimits for more information and possible solutions..")
BYTES_LIMIT = ("Query execution has exceeded the allowed limits (80DA0003): Query result set has exceeded the internal "
               "data size limit {cap} (E_QUERY_RESULT_SET_TOO_LARGE; see https://aka.ms/kustoquerylimits).")
_TYPES = {pl.Utf8: "string", pl.Int64: "long", pl.Int32: "int", pl.Float64: "real", pl.Boolean: "bool"}
METADATA = {"AzureAD": {"LoginEndpoint": "https://login.microsoftonline.com", "LoginMfaRequired": False,
                        "KustoClientAppId": "db662dc1-0cfe-4e1c-a843-19a68e65be58",
                        "KustoClientRedirectUri": "https://microsoft/kustoclient",
                        "KustoServiceResourceId": "https://kusto.kusto.windows.net",
                        "FirstPartyAuthorityUrl": "https://login.microsoftonline.com/f8cdef31-a31e-4b4a-93e4-5f571e91255a"},
            "dSTS": {}}


@dataclass
class AdxFault:
    status: int | None = None  # 429, 500, 503, 401, 403, ...: an HTTP error with a OneApiErrors body
    retry_after: str | None = None
    kind: str | None = None  # "reset": connection closed unanswered; "partial": rows stop at an error that is
    # not a limit; "cancelled": the query was cancelled mid-result; "completion": only DataSetCompletion says so;
    # "warning": a Warning row in QueryCompletionInformation (the result is whole)
    template: str | None = None  # only for queries of this template (None: any)


def one_api_error(code: str, message: str, description: str, typ: str, permanent: bool = False) -> dict:
    return {"error": {"code": code, "message": message, "@type": typ, "@message": description,
                      "@context": {"timestamp": _now(), "serviceAlias": "LOOPBACK", "machineName": "KEngine000000",
                                   "processName": "Kusto.WinSvc.Svc", "clientRequestId": "", "activityId": str(uuid.uuid4())},
                      "@permanent": permanent}}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


@dataclass
class FakeAdx(FakeLogAnalytics):
    """One database (`workspace_id` is its name) of Log Analytics-shaped tables, named in it by `mapping`."""

    mapping: dict[str, str] = field(default_factory=dict)
    byte_cap: int = 64 << 20
    adx_faults: list[AdxFault] = field(default_factory=list)
    metadata_requests: int = 0

    @property
    def database(self) -> str:
        return self.workspace_id

    def handler_base(self) -> type:
        return _AdxHandler

    def db_name(self, table: str) -> str:
        return self.mapping.get(table, table)

    def _take_adx_fault(self, template: str | None) -> AdxFault | None:
        with self.lock:
            for i, f in enumerate(self.adx_faults):
                if f.template is None or f.template == template:
                    return self.adx_faults.pop(i)
        return None

    # -- answering -----------------------------------------------------------------------------------
    def answer_v2(self, body: dict, fault: AdxFault | None) -> tuple[int, dict, bytes, str | None, dict, int]:
        csl, db = body.get("csl") or "", body.get("db")
        name, params, _ = kql.parse_rendered(csl)
        if db != self.database:
            return _http_error(400, one_api_error(
                "BadRequest_EntityNotFound", "Request is invalid and cannot be executed.",
                f"Entity ID '{db}' of kind 'Database' was not found.", "Kusto.Data.Exceptions.EntityNotFoundException",
                True)) + (name, params, 0)
        try:
            template = kql.load(name) if name else None
        except kql.KqlError:
            template = None
        named = _tables_named(template, params, csl) if template is not None else None
        if named is None:
            return _semantic_error("the query text differs from every known template") + (name, params, 0)
        present = {self.db_name(t) for t in self.tables}
        missing = [n for n in named.values() if n not in present]
        if missing and name != "detect":  # `union isfuzzy=true` skips missing tables
            return _semantic_error(f"'table' operator: Failed to resolve table expression named '{missing[0]}'") \
                + (name, params, 0)
        frame = self.result_frame(name, params, None, None)
        if not isinstance(frame, pl.DataFrame):
            return frame[:3] + (name, params, 0)
        if name == "detect":  # the database's own table names, for the tables the query named
            asked = {t: n for t, n in named.items() if n in present}
            frame = frame.filter(pl.col("SourceTable").is_in(list(asked))).with_columns(
                SourceTable=pl.col("SourceTable").replace_strict(asked, default=None))
        columns, rows = _v2_table(frame)
        errors: list[dict] = []
        in_table: dict | None = None
        cancelled = False
        if len(rows) > self.row_cap:
            rows = rows[: self.row_cap]
            in_table = one_api_error("LimitsExceeded", "Request is invalid and cannot be executed.",
                                     RECORDS_LIMIT.format(cap=self.row_cap), LIMIT_TYPE)
        sizes = [len(json.dumps(r, separators=(",", ":"))) for r in rows]
        if sum(sizes) > self.byte_cap:
            total, keep = 0, 0
            for keep, n in enumerate(sizes):
                if total + n > self.byte_cap:
                    break
                total += n
            rows = rows[:keep]
            in_table = one_api_error("LimitsExceeded", "Request is invalid and cannot be executed.",
                                     BYTES_LIMIT.format(cap=self.byte_cap), LIMIT_TYPE)
        kind = fault.kind if fault else None
        if kind == "partial":
            rows = rows[: len(rows) // 2]
            in_table = one_api_error("PartialQueryFailure", "Partial query failure",
                                     "Partial query failure: Service is not available (0x80DA000B)",
                                     "Kusto.Data.Exceptions.PartialQueryFailureException")
        elif kind == "cancelled":
            rows = rows[: len(rows) // 2]
            errors.append(one_api_error("Cancelled", "Query was cancelled",
                                        "Query was cancelled due to a service restart (E_QUERY_CANCELLED)",
                                        "Kusto.Data.Exceptions.QueryCancelledException"))
            cancelled = True
        elif kind == "completion":
            errors.append(one_api_error("InternalServiceError", "Internal service error",
                                        "An admin node failed while the result was written (E_UNEXPECTED)",
                                        "Kusto.Data.Exceptions.KustoServiceException"))
        if in_table is not None:
            errors.insert(0, in_table)
        primary = rows + ([{"OneApiErrors": [in_table]}] if in_table is not None else [])
        frames = [
            {"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0", "IsFragmented": False,
             "ErrorReportingPlacement": "InData"},
            {"FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties", "TableName": "@ExtendedProperties",
             "Columns": [{"ColumnName": "TableId", "ColumnType": "int"}, {"ColumnName": "Key", "ColumnType": "string"},
                         {"ColumnName": "Value", "ColumnType": "dynamic"}],
             "Rows": [[1, "Visualization", {"Visualization": None, "Title": None}]]},
            {"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult",
             "Columns": columns, "Rows": primary},
            {"FrameType": "DataTable", "TableId": 2, "TableKind": "QueryCompletionInformation",
             "TableName": "QueryCompletionInformation", "Columns": _QCI_COLUMNS,
             "Rows": _completion_rows([e for e in errors if kind != "completion" or e is in_table],
                                      warning=kind == "warning")},
            {"FrameType": "DataSetCompletion", "HasErrors": bool(errors), "Cancelled": cancelled,
             **({"OneApiErrors": errors} if errors else {})},
        ]
        return 200, {}, json.dumps(frames, separators=(",", ":")).encode(), name, params, len(rows)


def _tables_named(template, params: dict, csl: str) -> dict[str, str] | None:
    """{Log Analytics table: the name the query gives it} when `csl` is `template` rendered with `params` and some
    table-name mapping (None when the text differs anywhere else)."""
    names = [t for t in RAW_TABLES if re.search(rf"(?<![\w.]){t}(?!\w)", template.text)]
    sentinel = {t: f"zzsentinel{i}" for i, t in enumerate(names)}
    try:
        text = template.render(tables=sentinel, **params)
    except kql.KqlError:
        return None
    pattern = re.escape(text)
    for i, t in enumerate(names):
        token = re.escape(f'["zzsentinel{i}"]')
        first = pattern.find(token)
        if first < 0:
            continue
        pattern = (pattern[:first] + rf'(?P<t{i}>\["[^"\\]*"\]|{t})'
                   + pattern[first + len(token):].replace(token, f"(?P=t{i})"))
    m = re.fullmatch(pattern, csl)
    if m is None:
        return None
    out = {}
    for i, t in enumerate(names):
        got = m.groupdict().get(f"t{i}")
        if got is not None:
            out[t] = got[2:-2] if got.startswith("[") else got
    return out


def _v2_table(frame: pl.DataFrame) -> tuple[list[dict], list[list]]:
    cols, exprs = [], []
    for name, dtype in frame.schema.items():
        if name == "K":
            cols.append({"ColumnName": name, "ColumnType": "dynamic"})
        elif dtype.is_temporal():
            cols.append({"ColumnName": name, "ColumnType": "datetime"})
        else:
            cols.append({"ColumnName": name, "ColumnType": _TYPES.get(dtype.base_type(), "string")})
        # Kusto writes datetimes with seven fractional digits and a Z
        exprs.append(pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f0Z") if dtype.is_temporal() else pl.col(name))
    rows = [list(r) for r in frame.select(exprs).rows()] if frame.width else []
    if "K" in frame.columns:  # a dynamic value is JSON in the v2 format, not text
        k = frame.columns.index("K")
        for r in rows:
            r[k] = json.loads(r[k]) if r[k] is not None else None
    return cols, rows


_QCI_COLUMNS = [{"ColumnName": c, "ColumnType": t} for c, t in (
    ("Timestamp", "datetime"), ("ClientRequestId", "string"), ("ActivityId", "guid"), ("SubActivityId", "guid"),
    ("ParentActivityId", "guid"), ("Level", "int"), ("LevelName", "string"), ("StatusCode", "int"),
    ("StatusCodeName", "string"), ("EventType", "int"), ("EventTypeName", "string"), ("Payload", "string"))]


def _completion_rows(errors: list[dict], warning: bool = False) -> list[list]:
    act = str(uuid.uuid4())
    rows = [[_now(), "", act, act, act, 3, "Warning", 0, "S_OK (0)", 4, "QueryInfo",
             json.dumps({"Count": 1, "Text": "The query was served partly from the results cache"})]] if warning else []
    rows += [[_now(), "", act, act, act, 4, "Info", 0, "S_OK (0)", 4, "QueryInfo",
             json.dumps({"Count": 1, "Text": "Query completed successfully"})],
            [_now(), "", act, act, act, 4, "Info", 0, "S_OK (0)", 5, "WorkloadGroup",
             json.dumps({"Count": 1, "Text": "default"})]]
    for e in errors:
        rows.append([_now(), "", act, act, act, 2, "Error", -2133196797, "LimitsExceeded (0x80DA0003)"
                     if e["error"]["code"] == "LimitsExceeded" else "E_FAIL (0x80004005)", 4, "QueryInfo", json.dumps(e)])
    return rows


def _http_error(status: int, doc: dict) -> tuple[int, dict, bytes]:
    return status, {}, json.dumps(doc).encode()


def _semantic_error(message: str) -> tuple[int, dict, bytes]:
    return _http_error(400, one_api_error(
        "General_BadRequest", "Request is invalid and cannot be executed.",
        f"Request is invalid and cannot be processed: Semantic error: SEM0100: {message}",
        "Kusto.Data.Exceptions.KustoBadRequestException", True))


class _AdxHandler(BaseHTTPRequestHandler):
    server_fake: FakeAdx
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, headers: dict, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-activity-id", str(uuid.uuid4()))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/") == "/v1/rest/auth/metadata":
            self.server_fake.metadata_requests += 1
            self._send(200, {}, json.dumps(METADATA).encode())
        else:
            self._send(404, {}, b"{}")

    def do_POST(self):  # noqa: N802
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            csl = body.get("csl") or "" if isinstance(body, dict) else ""
            template = kql.parse_rendered(csl)[0]
            authorized = self.headers.get("Authorization") == f"Bearer {fake.token}"
            if self.path.split("?")[0] != "/v2/rest/query":
                status, headers, payload = _http_error(404, {"error": {"code": "NotFound", "message": self.path}})
                name, params, n = template, {}, 0
            elif not authorized:
                status, headers, payload = 401, {}, b""
                name, params, n = template, {}, 0
            else:
                fault = fake._take_adx_fault(template)
                if fault is not None and fault.kind == "reset":
                    fake.requests.append(Request(self.path, template, {}, None, 0, 0, 0, True, None, csl))
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault is not None and fault.status:
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    status, _, payload = _http_error(fault.status, one_api_error(
                        "TooManyRequests" if fault.status == 429 else ("Forbidden" if fault.status == 403 else "ServiceError"),
                        "Request is denied due to throttling." if fault.status == 429 else "Injected failure",
                        "The request was denied due to exceeding quota limitations (QueryThrottled)" if fault.status == 429
                        else ("Principal is not authorized to read database" if fault.status == 403 else "Injected failure"),
                        "Kusto.DataNode.Exceptions.KustoRequestThrottledException" if fault.status == 429
                        else "Kusto.Data.Exceptions.KustoServiceException"))
                    name, params, n = template, {}, 0
                else:
                    status, headers, payload, name, params, n = fake.answer_v2(body, fault)
            fake.requests.append(Request(self.path, name, params, None, status, n, len(payload), authorized, None, csl))
            try:
                self._send(status, headers, payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
        finally:
            with fake.lock:
                fake.in_flight -= 1

