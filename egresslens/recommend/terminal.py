"""The recommendations as a person reads them in a terminal: one line per item, most urgent first
(`egresslens recommend`), and one item with all its evidence (`egresslens recommend show ID`).

Log-derived text goes through :func:`egresslens.escape.terminal`; every line fits the console's width
(titles are shortened with an ellipsis, `show ID` has them whole).
"""

from __future__ import annotations

from typing import Any

from egresslens.escape import terminal as _t
from egresslens.recommend.model import Recommendation, by_urgency, with_port

GROUPS = (  # (heading, kinds), in the order of model.URGENCY
    ("Investigate: never allowed, act on these first", ("investigate",)),
    ("Narrow or remove existing rules", ("narrow-rule", "remove-rule")),
    ("Add rules", ("add-application-rule", "add-network-rule")),
)
SHORT = {"add-application-rule": "add app", "add-network-rule": "add net", "narrow-rule": "narrow",
         "remove-rule": "remove", "investigate": "investigate"}
RISK_STYLE = {"high": "bold red", "medium": "yellow", "low": "green"}
MAX_WARNINGS = 3  # warnings on the first screen; the rest are counted


def counts_line(recs) -> str:  # noqa: ANN001
    """`2 to investigate, 3 to narrow or remove, 10 to add`."""
    verbs = ("to investigate", "to narrow or remove", "to add")
    return ", ".join(f"{sum(1 for r in recs.items if r.kind in kinds)} {verb}" for (_, kinds), verb in zip(GROUPS, verbs))


def summary(console, recs, *, policy_note: str | None = None) -> None:  # noqa: ANN001 - rich Console, Recommendations
    """One line per recommendation under its heading, most urgent first."""
    from rich.table import Table
    from rich.text import Text

    console.print(f"[bold]EgressLens recommendations[/bold] {_t(recs.window.describe())}", soft_wrap=False)
    console.print(counts_line(recs) + (f"; {_t(policy_note)}" if policy_note else ""))
    for w in recs.warnings[:MAX_WARNINGS]:
        console.print(Text("warning: ", style="yellow") + Text(_plain(w)), overflow="ellipsis", no_wrap=True)
    if len(recs.warnings) > MAX_WARNINGS:
        console.print(f"[dim]and {len(recs.warnings) - MAX_WARNINGS} more warnings (--format markdown lists them)[/dim]")
    if not recs.items:
        console.print("[green]Nothing to change: every flow in the window is allowed by a rule it needs.[/green]")
        return
    ordered = by_urgency(recs.items)
    for heading, kinds in GROUPS:
        items = [r for r in ordered if r.kind in kinds]
        if not items:
            continue
        console.print(f"\n[bold]{heading}[/bold] ({len(items)})")
        hits_w = max(len(f"{r.evidence.hits or 0:,}") for r in items)
        id_w = max(len(r.id) for r in items)
        t = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False, expand=False)
        t.add_column("id", no_wrap=True, style="cyan", width=id_w)
        t.add_column("risk", no_wrap=True, width=6)
        t.add_column("hits", no_wrap=True, justify="right", width=hits_w)
        t.add_column("what", no_wrap=True, overflow="ellipsis", max_width=max(10, console.width - id_w - hits_w - 6 - 6))
        for r in items:
            t.add_row(r.id, Text(r.risk, style=RISK_STYLE.get(r.risk, "")), f"{r.evidence.hits or 0:,}",
                      Text(_plain(r.title), overflow="ellipsis", no_wrap=True))
        console.print(t, width=console.width)
    console.print("\n[dim]egresslens recommend show ID: one item with its evidence; --format "
                  "markdown|json|az|terraform|bicep|draft for all of them.[/dim]")


def _plain(value: Any) -> str:  # noqa: ANN401
    """Log text for a rich Text object (not markup): visible, no control bytes."""
    from egresslens.escape import plain

    return plain(value)


def _grid(console, rows: list[tuple[str, str]]) -> None:  # noqa: ANN001
    """Label and value side by side; a long value wraps under itself, not under the label."""
    from rich.table import Table

    if not rows:
        return
    g = Table.grid(padding=(0, 1))
    g.add_column(no_wrap=True, style="bold")
    g.add_column(overflow="fold")
    for label, value in rows:
        g.add_row(label, value)
    console.print(g)


