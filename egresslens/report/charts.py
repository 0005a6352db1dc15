"""Plotly figures of the report's sections, drawn from the small aggregated frames each section keeps.

Plotly reads a few HTML tags (`<b>`, `<br>`, `<a href>`) in every label and decodes a few entities,
so each log-derived string goes through :func:`egresslens.escape.plotly` before it becomes a label:
a hostile name is drawn as its text, quotes included. Long names are shortened on the axis (the hover shows them whole).
"""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go
import polars as pl

from egresslens.escape import plotly
from egresslens.report.model import Chart, Section

ALLOW, DENY = "#2e7d32", "#c62828"
AXIS_LABEL_MAX = 48
HOUR = "hour (UTC)"
# the top margin holds the toolbar, so it never covers the plot
_LAYOUT = dict(margin=dict(l=60, r=20, t=40, b=50), height=360, paper_bgcolor="rgba(0,0,0,0)",
               plot_bgcolor="rgba(0,0,0,0)", legend=dict(orientation="h", y=-0.2), hovermode="closest",
               xaxis=dict(gridcolor="rgba(128,128,128,0.25)"), yaxis=dict(gridcolor="rgba(128,128,128,0.25)"))


def label(value: Any) -> str:
    """A log-derived value as a plotly label: shown as text, never as markup."""
    return plotly(value)


def short(value: Any) -> str:
    text = "" if value is None else str(value)
    return label(text if len(text) <= AXIS_LABEL_MAX else text[: AXIS_LABEL_MAX - 1] + "\u2026")


def _figure(traces: list, **layout: Any) -> dict[str, Any]:
    fig = go.Figure(traces)
    fig.update_layout(**_LAYOUT)
    fig.update_layout(**layout)
    return json.loads(fig.to_json())


def _hbar(names: list, values: list, *, colour: str, hover: list[str], xtitle: str, **layout: Any) -> dict[str, Any]:
    """Horizontal bars, one per row: positions are row numbers, so two names that shorten alike stay two bars."""
    pos = list(range(len(names)))[::-1]
    trace = go.Bar(x=values, y=pos, orientation="h", marker_color=colour, hovertext=hover, hoverinfo="text+x")
    return _figure([trace], height=max(220, 26 * len(names) + 80), xaxis_title=xtitle,
                   yaxis=dict(tickmode="array", tickvals=pos, ticktext=[short(n) for n in names], automargin=True),
                   **layout)


def freshness(s: Section) -> list[Chart]:
    h = s.data["hourly"]
    fws = h["firewall"].unique().sort().to_list()
    z = [h.filter(pl.col("firewall") == fw)["events"].to_list() for fw in fws]
    x = [h.filter(pl.col("firewall") == fw)["hour"].to_list() for fw in fws]
    traces = [go.Bar(x=x[i], y=z[i], name=short(fw.rsplit("/", 1)[-1])) for i, fw in enumerate(fws)]
    return [Chart("freshness-hourly", "Flow events per hour and firewall (a missing bar is a gap)",
                  _figure(traces, barmode="stack", yaxis_title="flow events per hour", xaxis_title=HOUR),
                  empty="No flow events in this window: nothing has been ingested for it.")]


def egress(s: Section) -> list[Chart]:
    a = s.data["by_action"]
    traces = [go.Bar(x=a.filter(pl.col("action") == act)["hour"].to_list(),
                     y=a.filter(pl.col("action") == act)["hits"].to_list(), name=label(act),
                     marker_color=ALLOW if act == "Allow" else DENY if act == "Deny" else "#1565c0")
              for act in a["action"].unique().sort().to_list()]
    g = s.data["denied_by_group"]
    lines = [go.Scatter(x=g.filter(pl.col("source_group") == grp)["hour"].to_list(),
                        y=g.filter(pl.col("source_group") == grp)["hits"].to_list(), mode="lines", name=short(grp))
             for grp in g["source_group"].unique().sort().to_list()]
    return [Chart("egress-actions", "Allowed and denied connections per hour",
                  _figure(traces, barmode="stack", yaxis_title="connections per hour", xaxis_title=HOUR),
                  empty="No connections in this window."),
            Chart("egress-groups", "Denied connections per hour by source group",
                  _figure(lines, yaxis_title="denied connections per hour", xaxis_title=HOUR),
                  empty="No connection was denied in this window.")]


