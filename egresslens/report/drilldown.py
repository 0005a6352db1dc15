"""One subject of the report up close: an FQDN, a destination IP, a source IP or a rule.

For the subject: the timeline of allowed and denied events, its sources (or destinations) and ports,
its DNS history, the rules that matched, the recommendations that touch it and the SNAT view of
its destination, each as a frame and a plotly figure. `egresslens drilldown SUBJECT` writes them as
one HTML page; the notebook ``notebooks/drilldown-subject.ipynb`` shows the same figures.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import duckdb
import plotly.graph_objects as go
import polars as pl

from egresslens.analyse import DNS_HOURS_SQL, FLOW_HOURS_SQL, Window, frame
from egresslens.report import charts
from egresslens.report.model import INT, PCT, TIME, Chart, Table

KINDS = ("fqdn", "destination", "source", "rule")
_PEERS = 25  # rows of the sources / destinations table
_WHERE = {
    "fqdn": "(destination_fqdn = $subject OR ends_with(destination_fqdn, '.' || $subject))",
    "destination": "destination_ip = $subject",
    "source": "source_ip = $subject",
    "rule": "(rule = $subject OR concat_ws('/', rule_collection_group, rule_collection, rule) = $subject)",
}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def detect_kind(con: duckdb.DuckDBPyConnection, window: Window, subject: str) -> str:
    """An IP seen as a source is a source, any other IP a destination; a rule name seen in the logs
    is a rule; anything else an FQDN."""
    params = {"start": window.start, "end": window.end, "subject": subject}
    if _is_ip(subject):
        n = con.execute(f"SELECT count(*) FROM ({FLOW_HOURS_SQL}) WHERE source_ip = $subject", params).fetchall()[0][0]
        return "source" if n else "destination"
    n = con.execute(f"SELECT count(*) FROM ({FLOW_HOURS_SQL}) WHERE {_WHERE['rule']}", params).fetchall()[0][0]
    return "rule" if n else "fqdn"


@dataclass
class Drilldown:
    subject: str
    kind: str
    window: Window
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    facts: list[str] = field(default_factory=list)
    match: str = ""  # the subject as the store holds it (a name in lower case); `subject` as it was asked for
    snat_levels: tuple[float, float] = (0.8, 0.95)  # the SNAT warning and critical levels of the analysis

    def tables(self) -> list[Table]:
        f = self.frames
        return [
            Table("Suspicion verdict", f["verdict"], {"since": TIME}),
            Table("Sources" if self.kind != "source" else "Destinations", f["peers"], {"hits": INT}),
            Table("Ports", f["ports"], {"hits": INT}),
            Table("Rules that matched", f["rules"], {"hits": INT, "first_seen": TIME, "last_seen": TIME}),
            *per_firewall_tables(self),
            Table("DNS history", f["dns_names"], {"queries": INT, "failures": INT, "failure_rate": PCT}),
            Table("Recommendations that touch it", f["recommendations"], {"hits": INT}),
            Table("SNAT view of the destination", f["snat"], {"peak_utilisation": PCT, "peak_ports": INT,
                                                               "peak_minute": TIME}),
        ]

    def charts(self) -> list[Chart]:
        return figures(self)

    @property
    def empty(self) -> bool:
        """Nothing about the subject in the window: no event, no DNS query, no recommendation."""
        f = self.frames
        return not any(f[k].height for k in ("timeline", "dns_names", "recommendations") if k in f)

    def to_dict(self) -> dict[str, Any]:
        """The page's content for `drilldown --format json`: facts and every table's rows."""
        from egresslens.analyse import json_rows

        return {"subject": self.subject, "kind": self.kind,
                "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
                "facts": self.facts, "tables": {t.title: json_rows(t.frame) for t in self.tables()}}


def _dns_names_sql(kind: str) -> str:
    if kind == "fqdn":
        return "(query_name = $subject OR ends_with(query_name, '.' || $subject))"
    if kind == "source":
        return "source_ip = $subject"
    return "query_name IN (SELECT name FROM _drill_names)"


def drilldown(con: duckdb.DuckDBPyConnection, window: Window, subject: str, kind: str = "auto",
              policy=None, estate=None, firewall: str | None = None) -> Drilldown:
    """Every frame of the subject's drilldown. `kind` is one of KINDS, or auto (see detect_kind). `estate`:
    the firewalls and policies (`egresslens.estate`): with several firewalls in the window each one's traffic
    is judged against its own rules, and a subject seen behind several gets a breakdown per firewall
    (`frames["firewalls"]`, one row each). `firewall`: one of them only (its name or ARM id, as `--firewall`
    takes it; ValueError naming the store's firewalls when it matches none), judged against its own rules."""
    from egresslens import fleet, snat
    from egresslens.recommend import recommend_fleet
    from egresslens.recommend.fleet import rules_for

    if firewall is not None:
        fw = fleet.resolve(con, window, firewall)
        with fleet.scoped(con, fw):
            return drilldown(con, window, subject, kind, rules_for(estate, fw, policy), estate)
    kind = detect_kind(con, window, subject) if kind == "auto" else kind
    if kind not in KINDS:
        raise ValueError(f"kind must be auto or one of {', '.join(KINDS)}, not {kind!r}")
    # names are stored lower case without the root dot, whatever the log or the reader wrote
    match = subject.strip().lower().rstrip(".") if kind == "fqdn" else subject
    params = {"start": window.start, "end": window.end, "subject": match}
    where = _WHERE[kind]
    flows = f"SELECT * FROM ({FLOW_HOURS_SQL}) WHERE {where}"
    d = Drilldown(subject, kind, window, match=match)
    d.frames["timeline"] = frame(con, f"SELECT hour, action, sum(hits)::BIGINT AS hits FROM ({flows}) GROUP BY ALL "
                                      "ORDER BY hour, action", params)
    peer = "coalesce(destination_fqdn, destination_ip)" if kind == "source" else "source_ip"
    d.frames["peers"] = frame(con, f"""SELECT {peer} AS {'destination' if kind == 'source' else 'source_ip'}, action,
                                       sum(hits)::BIGINT AS hits FROM ({flows}) GROUP BY ALL ORDER BY hits DESC, 1, 2
                                       LIMIT {_PEERS}""",
                              params)
    d.frames["ports"] = frame(con, f"""SELECT protocol, destination_port AS port, action, sum(hits)::BIGINT AS hits
                                       FROM ({flows}) GROUP BY ALL ORDER BY hits DESC, 1, 2, 3 LIMIT 25""", params)
    d.frames["rules"] = frame(con, f"""SELECT rule_collection_group, rule_collection, rule, action, action_reason,
                                              sum(hits)::BIGINT AS hits, min(first_seen) AS first_seen,
                                              max(last_seen) AS last_seen
                                       FROM ({flows}) GROUP BY ALL ORDER BY hits DESC, 1, 2, 3, 4, 5 LIMIT 25""", params)
    recs = recommend_fleet(con, window, estate, policy=policy)
    d.frames["firewalls"] = per_firewall(con, flows, params, estate, policy)
    if kind == "rule":  # its DNS history: the names it matched
        names = frame(con, f"SELECT DISTINCT destination_fqdn AS n FROM ({flows}) WHERE destination_fqdn IS NOT NULL "
                           "LIMIT 500", params)["n"].to_list()
    else:  # a destination IP: the names DNS attributes to it
        names = list(recs.dns_attribution.get(subject, [])) if kind == "destination" else []
    con.register("_drill_names", pl.DataFrame({"name": names}, schema={"name": pl.String}).to_arrow())
    try:
        dns_where = _dns_names_sql(kind)
        d.frames["dns"] = frame(con, f"""SELECT hour, response_code, sum(queries)::BIGINT AS queries
                                         FROM ({DNS_HOURS_SQL}) WHERE {dns_where} GROUP BY ALL ORDER BY hour, response_code""", params)
        d.frames["dns_names"] = frame(con, f"""
          SELECT query_name, sum(queries)::BIGINT AS queries,
                 coalesce(sum(queries) FILTER (WHERE response_code IN ('NXDOMAIN', 'SERVFAIL', 'REFUSED')), 0)::BIGINT
                   AS failures, failures / sum(queries) AS failure_rate, count(DISTINCT source_ip) AS sources
          FROM ({DNS_HOURS_SQL}) WHERE {dns_where} GROUP BY ALL ORDER BY queries DESC, query_name LIMIT 25""", params)
    finally:
        con.unregister("_drill_names")
    d.frames["recommendations"] = _touching(d, recs)
    if kind != "source" and d.frames["peers"].height:  # the same compromised sources as recommend, dns and the report
        susp = recs.suspicion
        d.frames["peers"] = d.frames["peers"].with_columns(pl.col("source_ip").map_elements(
            lambda ip: ", ".join(susp.source(ip)["kinds"]) if susp.is_compromised(ip) else None,
            return_dtype=pl.String).alias("compromised"))
    d.frames["verdict"] = verdict(d, recs)
    result = snat.analyse_snat(con, window, suspicion=recs.suspicion)
    dests = _destinations(d)
    f = result.findings
    d.frames["snat"] = (f.filter(pl.col("destination").is_in(dests)).select(
        "destination", "port", "severity", "peak_utilisation", "peak_ports", "peak_minute", "fix")
        if f.height else pl.DataFrame(schema={"destination": pl.String, "peak_utilisation": pl.Float64}))
    m = result.minutes
    d.frames["snat_minutes"] = (m.filter(pl.col("destination").is_in(dests)).select("minute", "destination", "utilisation")
                                if m.height else pl.DataFrame(schema={"minute": pl.Datetime("us"), "destination": pl.String,
                                                                      "utilisation": pl.Float64}))
    d.snat_levels = (result.config.warning, result.config.critical)
    if not d.frames["snat"].height:
        d.facts.append(f"SNAT: no destination of this subject reaches the warning level "
                       f"({result.config.warning:.0%} of {result.capacity:,} ports).")
    hits = d.frames["timeline"]
    v = d.frames["verdict"].row(0, named=True)
    d.facts.insert(0, f"verdict: {v['verdict']}" + (f" since {v['since']:%Y-%m-%d %H:%M}" if v["since"] else "")
                   + f": {v['detail']}")
    d.facts.insert(0, f"{kind} {subject}: {int(hits['hits'].sum() or 0):,} events in {window.describe()}")
    cover = recs.suspicion.coverage
    if cover is not None and not cover.complete:
        d.facts.append(f"coverage: {cover.describe()}")
    d.facts += firewall_facts(d, len(recs.firewalls))
    return d


# -- the subject behind each firewall ---------------------------------------------------------------------

def per_firewall(con: duckdb.DuckDBPyConnection, flows: str, params: dict[str, Any], estate=None,  # noqa: ANN001
                 policy=None) -> pl.DataFrame:  # noqa: ANN001
    """One row per firewall the subject was seen behind: its traffic and denies there, the rules that matched
    there (busiest first) and the policy that firewall evaluates."""
    from egresslens import fleet
    from egresslens.recommend.fleet import rules_for

    rows = frame(con, f"""
      WITH r AS (SELECT firewall, policy, rule_collection, rule, action, sum(hits)::BIGINT AS hits
                 FROM ({flows}) GROUP BY ALL),
      t AS (SELECT firewall, coalesce(sum(hits) FILTER (WHERE action = 'Allow'), 0)::BIGINT AS allowed,
                   coalesce(sum(hits) FILTER (WHERE action = 'Deny'), 0)::BIGINT AS denied,
                   min(first_seen) AS first_seen, max(last_seen) AS last_seen
            FROM ({flows}) GROUP BY firewall)
      SELECT t.*, (SELECT list({{'policy': r.policy, 'collection': r.rule_collection, 'rule': r.rule,
                                 'action': r.action, 'hits': r.hits}}
                               ORDER BY r.hits DESC, r.rule_collection NULLS FIRST, r.rule NULLS FIRST, r.action)
                   FROM r WHERE r.firewall IS NOT DISTINCT FROM t.firewall) AS matched
      FROM t ORDER BY allowed + denied DESC, firewall""", params)
    out = []
    for r in rows.iter_rows(named=True):
        target = getattr(rules_for(estate, r["firewall"], policy), "target", None) or None
        matched = r["matched"] or []
        # a rule the firewall inherits says whose it is (the logs name the policy that holds it)
        rules = "; ".join(rule_label(m["collection"], m["rule"], m["action"])
                          + (f" of {m['policy']}" if m["policy"] and m["policy"] != target else "") + f": {m['hits']:,}"
                          for m in matched[:3])
        if len(matched) > 3:
            rules += f"; and {len(matched) - 3} more"
        total = r["allowed"] + r["denied"]
        out.append({"firewall": fleet.label(r["firewall"]), "policy": target, "allowed": r["allowed"],
                    "denied": r["denied"], "deny_share": r["denied"] / total if total else None,
                    "rules_that_matched": rules, "first_seen": r["first_seen"], "last_seen": r["last_seen"],
                    "firewall_id": r["firewall"]})
    return pl.DataFrame(out, schema={"firewall": pl.String, "policy": pl.String, "allowed": pl.Int64,
                                     "denied": pl.Int64, "deny_share": pl.Float64, "rules_that_matched": pl.String,
                                     "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us"),
                                     "firewall_id": pl.String})