def detail(console, r: Recommendation, *, what_if: bool = False) -> None:  # noqa: ANN001 - rich Console
    """One recommendation with every piece of its evidence."""
    from egresslens import fleet
    from egresslens.cliout import KEEP, NUM, Col, dropped_note, fit_table

    style = RISK_STYLE.get(r.risk, "")
    console.print(f"[bold]{_t(r.title)}[/bold]")
    rows = [("id", f"[cyan]{r.id}[/cyan] {r.kind}, risk [{style}]{r.risk}[/{style}], confidence {r.confidence}"
                   + (f", permissiveness {r.permissiveness:g}" if r.permissiveness is not None else "")
                   + (f", bundle {_t(r.bundle)}" if r.bundle else ""))]
    where = [f"firewall {_t(fleet.label(r.firewall))}" if r.firewall else "", f"policy {_t(r.policy)}" if r.policy else ""]
    if any(where):
        rows.append(("where", ", ".join(x for x in where if x)))
    rows.append(("why", _t(r.rationale)))
    if r.rule is not None:
        p = r.rule
        rows.append(("rule", f"{_t(p.rule_collection_group)} (priority {p.rule_collection_group_priority}) / "
                             f"{_t(p.rule_collection)} (priority {p.rule_collection_priority}) / {_t(p.name)}, "
                             f"{p.rule_type}"))
        srcs = [_t(s) for s in p.source_addresses] + [f"IP Group {_t(g.rsplit('/', 1)[-1])}" for g in p.source_ip_groups]
        rows.append(("sources", ", ".join(srcs) + (f" (suggested IP Group {_t(p.source_ip_group)})"
                                                     if p.source_ip_group else "")))
        if p.rule_type == "ApplicationRule":
            dests = [f"tag {_t(t)}" for t in p.fqdn_tags] + [_t(f) for f in p.target_fqdns]
            rows.append(("destinations", f"{', '.join(dests)} on {', '.join(p.protocols)}"))
        else:
            dests = [_t(a) for a in p.destination_addresses] + [_t(f) for f in p.destination_fqdns]
            rows.append(("destinations", f"{', '.join(dests)} on {'/'.join(p.ip_protocols)} "
                                         f"{', '.join(p.destination_ports)}"))
    if r.existing_rule:
        e = r.existing_rule
        rows.append(("existing rule", f"{_t(e['rule_collection_group'])}/{_t(e['rule_collection'])}/{_t(e['rule'])}: "
                                      f"sources {_t(', '.join(e['sources']))}; destinations "
                                      f"{_t(', '.join(e['destinations'][:10]))}; ports {_t(', '.join(e['ports']))}"))
    ev = r.evidence
    rows.append(("evidence", f"{ev.hits:,} hits from {ev.distinct_sources} source(s), first {ev.first_seen}, "
                             f"last {ev.last_seen}, {ev.days_seen} day(s) / {ev.hours_seen} hour(s) in the window"))
    for pattern, names in ev.derived_from.items():
        rows.append(("", f"{_t(pattern)} from {_t(', '.join(names[:8]))}"
                         + (f" and {len(names) - 8} more" if len(names) > 8 else "")))
    rows += [("note", _t(n)) for n in ev.notes[:10]]
    for s in ev.sample_events:
        rows.append(("sample", f"{_t(s.get('hour'))} {_t(s.get('source_ip'))} -> "
                               f"{_t(with_port(s.get('destination'), s.get('port')))} ({s.get('hits')} hits)"))
    for s in r.still_allowed[:10]:
        rows.append(("still allowed", f"{_t(s['source_group'])} -> {_t(with_port(s['destination'], s['port']))} "
                                      f"({s['hits']})"))
    if len(r.still_allowed) > 10:
        rows.append(("still allowed", f"and {len(r.still_allowed) - 10} more"))
    for s in r.would_be_denied[:10]:
        rows.append(("cut", f"{_t(with_port(s['destination'], s['port']))} ({s['hits']}: {_t(s.get('reason'))})"))
    if len(r.would_be_denied) > 10:
        rows.append(("cut", f"and {len(r.would_be_denied) - 10} more"))
    rows += [(f"step {i}", _t(step)) for i, step in enumerate(r.rollout, 1)]
    if what_if and r.what_if:
        rows.append(("what-if", _t(r.what_if)))
    _grid(console, rows)
    if ev.per_name:
        cols = [Col("destination", min_width=30), Col("hits", NUM), Col("sources", NUM, priority=3),
                Col("hours", NUM, priority=2), Col("last seen", KEEP, priority=1), Col("support", KEEP, priority=4),
                Col("compromised also asking", min_width=15, priority=5)]
        table_rows = [[_t(e["name"]), f"{e['hits']:,}", str(e["sources"]), str(e["hours"]), _t(e["last_seen"] or "-"),
                       _t(e["support"]), _t(", ".join(e["compromised_also"]) or "-")] for e in ev.per_name]
        table, dropped = fit_table("Per destination", cols, table_rows, console.width)
        console.print(table)
        if dropped:
            console.print(dropped_note(dropped))
    if r.kind != "investigate":
        console.print(f"[dim]as a change: egresslens recommend show {r.id} --format az (or terraform, bicep)[/dim]")
