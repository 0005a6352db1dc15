"""A loopback stand-in for the Log Analytics query API (and the metrics getBatch API).

A real HTTP server on 127.0.0.1 that speaks what the real `LogsQueryClient` sends:
`POST /v1/workspaces/{id}/query` and `POST /v1/{resourceId}/query`, a Bearer token, a JSON body
`{"query", "timespan", "workspaces"}`; it answers `{"tables": [{"name", "columns", "rows"}]}`.
It does not run KQL: it recognises EgressLens's own templates by their marker line, reads the
typed parameter literals back (and refuses any query whose text differs from the template outside
the declaration), and serves fixture rows of the requested table and window — with the service's
row cap (partial-result body exactly as the service sends it), injected 429/5xx/204/slow replies,
and a log of every request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import polars as pl

from egresslens.sources import kql, summary_wire

TOKEN = "loopback-test-token"
ROW_CAP_MESSAGE = (
    "Query result set has exceeded the internal record count limit {cap} "
    "(E_QUERY_RESULT_SET_TOO_LARGE; see https://aka.ms/kustoquerylimits)"
)
_KQL_TYPES = {pl.Utf8: "string", pl.Int64: "long", pl.Int32: "int", pl.Float64: "real", pl.Boolean: "bool"}


class FakeCredential:
    """A TokenCredential that accepts any scope (the loopback audience is http://127.0.0.1:PORT)."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.scopes: list[tuple] = []

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def close(self) -> None:  # a client that owns the credential (azure-kusto-data's) closes it
        pass


@dataclass
class Fault:
    status: int | None = None  # 429, 500, 503, 504, 204, 403, ...
    retry_after: str | None = None
    delay: float = 0.0  # seconds before answering (slow response)
    template: str | None = None  # only for queries of this template (None: any)


@dataclass
class Request:
    path: str
    template: str | None
    params: dict
    timespan: str | None
    status: int
    rows: int
    bytes: int
    authorized: bool
    prefer: str | None
    query: str = ""  # the KQL text exactly as the client sent it


@dataclass
class FakeLogAnalytics:
    """Fixture tables (polars frames with the table's columns, `TimeGenerated`, `_ResourceId` and a
    hidden `_Ingest` datetime for ingestion_time()) served for one workspace."""

    workspace_id: str
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    row_cap: int = 500_000
    token: str = TOKEN
    faults: list[Fault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # resource id (lower) -> {metric: [(time, dims, values)]}
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FakeLogAnalytics":
        fake = self

        class Handler(self.handler_base()):
            server_fake = fake

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def handler_base(self) -> type:
        """The request handler this server runs (a subclass of the fake answers in its own format)."""
        return _Handler

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def add_rows(self, table: str, frame: pl.DataFrame) -> None:
        with self.lock:
            old = self.tables.get(table)
            self.tables[table] = frame if old is None else pl.concat([old, frame], how="diagonal_relaxed")

    def query_requests(self, template_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if (r.template or "").startswith(template_prefix)]

    # -- answering ---------------------------------------------------------------------------------
    def _take_fault(self, template: str | None) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.template is None or f.template == template:
                    return self.faults.pop(i)
        return None

    def answer_query(self, path: str, body: dict, headers) -> tuple[int, dict[str, str], bytes, str | None, dict, int]:
        query = body.get("query") or ""
        name, params, skel = kql.parse_rendered(query)
        m = re.fullmatch(r"/v1/workspaces/([^/]+)/query", path)
        resource = None
        if m is None:
            rm = re.fullmatch(r"/v1(/subscriptions/.+)/query", path, re.I)
            if rm is None:
                return _error(404, "PathNotFoundError", f"The requested path does not exist: {path}") + (name, params, 0)
            resource = rm.group(1).lower()
        elif m.group(1) != self.workspace_id:
            return _error(404, "WorkspaceNotFoundError",
                          f"The workspace could not be found: {m.group(1)}") + (name, params, 0)
        try:
            template = kql.load(name) if name else None
        except kql.KqlError:
            template = None
        if template is None or skel != kql.skeleton(template):
            return _error(400, "BadArgumentError", "The request had some invalid properties",
                          "query text differs from every known template") + (name, params, 0)
        span = _parse_timespan(body.get("timespan"))
        frame = self.result_frame(name, params, span, resource)
        if not isinstance(frame, pl.DataFrame):
            return frame + (name, params, 0)
        doc: dict = {}
        rows = frame.height
        if frame.height > self.row_cap:
            frame = frame.head(self.row_cap)
            doc["error"] = {
                "code": "PartialError",
                "message": "There were some errors when processing your query.",
                "details": [{"code": "EngineError", "message": "Something went wrong processing your query on the server.",
                             "innererror": {"code": "-2133196797",
                                            "message": ROW_CAP_MESSAGE.format(cap=self.row_cap)}}],
            }
        doc = {"tables": [_table_json(frame)], **doc}
        # compact, as the service writes it (no blank after a separator: the service's bodies quoted in
        # azure-sdk-for-js's monitor-query, and Microsoft's published examples)
        return 200, {}, json.dumps(doc, separators=(",", ":")).encode(), name, params, min(rows, self.row_cap)

    def result_frame(self, name: str, params: dict, span, resource: str | None):
        """What the template `name` returns for these parameters: a frame, or (status, headers, body) of an error."""
        if name.startswith("raw_"):
            table = name[4:]
            if table not in self.tables:
                return _error(400, "BadArgumentError", "The request had some invalid properties",
                              f"'where' operator: Failed to resolve table or column expression named '{table}'")
            frame = self._window(self.tables[table], params, span, resource, ingest=True)
            frame = frame.with_columns(IngestionTime=pl.col("_Ingest")).drop("_Ingest")
            if table == "AzureDiagnostics":
                frame = frame.select("TimeGenerated", "Category", "OperationName", "Resource", "_ResourceId",
                                     "msg_s", "IngestionTime")
        elif name == "detect":
            counts = []
            for table, df in sorted(self.tables.items()):
                n = self._window(df, params, span, resource, ingest=True).height
                if n:
                    counts.append((table, n))
            frame = pl.DataFrame({"SourceTable": [c[0] for c in counts], "Rows": [c[1] for c in counts]},
                                 schema={"SourceTable": pl.Utf8, "Rows": pl.Int64})
        elif name == "summary_flows":
            frame = wire_form(self._summary_flows(params, span, resource), summary_wire.FLOWS)
        elif name == "summary_dns":
            frame = wire_form(self._summary_dns(params, span, resource), summary_wire.DNS)
        elif name in ("summary_flows_legacy", "summary_dns_legacy"):
            frame = wire_form(self._summary_legacy(name, params, span, resource),
                              summary_wire.FLOWS if name == "summary_flows_legacy" else summary_wire.DNS)
        else:
            return _error(400, "BadArgumentError", "unsupported template", name)
        return frame

    def _window(self, df: pl.DataFrame, p: dict, span, resource: str | None, ingest: bool) -> pl.DataFrame:
        cond = (pl.col("TimeGenerated") >= p["time_start"]) & (pl.col("TimeGenerated") < p["time_end"])
        if span is not None:
            cond &= (pl.col("TimeGenerated") >= span[0]) & (pl.col("TimeGenerated") < span[1])
        if ingest:
            cond &= (pl.col("_Ingest") >= p["ingest_start"]) & (pl.col("_Ingest") < p["ingest_end"])
        if p.get("firewall"):  # `=~`: equal ignoring case
            cond &= pl.col("_ResourceId").str.to_lowercase() == p["firewall"].lower()
        if resource:
            cond &= pl.col("_ResourceId").str.to_lowercase() == resource
        return df.filter(cond)

    def _summary_flows(self, p, span, resource) -> pl.DataFrame:
        parts = []
        for table, kind in (("AZFWApplicationRule", "application"), ("AZFWNetworkRule", "network"), ("AZFWNatRule", "nat")):
            if table not in self.tables:
                continue
            df = self._window(self.tables[table], p, span, resource, ingest=False)
            cols = df.columns
            parts.append(df.select(
                "TimeGenerated", "_ResourceId", "Protocol", "SourceIp",
                pl.lit(kind).alias("Kind"),
                (pl.col("Fqdn") if "Fqdn" in cols else pl.lit("")).alias("DestName"),
                (pl.col("DestinationIp") if "DestinationIp" in cols else pl.lit("")).alias("DestIp"),
                pl.col("DestinationPort").cast(pl.Int64),
                (pl.col("Action") if kind != "nat" else pl.lit("DNAT")).alias("Act"),
                (pl.col("ActionReason") if "ActionReason" in cols else pl.lit("")).alias("ActionReason"),
                "Policy", "RuleCollectionGroup", "RuleCollection", "Rule",
            ))
        if not parts:
            return pl.DataFrame()
        df = pl.concat(parts)
        return (
            df.with_columns(
                Hour=pl.col("TimeGenerated").dt.truncate("1h"), Firewall=pl.col("_ResourceId").str.to_lowercase(),
                Protocol=pl.col("Protocol").str.to_uppercase(), DestinationIp=pl.col("DestIp"),
                DestinationFqdn=pl.col("DestName").str.strip_chars_end(".").str.to_lowercase(),
                Action=pl.col("Act"), Rule=pl.col("Rule").str.strip_chars(),
            )
            .group_by("Hour", "Firewall", "Kind", "Protocol", "SourceIp", "DestinationIp", "DestinationFqdn",
                      "DestinationPort", "Action", "ActionReason", "Policy", "RuleCollectionGroup",
                      "RuleCollection", "Rule")
            .agg(Hits=pl.len().cast(pl.Int64), FirstSeen=pl.col("TimeGenerated").min(),
                 LastSeen=pl.col("TimeGenerated").max())
            .sort("Hour", "SourceIp", "DestinationFqdn", "DestinationIp", "DestinationPort")
        )

    def _summary_dns(self, p, span, resource) -> pl.DataFrame:
        if "AZFWDnsQuery" not in self.tables:
            return pl.DataFrame()
        df = self._window(self.tables["AZFWDnsQuery"], p, span, resource, ingest=False)
        failed = (pl.col("ErrorMessage").str.strip_chars(" ") != "") | (pl.col("ErrorNumber").fill_null(0) != 0)
        return (
            df.with_columns(
                Hour=pl.col("TimeGenerated").dt.truncate("1h"), Firewall=pl.col("_ResourceId").str.to_lowercase(),
                QueryName=pl.col("QueryName").str.strip_chars_end(".").str.to_lowercase(),
                QueryType=pl.col("QueryType").str.strip_chars_end(":").str.to_uppercase(),
                SourceIp=pl.when(failed).then(pl.lit("")).otherwise(pl.col("SourceIp")),
                ResponseCode=pl.when(failed).then(pl.lit("")).otherwise(pl.col("ResponseCode").str.to_uppercase()),
                Duration=pl.when(failed).then(None).otherwise(pl.col("RequestDurationSecs").cast(pl.Float64)),
                Failed=failed,
            )
            .group_by("Hour", "Firewall", "SourceIp", "QueryName", "QueryType", "ResponseCode")
            .agg(Queries=pl.len().cast(pl.Int64), Errors=pl.col("Failed").sum().cast(pl.Int64),
                 TotalDurationS=pl.col("Duration").sum(), MaxDurationS=pl.col("Duration").max(),
                 FirstSeen=pl.col("TimeGenerated").min(), LastSeen=pl.col("TimeGenerated").max())
            .sort("Hour", "SourceIp", "QueryName")
        )

    def _summary_legacy(self, name, p, span, resource) -> pl.DataFrame:
        """What summary_flows_legacy / summary_dns_legacy return: the AzureDiagnostics text of the window
        parsed by the normaliser's own grammars (egresslens.normalise, in DuckDB over the rows as JSON
        records) and rolled up in SQL, every parsed row counted (Kusto's count(), no de-duplication),
        refused rows left out, empty strings where Kusto has no string."""
        import duckdb

        from egresslens import normalise

        if "AzureDiagnostics" not in self.tables:
            return pl.DataFrame()
        df = self._window(self.tables["AzureDiagnostics"], p, span, resource, ingest=False)
        cats = (["AzureFirewallApplicationRule", "AzureFirewallNetworkRule"] if name == "summary_flows_legacy"
                else ["AzureFirewallDnsProxy"])
        df = df.filter(pl.col("Category").is_in(cats))
        if df.height == 0:
            return pl.DataFrame()
        records = df.select(
            rid=pl.int_range(1, df.height + 1, dtype=pl.Int64), source=pl.lit("fake"),
            position=pl.int_range(1, df.height + 1, dtype=pl.Int64), record_index=pl.lit(None, pl.Int32),
            raw=pl.struct(TimeGenerated=pl.col("TimeGenerated").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
                          Category="Category", OperationName="OperationName", Resource="Resource",
                          _ResourceId="_ResourceId", msg_s="msg_s", Type=pl.lit("AzureDiagnostics")).struct.json_encode(),
        )
        con = duckdb.connect()
        try:
            con.register("batch", records.to_arrow())
            built = normalise.normalise_batch(con)
            if ("flows" if name == "summary_flows_legacy" else "dns_queries") not in built:
                return pl.DataFrame()
            if name == "summary_flows_legacy":
                sql = """
                    SELECT date_trunc('hour', time) AS Hour, coalesce(firewall, '') AS Firewall, kind AS Kind,
                           coalesce(protocol, '') AS Protocol, coalesce(source_ip, '') AS SourceIp,
                           coalesce(destination_ip, '') AS DestinationIp,
                           coalesce(destination_fqdn, '') AS DestinationFqdn,
                           destination_port::BIGINT AS DestinationPort, action AS Action,
                           coalesce(action_reason, '') AS ActionReason, coalesce(policy, '') AS Policy,
                           coalesce(rule_collection_group, '') AS RuleCollectionGroup,
                           coalesce(rule_collection, '') AS RuleCollection, coalesce(rule, '') AS Rule,
                           count(*)::BIGINT AS Hits, min(time) AS FirstSeen, max(time) AS LastSeen
                    FROM canon_flows WHERE reject_reason IS NULL GROUP BY ALL"""
            else:
                sql = """
                    SELECT date_trunc('hour', time) AS Hour, coalesce(firewall, '') AS Firewall,
                           coalesce(source_ip, '') AS SourceIp, coalesce(query_name, '') AS QueryName,
                           coalesce(query_type, '') AS QueryType, coalesce(response_code, '') AS ResponseCode,
                           count(*)::BIGINT AS Queries,
                           count(*) FILTER (WHERE error_message IS NOT NULL OR coalesce(error_number, 0) <> 0)::BIGINT
                               AS Errors,
                           sum(duration_s) AS TotalDurationS, max(duration_s) AS MaxDurationS,
                           min(time) AS FirstSeen, max(time) AS LastSeen
                    FROM canon_dns WHERE reject_reason IS NULL GROUP BY ALL"""
            return pl.from_arrow(con.sql(sql).to_arrow_table()).sort(pl.all().exclude("^.*Seen$"), nulls_last=True)
        finally:
            con.close()


def _error(status: int, code: str, message: str, inner: str | None = None):
    err: dict = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": code, "message": inner}
    return status, {}, json.dumps({"error": err}).encode()


def wire_form(frame: pl.DataFrame, wire: summary_wire.Wire) -> pl.DataFrame:
    """What the tail of a summary template (summary_wire.kql_tail) makes of its `summarize` output:
    rows sorted by key, each with P (leading key columns shared with the row before), K (the rest of
    its key, a dynamic array: JSON text on the wire, as Log Analytics sends dynamic values), the
    counts, and First / Last in whole microseconds."""
    if frame.height == 0:
        return pl.DataFrame(schema={"P": pl.Int64, "K": pl.Utf8, **{c: pl.Int64 for c in wire.counts},
                                    "First": pl.Int64, "Last": pl.Int64})
    f = frame.sort(list(wire.key), nulls_last=False)
    keys = f.select(pl.col("Hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ") if c == "Hour" else pl.col(c)
                    for c in wire.key).rows()
    ps, ks, prev = [], [], None
    for row in keys:
        p = 0 if prev is None else next(i for i, (a, b) in enumerate(zip(row, prev)) if a != b or i == len(row) - 1)
        ps.append(p)
        ks.append(json.dumps(list(row[p:]), separators=(",", ":"), ensure_ascii=False))
        prev = row
    first = (pl.col("FirstSeen") - pl.col("Hour")).dt.total_microseconds()
    return f.select(
        pl.Series("P", ps, pl.Int64), pl.Series("K", ks, pl.Utf8), *wire.counts,
        first.alias("First"), ((pl.col("LastSeen") - pl.col("Hour")).dt.total_microseconds() - first).alias("Last"))


def _table_json(frame: pl.DataFrame) -> dict:
    cols, exprs = [], []
    for name, dtype in frame.schema.items():
        if name == "K":  # a dynamic column: Log Analytics sends its value as JSON text
            cols.append({"name": name, "type": "dynamic"})
            exprs.append(pl.col(name))
        elif dtype.is_temporal():
            cols.append({"name": name, "type": "datetime"})
            exprs.append(pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
        else:
            cols.append({"name": name, "type": _KQL_TYPES.get(dtype.base_type(), "string")})
            exprs.append(pl.col(name))
    rows = frame.select(exprs).rows() if frame.width else []
    return {"name": "PrimaryResult", "columns": cols, "rows": rows}


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).replace(tzinfo=None)


def _parse_timespan(ts: str | None):
    if not ts:
        return None
    if "/" in ts:
        a, b = ts.split("/", 1)
        start = _parse_time(a)
        if b.startswith("P"):
            return start, start + timedelta(seconds=float(b[2:-1]))
        return start, _parse_time(b)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now - timedelta(seconds=float(ts[2:-1])), now


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeLogAnalytics
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
        else:
            payload = b""
            self.send_header("Content-Length", "0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def do_POST(self):  # noqa: N802
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlparse(self.path)
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            authorized = self.headers.get("Authorization") == f"Bearer {fake.token}"
            if "metrics:getBatch" in url.path:
                status, headers, payload = self._metrics(url, raw, authorized)
                fake.requests.append(Request(url.path, "metrics:getBatch", parse_qs(url.query), None, status, 0,
                                             len(payload), authorized, None))
                self._send(status, headers, payload)
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            template = kql.parse_rendered(body.get("query") or "")[0] if isinstance(body, dict) else None
            fault = fake._take_fault(template)
            if not authorized:
                status, headers, payload = _error(401, "AuthenticationFailed", "Authentication failed: bad token")
                name, params, n = template, {}, 0
            elif fault is not None and fault.status is not None and fault.status != 200:
                if fault.delay:
                    time.sleep(fault.delay)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                if fault.status == 204:
                    status, payload = 204, b""
                elif fault.status == 429:
                    status, _, payload = _error(429, "ThrottledError", "Too many requests. Retry later.")
                else:
                    status, _, payload = _error(fault.status, "ServiceError", "Injected failure")
                name, params, n = template, {}, 0
            else:
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                status, headers, payload, name, params, n = fake.answer_query(url.path, body, self.headers)
            fake.requests.append(Request(url.path, name, params, body.get("timespan") if isinstance(body, dict) else None,
                                         status, n, len(payload), authorized, self.headers.get("Prefer"),
                                         (body.get("query") or "") if isinstance(body, dict) else ""))
            try:
                self._send(status, headers, payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
        finally:
            with fake.lock:
                fake.in_flight -= 1

    # -- metrics:getBatch (azure-monitor-querymetrics) ------------------------------------------
    def _metrics(self, url, raw: bytes, authorized: bool):
        fake = self.server_fake
        if not authorized:
            return _error(401, "AuthenticationFailed", "Authentication failed: bad token")
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(raw or b"{}")
        start, end = _parse_time(q["starttime"]), _parse_time(q["endtime"])
        names = q.get("metricnames", "").split(",")
        aggs = [a.lower() for a in q.get("aggregation", "average").split(",")]
        interval = q.get("interval", "PT1M")
        values = []
        for rid in body.get("resourceids", []):
            series = fake.metrics.get(rid.lower())
            if series is None:
                return _error(404, "ResourceNotFound", f"The resource {rid} was not found")
            metrics = []
            for mname in names:
                points = series.get(mname)
                if points is None:
                    return _error(400, "BadRequest", f"Failed to find metric configuration for provider: "
                                                     f"Microsoft.Network, resource Type: azureFirewalls, metric: {mname}")
                unit, rows = points
                by_dim: dict[tuple, list] = {}
                for t, dims, vals in rows:
                    if start <= t < end:
                        by_dim.setdefault(tuple(sorted(dims.items())), []).append(
                            {"timeStamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             **{a: vals.get(a) for a in aggs if vals.get(a) is not None}})
                metrics.append({
                    "id": f"{rid}/providers/Microsoft.Insights/metrics/{mname}", "type": "Microsoft.Insights/metrics",
                    "name": {"value": mname, "localizedValue": mname}, "displayDescription": "", "unit": unit,
                    "errorCode": "Success",
                    "timeseries": [{"metadatavalues": [{"name": {"value": k, "localizedValue": k}, "value": v}
                                                       for k, v in dims], "data": data}
                                   for dims, data in by_dim.items()],
                })
            values.append({"starttime": q["starttime"], "endtime": q["endtime"], "interval": interval,
                           "namespace": q.get("metricnamespace"), "resourceregion": "westeurope",
                           "resourceid": rid, "value": metrics})
        return 200, {}, json.dumps({"values": values}).encode()


# -- fixtures from the simulator -------------------------------------------------------------------

def fixture_tables(hours: int = 2, events_per_hour: int = 2_000, seed: int = 7, start: datetime | None = None,
                   latency_s: tuple[int, int] = (20, 600), tables: tuple[str, ...] | None = None,
                   scenario=None) -> dict[str, pl.DataFrame]:
    """Simulated AZFW* tables as Log Analytics holds them (TimeGenerated, _ResourceId, Type, TenantId,
    the table's columns) plus `_Ingest` = TimeGenerated + a deterministic ingestion latency. `scenario`:
    the simulator's result for these arguments, when the caller already has it."""
    from egresslens.simulate import generate
    from egresslens.simulate.render import RESOURCE_ID, TENANT_ID, _prepared, _split

    sc = scenario or generate(hours=hours, events_per_hour=events_per_hour, seed=seed, start=start)
    frames = {"flows": sc.flows, "dns_queries": sc.dns_queries, "threats": sc.threats}
    out = {}
    lo, hi = latency_s
    for cat, df in _split(frames).items():
        if df.height == 0 or (tables and cat not in tables):
            continue
        p = _prepared(cat, df)
        lat = (pl.int_range(0, p.height, eager=True).hash(seed) % max(hi - lo, 1) + lo).cast(pl.Int64)
        p = p.with_columns(
            TimeGenerated=pl.col("time").cast(pl.Datetime("us")),
            _ResourceId=pl.lit(RESOURCE_ID.lower()), Type=pl.lit(cat), TenantId=pl.lit(TENANT_ID),
        ).with_columns(_Ingest=pl.col("TimeGenerated") + pl.duration(seconds=lat)).drop("time")
        out[cat] = p
    return out


def legacy_fixture(hours: int = 2, events_per_hour: int = 2_000, seed: int = 7, start: datetime | None = None,
                   latency_s: tuple[int, int] = (20, 600), tables: tuple[str, ...] | None = None) -> dict[str, pl.DataFrame]:
    """The simulated day of `fixture_tables` (same arguments, same events, same ingestion latency per
    event) as a legacy workspace holds it: one `AzureDiagnostics` table with the firewall's text in
    `msg_s` (the simulator's legacy rendering), `TimeGenerated`, `Category`, `OperationName`,
    `Resource`, `ResourceId` (ARM case, as AzureDiagnostics has it in many workspaces, though Microsoft's
    table reference does not list it: no query reads it), `_ResourceId` (lower case, the documented column
    every query filters and groups on) and the hidden `_Ingest`."""
    from egresslens.simulate import generate
    from egresslens.simulate.render import (
        FIREWALL_NAME,
        LEGACY_CATEGORY,
        RESOURCE_ID,
        _split,
        legacy_messages,
    )

    sc = generate(hours=hours, events_per_hour=events_per_hour, seed=seed, start=start)
    frames = {"flows": sc.flows, "dns_queries": sc.dns_queries, "threats": sc.threats}
    parts = []
    lo, hi = latency_s
    for cat, df in _split(frames).items():
        if df.height == 0 or (tables and cat not in tables):
            continue
        m = legacy_messages(cat, df, seed, 0, cat, "l")
        lat = (pl.int_range(0, m.height, eager=True).hash(seed) % max(hi - lo, 1) + lo).cast(pl.Int64)
        parts.append(m.select(
            TimeGenerated=pl.col("time").cast(pl.Datetime("us")),
            Category=pl.col("operationName").replace_strict(LEGACY_CATEGORY), OperationName="operationName",
            Resource=pl.lit(FIREWALL_NAME.upper()), ResourceId=pl.lit(RESOURCE_ID),
            _ResourceId=pl.lit(RESOURCE_ID.lower()), msg_s="msg",
            Type=pl.lit("AzureDiagnostics"),
        ).with_columns(_Ingest=pl.col("TimeGenerated") + pl.duration(seconds=lat)))
    return {"AzureDiagnostics": pl.concat(parts)} if parts else {}


def metric_series(resource_id: str, start: datetime, minutes: int) -> dict:
    """A deterministic hour of firewall metrics: SNAT utilisation ramps, health dips when it is hot."""
    rows: dict[str, tuple[str, list]] = {
        "SNATPortUtilization": ("Percent", []), "Throughput": ("BitsPerSecond", []),
        "ApplicationRuleHit": ("Count", []), "NetworkRuleHit": ("Count", []),
        "FirewallHealth": ("Percent", []), "DataProcessed": ("Bytes", []),
    }
    for i in range(minutes):
        t = start + timedelta(minutes=i)
        snat = min(100.0, 40.0 + i * 1.0)
        for proto in ("TCP", "UDP"):
            rows["SNATPortUtilization"][1].append((t, {"Protocol": proto}, {"average": snat * (1 if proto == "TCP" else 0.1),
                                                                         "maximum": min(100.0, snat + 3)}))
        rows["Throughput"][1].append((t, {}, {"average": 1e8 + i * 1e6}))
        rows["ApplicationRuleHit"][1].append((t, {"Status": "Allow"}, {"total": 100.0 + i}))
        rows["NetworkRuleHit"][1].append((t, {"Status": "Allow"}, {"total": 50.0 + i}))
        rows["FirewallHealth"][1].append((t, {}, {"average": 50.0 if snat > 95 else 100.0}))
        rows["DataProcessed"][1].append((t, {}, {"total": 7.5e8 + i}))
    return {resource_id.lower(): rows}