def changes(s: Section) -> list[Chart]:
    c = s.data["counts"]
    return [Chart("changes-counts", "Changes against the comparison window",
                  _hbar(c["change"].to_list(), c["count"].to_list(), colour="#1565c0",
                        hover=[label(x) for x in c["change"].to_list()], xtitle="destinations or rules"),
                  # no counts at all: the section's last fact says why (no comparison window, or no traffic in it)
                  empty="Nothing changed against the comparison window." if c.height or not s.facts else s.facts[-1])]


def denied(s: Section) -> list[Chart]:
    t = s.data["top"]
    names = [f"{d}:{p}" if p is not None else str(d) for d, p in zip(t["destination"].to_list(), t["port"].to_list())]
    hover = [f"{label(n)}<br>{src:,} sources" for n, src in zip(names, t["sources"].to_list())]
    return [Chart("denied-top", "Most denied destinations",
                  _hbar(names, t["hits"].to_list(), colour=DENY, hover=hover, xtitle="denied connections in the window"),
                  empty="No connection was denied in this window.")]


def rules(s: Section) -> list[Chart]:
    r = s.data["scores"]
    names = [f"{c}/{n}" for c, n in zip(r["rule_collection"].to_list(), r["rule"].to_list())]
    if r["permissiveness"].is_null().all():
        top = r.sort("hits", descending=True).head(25)
        tnames = [f"{c}/{n}" for c, n in zip(top["rule_collection"].to_list(), top["rule"].to_list())]
        return [Chart("rules-hits", "Hits per rule", _hbar(tnames, top["hits"].to_list(), colour=ALLOW,
                                                           hover=[label(n) for n in tnames], xtitle="connections matched"),
                      empty="No connection matched a rule in this window.")]
    trace = go.Scatter(x=[max(h, 0) + 1 for h in r["hits"].to_list()], y=r["permissiveness"].to_list(),
                       mode="markers", marker=dict(size=10, color="#6a1b9a"), hovertext=[label(n) for n in names],
                       hoverinfo="text+x+y")
    return [Chart("rules-scatter", "Rules: permissiveness against hits (top left: broad and little used)",
                  _figure([trace], xaxis=dict(type="log", title="connections matched + 1 (log scale)",
                                              gridcolor="rgba(128,128,128,0.25)"),
                          yaxis=dict(title="permissiveness (0-100)", range=[0, 105], gridcolor="rgba(128,128,128,0.25)")),
                  empty="No rule to score.")]


def snat(s: Section) -> list[Chart]:
    out = []
    tl = s.data["timeline"]
    th = s.data["thresholds"].row(0, named=True)
    if tl.height:
        traces = [go.Scatter(x=tl.filter(pl.col("firewall") == fw)["minute"].to_list(),
                             y=tl.filter(pl.col("firewall") == fw)["estimate"].to_list(), mode="lines",
                             name=short(fw.rsplit("/", 1)[-1]),
                             hovertext=[label(d) for d in tl.filter(pl.col("firewall") == fw)["busiest_destination"]],
                             hoverinfo="text+x+y")
                  for fw in tl["firewall"].unique().sort().to_list()]
        out.append(Chart("snat-timeline", "SNAT utilisation of the busiest destination (dashed: warning, critical)",
                         _figure(traces, xaxis_title="minute (UTC)", yaxis=_utilisation_axis(th, tl["estimate"].max()),
                                 shapes=_thresholds(th), annotations=_threshold_labels(th))))
    p = s.data["peaks"]
    if p.height:
        names = [f"{d}:{port}" for d, port in zip(p["destination"].to_list(), p["port"].to_list())]
        out.append(Chart("snat-peaks", "Peak utilisation per destination against capacity",
                         _hbar(names, p["peak_utilisation"].to_list(), colour="#ef6c00",
                               hover=[label(n) for n in names], xtitle="peak SNAT ports in use (% of capacity)",
                               xaxis=dict(tickformat=".0%", rangemode="tozero",
                                          title="peak SNAT ports in use (% of capacity)"))))
    return out