def per_firewall_tables(d: Drilldown) -> list[Table]:
    """The per-firewall breakdown, for a subject seen behind more than one firewall."""
    f = d.frames.get("firewalls")
    if f is None or f.height < 2:
        return []
    return [Table("Per firewall", f.drop("firewall_id"), {"allowed": INT, "denied": INT, "deny_share": PCT,
                                                          "first_seen": TIME, "last_seen": TIME},
                  note="each firewall's own traffic for the subject and the rules that matched it there (busiest "
                       "first); policy: the one that firewall evaluates")]


def firewall_facts(d: Drilldown, firewalls_in_window: int) -> list[str]:
    """Which firewalls the subject was seen behind, when the window holds several."""
    f = d.frames.get("firewalls")
    if f is None or firewalls_in_window < 2 or not f.height:
        return []
    if f.height == 1:
        return [f"seen behind {f['firewall'][0]} only (of {firewalls_in_window} firewalls in the window)"]
    each = ", ".join(f"{r['firewall']} ({r['allowed'] + r['denied']:,} events, {r['denied']:,} denied)"
                     for r in f.head(5).iter_rows(named=True))
    return [f"seen behind {f.height} firewalls: {each}" + (f" and {f.height - 5} more" if f.height > 5 else "")]


def verdict(d: Drilldown, recs) -> pl.DataFrame:  # noqa: ANN001 - egresslens.recommend.Recommendations
    """The suspicion model's verdict on the subject, as `recommend`, `dns` and the report read it: a source is
    compromised (since its first contact) or clean; a name or address is withheld (why) or not; an address
    is attributed to a name by a majority of its connections, or unattributed."""
    from egresslens.recommend.network import attribution_text

    susp = recs.suspicion
    row: dict[str, Any] = {"subject": d.subject, "verdict": "no finding", "since": None, "detail": ""}
    if d.kind == "source":
        r = susp.source(d.subject)
        row.update({"verdict": "compromised", "since": r["first_seen"], "detail": susp.evidence_text(d.subject)}
                   if r else {"verdict": "clean", "detail": "reached nothing withheld in the window"})
    elif d.kind == "fqdn":
        why = susp.name_reason(d.subject)
        row.update({"verdict": "never proposed", "detail": why} if why else
                   {"detail": "nothing known against this name"})
    elif d.kind == "destination":
        why = susp.ip_reason(d.subject)
        att = f"DNS attribution: {attribution_text(d.subject, recs.attribution)}"
        names = recs.dns_attribution.get(d.subject, [])
        why = why or next((f"resolves from {n}: {r}" for n in names if (r := susp.name_reason(n))), None)
        row.update({"verdict": "never proposed", "detail": f"{why}; {att}"} if why else {"detail": att})
    else:
        row["detail"] = "a rule has no verdict of its own; see the recommendations that touch it"
    peers = d.frames.get("peers")
    if d.kind in ("fqdn", "destination") and row["verdict"] == "no finding" and peers is not None \
            and 0 < peers.height < _PEERS and "compromised" in peers.columns and peers["compromised"].is_not_null().all():
        who = ", ".join(sorted(set(peers["source_ip"].to_list()))[:5])
        row.update(verdict="never proposed", detail=f"reached only by compromised source(s) {who}: nothing only they "
                                                    f"asked for is proposed; {row['detail']}")
    return pl.DataFrame([row], schema={"subject": pl.String, "verdict": pl.String, "since": pl.Datetime("us"),
                                       "detail": pl.String})


