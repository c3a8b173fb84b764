"""The supervision report as files: one HTML page with SVG bar charts, and a CSV per table (districts, units, kinds,
the monthly ranking, and every case with its deadlines and outcomes)."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from devices.time import iso_utc
from ingest.tools.report.supervision import Supervision

GREEN, RED, AMBER, GREY, BLUE, PURPLE = "#2ca02c", "#d62728", "#ff7f0e", "#bbbbbb", "#1f77b4", "#9467bd"
CASE_COLUMNS = ("alert_id", "kind", "district", "unit", "raised_at", "ack_deadline", "acknowledged_at", "ack",
                "resolve_deadline", "resolved_at", "resolve", "result", "max_level")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def bars(title: str, names: list[str], series: list[tuple[str, str, list[float]]], *, percent: bool = False) -> str:
    """Horizontal stacked bars, one row per name; `series`: (label, colour, values)."""
    row_h, left, width = 22, 260, 420
    total = [sum(s[2][i] for s in series) for i in range(len(names))]
    top = 1.0 if percent else max(total + [1.0])
    h = 40 + row_h * len(names) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 140}" height="{h}" role="img" '
           f'aria-label="{html.escape(title)}"><text x="4" y="18" font-size="14" font-weight="bold">'
           f"{html.escape(title)}</text>"]
    for i, name in enumerate(names):
        y = 30 + i * row_h
        out.append(f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">{html.escape(name[:40])}</text>')
        x = left
        for _label, colour, values in series:
            w = width * values[i] / top
            if w > 0:
                out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{colour}"/>')
            x += w
        shown = _pct(total[i]) if percent else f"{total[i]:g}"
        out.append(f'<text x="{x + 4:.1f}" y="{y + 15}" font-size="11">{shown}</text>')
    y = 36 + row_h * len(names)
    x = left
    for label, colour, _ in series:
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/><text x="{x + 14}" y="{y + 9}" '
                   f'font-size="11">{html.escape(label)}</text>')
        x += 18 + 7 * len(label)
    out.append("</svg>")
    return "".join(out)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = []
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k)
            v = _pct(v) if k.endswith("share") else ("–" if v is None else v)
            cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


SUMMARY_COLS = [("name", ""), ("tanks", "tanks"), ("tanks_on_time", "tanks on time"),
                ("tanks_overdue", "tanks overdue"), ("overdue_tank_days", "overdue tank-days"), ("cases", "cases"),
                ("ack_on_time_share", "acknowledged on time"), ("resolve_on_time_share", "resolved on time"),
                ("ack_missed", "never acknowledged"), ("escalated_level2", "escalated to level 2"),
                ("escalated_level3", "escalated to level 3")]
RANK_COLS = [("month", "month"), ("rank", "rank"), ("unit", "unit"), ("closed_on_time", "closed on time"),
             ("closed_late", "closed late"), ("overdue_at_month_end", "overdue at month end"),
             ("on_time_share", "on time")]


def _charts(sup: Supervision) -> list[str]:
    d, u = sup.districts, [r for r in sup.units if r["tanks"] or r["cases"]]
    charts = [bars("Tanks per district: disinfected on time all period, or overdue in it", [r["name"] for r in d],
                   [("on time", GREEN, [r["tanks_on_time"] for r in d]),
                    ("overdue", RED, [r["tanks_overdue"] for r in d])])]
    judged = [r for r in u if r["cases"]]
    charts.append(bars("Cases resolved on time, by responsible unit", [r["name"] for r in judged],
                       [("resolved on time", GREEN, [r["resolve_on_time_share"] or 0 for r in judged])],
                       percent=True))
    charts.append(bars("Escalations by level, by responsible unit", [r["name"] for r in judged],
                       [("level 2 (supervising unit)", AMBER, [r["escalated_level2"] for r in judged]),
                        ("level 3 (accountability)", PURPLE, [r["escalated_level3"] for r in judged])]))
    return charts


def case_rows(sup: Supervision) -> list[dict[str, Any]]:
    def t(ns: int | None) -> str:
        return iso_utc(ns) if ns is not None else ""

    return [{"alert_id": c.alert_id, "kind": c.kind, "district": c.district, "unit": c.unit,
             "raised_at": t(c.raised_ns), "ack_deadline": t(c.ack_due_ns), "acknowledged_at": t(c.acked_ns),
             "ack": c.ack, "resolve_deadline": t(c.resolve_due_ns), "resolved_at": t(c.resolved_ns),
             "resolve": c.resolve, "result": c.result, "max_level": c.max_level} for c in sup.cases]


def write(sup: Supervision, out: Path, facts: dict[str, str]) -> Path:
    """out/supervision-<period>.html and out/supervision-<period>-<table>.csv; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"supervision-{sup.period.label}"
    tables = {"districts": sup.districts, "units": sup.units, "kinds": sup.kinds, "ranking": sup.ranking,
              "cases": case_rows(sup)}
    for name, rows in tables.items():
        cols = list(CASE_COLUMNS) if name == "cases" else list(rows[0]) if rows else ["name"]
        with open(out / f"{stem}-{name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    p = sup.period
    facts = {"Period": f"{p.label}: {iso_utc(p.start_ns)} to {iso_utc(p.end_ns)}", **facts,
             "Judged as of": iso_utc(sup.as_of_ns), "Cases raised in the period": str(len(sup.cases))}
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Supervision report {p.label}</title>"
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}svg{display:block;margin:1em 0}</style></head><body>",
             f"<h1>Supervision report {html.escape(p.label)}</h1><dl>"]
    parts += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items()]
    parts.append("</dl><p>A tank is on time when it was never overdue for disinfection during the period. A case is "
                 "acknowledged on time when acknowledged (or closed) by its deadline to acknowledge, and resolved on "
                 "time when closed by its deadline to resolve; cases whose deadline has not come yet are left out "
                 f"of the shares. Tables as CSV: {stem}-districts.csv, -units.csv, -kinds.csv, -ranking.csv, "
                 "-cases.csv.</p>")
    parts += _charts(sup)
    parts += ["<h2>By district</h2>", _table(sup.districts, SUMMARY_COLS),
              "<h2>By responsible unit</h2>", _table(sup.units, SUMMARY_COLS),
              "<h2>By kind</h2>", _table(sup.kinds, [c for c in SUMMARY_COLS if not c[0].startswith("tank")
                                                     and c[0] != "overdue_tank_days"]),
              "<h2>Monthly ranking of units</h2>", _table(sup.ranking, RANK_COLS), "</body></html>"]
    page = out / f"{stem}.html"
    page.write_text("".join(parts), encoding="utf-8")
    return page