def _utilisation_axis(th: dict, peak: float | None) -> dict[str, Any]:
    """0 % up to a little over the critical level (or the peak): the thresholds are always in view, as ticks."""
    top = max(float(th["critical"]) * 1.1, float(peak or 0) * 1.1, 0.05)
    ticks = sorted({0.0, round(top / 4, 2), round(top / 2, 2), float(th["warning"]), float(th["critical"])})
    return dict(title="ports in use (% of capacity)", tickformat=".0%", range=[0, top], tickmode="array",
                tickvals=[t for t in ticks if t <= top], gridcolor="rgba(128,128,128,0.25)")


def _thresholds(th: dict) -> list[dict[str, Any]]:
    return [dict(type="line", xref="paper", x0=0, x1=1, y0=v, y1=v, line=dict(color=c, dash="dash"))
            for v, c in ((th["warning"], "#ef6c00"), (th["critical"], DENY))]


def _threshold_labels(th: dict) -> list[dict[str, Any]]:
    return [dict(xref="paper", x=1, xanchor="right", y=v, yanchor="bottom", showarrow=False, text=f"{name} {v:.0%}",
                 font=dict(color=c, size=11))
            for name, v, c in (("warning", th["warning"], "#ef6c00"), ("critical", th["critical"], DENY))]


def dns(s: Section) -> list[Chart]:
    g = s.data["groups"]
    names = g["source_group"].to_list()
    fail = [sum(v or 0 for v in vals) for vals in zip(g["nxdomain_rate"], g["servfail_rate"], g["refused_rate"])]
    bars = go.Bar(x=[short(n) for n in names], y=fail, name="failure rate", marker_color=DENY)
    # a group without a latency (the firewall's own upstream queries) has no point, not a point at 0
    p95 = go.Scatter(x=[short(n) for n in names], y=[None if v is None else v * 1000 for v in g["p95_latency_s"].to_list()],
                     name="p95 latency (ms)", yaxis="y2", mode="markers", marker=dict(size=9, color="#1565c0"))
    return [Chart("dns-groups", "DNS failure rate and p95 latency per source group",
                  _figure([bars, p95], margin=dict(l=70, r=70, t=40, b=90),
                          xaxis=dict(title="source group", automargin=True),
                          yaxis=dict(tickformat=".0%", title="failed queries (% of queries)", rangemode="tozero",
                                     gridcolor="rgba(128,128,128,0.25)", automargin=True),
                          yaxis2=dict(title="p95 latency (ms)", overlaying="y", side="right", showgrid=False,
                                      rangemode="tozero", automargin=True)),
                  empty="No DNS proxy queries in this window (is DNS proxy on, and its log category ingested?).")]


def threats(s: Section) -> list[Chart]:
    h = s.data["hourly"]
    traces = [go.Bar(x=h.filter(pl.col("kind") == k)["hour"].to_list(), y=h.filter(pl.col("kind") == k)["events"].to_list(),
                     name=label(k)) for k in h["kind"].unique().sort().to_list()]
    return [Chart("threats-hourly", "Threat-intel and IDPS events per hour",
                  _figure(traces, barmode="stack", yaxis_title="events per hour", xaxis_title=HOUR),
                  empty="No threat-intel or IDPS event in this window.")]


BY_SECTION = {"freshness": freshness, "egress": egress, "changes": changes, "denied": denied, "rules": rules,
              "snat": snat, "dns": dns, "threats": threats}


def draw(section: Section) -> None:
    """Attach the section's charts."""
    section.charts = BY_SECTION[section.id](section) if section.id in BY_SECTION else []