def _destinations(d: Drilldown) -> list[str]:
    if d.kind in ("fqdn", "destination"):
        return [d.match or d.subject]
    if d.kind == "source":
        return d.frames["peers"]["destination"].drop_nulls().unique().to_list()
    return []


def _touching(d: Drilldown, recs) -> pl.DataFrame:  # noqa: ANN001
    from egresslens.fleet import label

    rows: list[dict[str, Any]] = []
    for r in recs.items:
        names = list(r.evidence.destinations) + [n for v in r.evidence.derived_from.values() for n in v]
        sources = [e.get("source_ip") for e in r.evidence.sample_events]
        if r.rule is not None:
            names += r.rule.target_fqdns + r.rule.destination_fqdns + r.rule.destination_addresses
        e = r.existing_rule or {}
        subject = d.match or d.subject
        hit = (d.kind in ("fqdn", "destination") and (subject in names or any(n.endswith("." + subject) for n in names))
               or d.kind == "source" and d.subject in sources
               or d.kind == "rule" and d.subject in (e.get("rule"), "/".join(str(e.get(k)) for k in
                                                                              ("rule_collection_group", "rule_collection", "rule"))))
        if hit:
            rows.append({"kind": r.kind, "title": r.title, "risk": r.risk, "hits": r.evidence.hits,
                         "rationale": r.rationale, "firewall": ", ".join(label(f) for f in r.firewalls) or label(r.firewall),
                         "policy": r.policy})
    out = pl.DataFrame(rows, schema={"kind": pl.String, "title": pl.String, "risk": pl.String, "hits": pl.Int64,
                                     "rationale": pl.String, "firewall": pl.String, "policy": pl.String})
    # with several firewalls, whose traffic each recommendation serves and the policy it goes to
    return out if len(getattr(recs, "firewalls", None) or []) > 1 else out.drop("firewall", "policy")


