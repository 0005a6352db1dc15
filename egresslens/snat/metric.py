"""The SNATPortUtilization platform metric beside the estimate: per-minute values and a fit per firewall."""

from __future__ import annotations

import duckdb
import polars as pl

from egresslens.analyse import Window, frame
from egresslens.snat.capacity import SnatConfig


_TIME_COLS = ("time", "timestamp", "time_generated", "timegenerated")
_FW_COLS = ("firewall", "resource_id", "resourceid", "resource")
_NAME_COLS = ("metric", "metric_name", "metricname", "name")
_MAX_COLS = ("maximum", "max")
_AVG_COLS = ("average", "avg", "mean")


def _metric_rows(con: duckdb.DuckDBPyConnection, window: Window) -> pl.DataFrame | None:
    """SNATPortUtilization per firewall and minute (fraction), from a `metrics` table if one exists.

    Assumed shape (read defensively): a time column (time/timestamp/time_generated), a firewall
    column (firewall/resource_id), a metric name column (metric/metric_name/name) and either
    `maximum` / `average` columns or `value` with an `aggregation` column. Values in percent."""
    tables = {r[0].lower(): r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE lower(table_name) IN ('metrics', 'azure_metrics')").fetchall()}
    if not tables:
        return None
    table = tables.get("metrics") or tables["azure_metrics"]
    cols = {r[0].lower(): r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}

    def pick(cands: tuple[str, ...]) -> str | None:
        return next((cols[c] for c in cands if c in cols), None)

    t, fw, name = pick(_TIME_COLS), pick(_FW_COLS), pick(_NAME_COLS)
    if t is None or name is None:
        return None
    value, where = pick(_MAX_COLS) or pick(_AVG_COLS), ""
    if value is None and "value" in cols:
        value = cols["value"]
        if "aggregation" in cols:
            where = (f" AND lower(\"{cols['aggregation']}\") = (SELECT CASE WHEN bool_or(lower(\"{cols['aggregation']}\") "
                     f"IN ('maximum','max')) THEN 'maximum' ELSE 'average' END FROM \"{table}\")")
    if value is None:
        return None
    fw_expr = f"lower(\"{fw}\")" if fw else "NULL"
    sql = f"""
      SELECT {fw_expr} AS metric_firewall, date_trunc('minute', "{t}") AS minute, max("{value}")::DOUBLE / 100 AS metric
      FROM "{table}"
      WHERE lower(replace("{name}", ' ', '')) = 'snatportutilization' AND "{t}" >= $start AND "{t}" < $end {where}
      GROUP BY ALL
    """
    try:
        return frame(con, sql, {"start": window.start, "end": window.end})
    except duckdb.Error:
        return None


def metric_fit(con: duckdb.DuckDBPyConnection, window: Window, timeline: pl.DataFrame,
                config: SnatConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    fit_schema = {"firewall": pl.String, "points": pl.UInt32, "scale": pl.Float64, "correlation": pl.Float64,
                  "peak_metric": pl.Float64, "peak_estimate": pl.Float64, "calibrated_hold_time_s": pl.Float64}
    metric = _metric_rows(con, window)
    timeline = timeline.with_columns(pl.lit(None, pl.Float64).alias("metric"))
    if metric is None or metric.height == 0 or timeline.height == 0:
        return timeline, pl.DataFrame(schema=fit_schema)
    fws = timeline["firewall"].unique().to_list()
    mfws = metric["metric_firewall"].unique().to_list()

    def match(fw: str) -> str | None:
        for m in mfws:
            if m is None:
                continue
            if m == fw.lower() or m.endswith("/" + fw.lower()) or fw.lower().endswith("/" + m):
                return m
        return mfws[0] if len(fws) == 1 and len(mfws) == 1 else None

    mapping = pl.DataFrame({"firewall": fws, "metric_firewall": [match(f) for f in fws]},
                           schema={"firewall": pl.String, "metric_firewall": pl.String})
    m = metric.join(mapping, on="metric_firewall").select("firewall", "minute", "metric")
    timeline = timeline.drop("metric").join(m, on=["firewall", "minute"], how="full", coalesce=True).sort(
        ["firewall", "minute"])
    both = timeline.drop_nulls(["estimate", "metric"])
    fit = both.group_by("firewall").agg(
        pl.len().alias("points"),
        ((pl.col("estimate") * pl.col("metric")).sum() / (pl.col("estimate") ** 2).sum()).alias("scale"),
        pl.corr("estimate", "metric").alias("correlation"),
        pl.col("metric").max().alias("peak_metric"),
        pl.col("estimate").max().alias("peak_estimate"),
    ).with_columns((pl.col("scale") * config.hold_time_s).alias("calibrated_hold_time_s"))
    # firewalls with a metric but no overlapping estimate still show their peak
    only_metric = timeline.group_by("firewall").agg(pl.col("metric").max().alias("peak_metric"),
                                                    pl.col("estimate").max().alias("peak_estimate"))
    fit = only_metric.join(fit.drop("peak_metric", "peak_estimate"), on="firewall", how="left").filter(
        pl.col("peak_metric").is_not_null())
    fit = fit.with_columns(pl.col("points").fill_null(0)).select(list(fit_schema)).cast(fit_schema).sort("firewall")
    return timeline, fit
