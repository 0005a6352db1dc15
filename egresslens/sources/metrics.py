"""Azure Firewall platform metrics through `azure.monitor.querymetrics.MetricsClient` into `metrics`.

SNATPortUtilization is split by its Protocol dimension (`filter="Protocol eq '*'"`); the other
metrics are read whole. Rows are keyed by a deterministic `metric_id` (firewall, metric, dimension,
time): re-reading a range replaces its points. The client's retries handle 429 with Retry-After
and 5xx; credentials and access problems become `MetricsError` with one sentence.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from egresslens import store

NAMESPACE = "Microsoft.Network/azureFirewalls"
# metric -> (aggregations, dimension filter)
METRICS: dict[str, tuple[list[str], str | None]] = {
    "SNATPortUtilization": (["Average", "Maximum"], "Protocol eq '*'"),
    "Throughput": (["Average"], None),
    "ApplicationRuleHit": (["Total"], None),
    "NetworkRuleHit": (["Total"], None),
    "FirewallHealth": (["Average"], None),
    "DataProcessed": (["Total"], None),
}


class MetricsError(RuntimeError):
    """A permanent failure, with a message meant for the user as is."""


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def fetch(credential, resource_ids: list[str], *, endpoint: str, start: datetime, end: datetime,
          granularity: timedelta = timedelta(minutes=1), metrics: dict | None = None) -> tuple[pa.Table, int]:
    """(rows for the `metrics` table, number of API calls)."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ServiceRequestError,
                                       ServiceResponseError)
    from azure.monitor.querymetrics import MetricsClient

    from egresslens.sources.azure_errors import cause, status

    client = MetricsClient(endpoint, credential)
    extra = {"enforce_https": False} if endpoint.startswith("http://") else {}
    groups: dict[tuple[tuple[str, ...], str | None], list[str]] = {}
    for name, (aggs, flt) in (metrics or METRICS).items():
        groups.setdefault((tuple(aggs), flt), []).append(name)
    out: dict[str, list] = {k: [] for k in ("time", "firewall", "metric", "dimension", "unit", "grain_s",
                                            "average", "minimum", "maximum", "total", "count")}
    calls = 0
    try:
        for i in range(0, len(resource_ids), 50):  # up to 50 resources per call
            chunk = resource_ids[i:i + 50]
            for (aggs, flt), names in groups.items():
                calls += 1
                results = client.query_resources(
                    resource_ids=chunk, metric_namespace=NAMESPACE, metric_names=names,
                    timespan=(_aware(start), _aware(end)), granularity=granularity, aggregations=list(aggs),
                    filter=flt, **extra)
                for idx, res in enumerate(results):
                    for metric in res.metrics:
                        # the result carries no resource id: it prefixes each metric's id
                        mid = (metric.id or "").lower()
                        cut = mid.find("/providers/microsoft.insights/metrics")
                        fw = mid[:cut] if cut > 0 else chunk[min(idx, len(chunk) - 1)].lower()
                        for ts in metric.timeseries:
                            dims = ";".join(f"{k}={v}" for k, v in sorted((ts.metadata_values or {}).items())) or None
                            for point in ts.data:
                                out["time"].append(_naive(point.timestamp))
                                out["firewall"].append(fw)
                                out["metric"].append(metric.name)
                                out["dimension"].append(dims)
                                out["unit"].append(str(getattr(metric.unit, "value", metric.unit)))
                                out["grain_s"].append(int(granularity.total_seconds()))
                                for agg in ("average", "minimum", "maximum", "total", "count"):
                                    out[agg].append(getattr(point, agg, None))
    except ClientAuthenticationError as exc:
        if getattr(exc, "status_code", None) == 401:
            raise MetricsError("Azure Monitor rejected the credential (401): sign in again (az login) or check the "
                               "service principal; reading metrics needs Monitoring Reader on the firewall.") from None
        raise MetricsError("No usable Azure credential: sign in with `az login` or set AZURE_CLIENT_ID / "
                           f"AZURE_TENANT_ID / AZURE_CLIENT_SECRET ({cause(exc)}).") from None
    except HttpResponseError as exc:
        if exc.status_code in (401, 403):
            raise MetricsError("The signed-in identity may not read the firewall's metrics: grant it the "
                               "Monitoring Reader role on the firewall (or its resource group).") from None
        if exc.status_code == 404:
            raise MetricsError("Firewall not found: check --resource-id and that --endpoint is the firewall's "
                               "region (https://<region>.metrics.monitor.azure.com).") from None
        raise MetricsError(f"Azure Monitor refused the metrics query{status(exc)}: {cause(exc)}.") from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise MetricsError(f"Azure Monitor at {endpoint} did not answer ({cause(exc)}): check --endpoint "
                           "(https://<region>.metrics.monitor.azure.com) and the network.") from None
    finally:
        client.close()
    table = pa.table({
        "time": pa.array(out["time"], pa.timestamp("us")), "firewall": pa.array(out["firewall"], pa.string()),
        "metric": pa.array(out["metric"], pa.string()), "dimension": pa.array(out["dimension"], pa.string()),
        "unit": pa.array(out["unit"], pa.string()), "grain_s": pa.array(out["grain_s"], pa.int32()),
        **{a: pa.array(out[a], pa.float64()) for a in ("average", "minimum", "maximum", "total", "count")},
    })
    return table, calls


def store(con, table: pa.Table, run_id: int | None = None) -> int:
    """Insert/replace metric points; returns the number of points stored."""
    con.register("metric_points", table)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("""CREATE OR REPLACE TEMP TABLE metric_batch AS
                SELECT md5(concat_ws(chr(31), firewall, metric, coalesce(dimension, ''), time::VARCHAR)) AS metric_id, *
                FROM metric_points QUALIFY row_number() OVER (PARTITION BY metric_id) = 1""")
            con.execute("DELETE FROM metrics WHERE metric_id IN (SELECT metric_id FROM metric_batch)")
            n = con.execute("""INSERT INTO metrics SELECT metric_id, time, firewall, metric, dimension, unit, grain_s,
                average, minimum, maximum, total, count, ? FROM metric_batch""", [run_id]).fetchall()[0][0]
            con.execute("COMMIT")
        except BaseException:
            store.rollback(con)
            raise
    finally:
        con.unregister("metric_points")
    return n


def ingest_metrics(con, credential, resource_ids: list[str], *, endpoint: str, start: datetime, end: datetime,
                   granularity: timedelta = timedelta(minutes=1)) -> dict:
    from egresslens.ingest import Ingestor

    ingestor = Ingestor(con, "metrics", " ".join(resource_ids))
    try:
        table, calls = fetch(credential, resource_ids, endpoint=endpoint, start=start, end=end, granularity=granularity)
        n = store(con, table, ingestor.run_id)
    except BaseException as exc:
        ingestor.finish("failed", str(exc))
        raise
    con.execute("UPDATE ingest_runs SET records_read = ?, stored = ? WHERE run_id = ?", [n, n, ingestor.run_id])
    ingestor.finish()
    return {"run_id": ingestor.run_id, "points": n, "calls": calls,
            "metrics": sorted(set(table.column("metric").to_pylist()))}