def figures(d: Drilldown) -> list[Chart]:
    f = d.frames
    out = []
    t = f["timeline"]
    out.append(Chart("drill-timeline", "Allowed and denied events per hour", charts._figure(
        [go.Bar(x=t.filter(pl.col("action") == a)["hour"].to_list(), y=t.filter(pl.col("action") == a)["hits"].to_list(),
                name=charts.label(a), marker_color=charts.ALLOW if a == "Allow" else charts.DENY if a == "Deny" else None)
         for a in t["action"].unique().sort().to_list()], barmode="stack", yaxis_title="events per hour",
        xaxis_title=charts.HOUR), empty="No allowed or denied event in this window."))
    p = f["peers"]
    col = p.columns[0]
    names = [f"{n} ({a})" for n, a in zip(p[col].to_list(), p["action"].to_list())]
    out.append(Chart("drill-peers", "Top destinations" if d.kind == "source" else "Top sources",
                     charts._hbar(names, p["hits"].to_list(), colour="#1565c0",
                                  hover=[charts.label(n) for n in names], xtitle="events in the window"),
                     empty="No connection in this window."))
    ports = f["ports"]
    pn = [f"{pr}/{po} ({a})" if po is not None else f"{pr} ({a})"
          for pr, po, a in zip(ports["protocol"].to_list(), ports["port"].to_list(), ports["action"].to_list())]
    out.append(Chart("drill-ports", "Protocols and ports", charts._hbar(pn, ports["hits"].to_list(), colour="#6a1b9a",
                                                                       hover=[charts.label(n) for n in pn],
                                                                       xtitle="events in the window"),
                     empty="No connection in this window."))
    dns = f["dns"]
    out.append(Chart("drill-dns", "DNS queries per hour by response code", charts._figure(
        [go.Bar(x=dns.filter(pl.col("response_code") == rc)["hour"].to_list(),
                y=dns.filter(pl.col("response_code") == rc)["queries"].to_list(), name=charts.label(rc))
         for rc in dns["response_code"].drop_nulls().unique().sort().to_list()], barmode="stack",
        yaxis_title="queries per hour", xaxis_title=charts.HOUR),
        empty="No DNS proxy query for it in this window."))
    r = f["rules"]
    rn = [rule_label(c, n, a) for c, n, a in zip(r["rule_collection"].to_list(), r["rule"].to_list(), r["action"].to_list())]
    out.append(Chart("drill-rules", "Rules that matched", charts._hbar(rn, r["hits"].to_list(), colour=charts.ALLOW,
                                                                      hover=[charts.label(n) for n in rn],
                                                                      xtitle="events in the window"),
                     empty="No rule matched in this window."))
    m = f["snat_minutes"]
    th = {"warning": d.snat_levels[0], "critical": d.snat_levels[1]}
    out.append(Chart("drill-snat", "SNAT utilisation of its destination (minutes at or above the warning level)",
                     charts._figure([go.Scatter(x=m.filter(pl.col("destination") == dst)["minute"].to_list(),
                                                y=m.filter(pl.col("destination") == dst)["utilisation"].to_list(),
                                                mode="lines+markers", name=charts.short(dst))
                                     for dst in m["destination"].unique().sort().to_list()],
                                    xaxis_title="minute (UTC)",
                                    yaxis=charts._utilisation_axis(th, m["utilisation"].max() if m.height else None),
                                    shapes=charts._thresholds(th), annotations=charts._threshold_labels(th)),
                     empty=f"SNAT: no minute at or above the warning level ({th['warning']:.0%} of the ports) "
                           "for its destination."))
    return out


def rule_label(collection: Any, rule: Any, action: Any) -> str:  # noqa: ANN401
    """`collection/rule (action)`; the firewall's default action when no rule matched."""
    if collection is None and rule is None:
        return f"no rule: default action ({action})"
    return f"{collection}/{rule} ({action})"


def figure(d: Drilldown, chart_id: str) -> go.Figure:
    """One of the drilldown's figures as a plotly Figure (for the notebook)."""
    return go.Figure(next(c.figure for c in figures(d) if c.id == chart_id))
