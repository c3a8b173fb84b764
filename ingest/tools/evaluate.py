"""`cistern evaluate`: score alert events against simulator labels by the matching rule of docs/FORMATS.md."""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from devices.alerts import SCORED_KINDS

DAY_S = 86_400.0


def _seconds(v: Any) -> float | None:
    """RFC 3339 string or epoch seconds → epoch seconds; None when absent or unreadable."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return t.timestamp()
    return None


def _subject(rec: dict) -> tuple[str, str]:
    s = rec.get("subject") or {}
    if not isinstance(s, dict):
        return ("", str(s))
    return (str(s.get("type", "")), str(s.get("id", "")))


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def evaluate(alerts: list[dict], labels: list[dict]) -> dict:
    """Precision, recall, F1, decoy hits and median detection delay per scored kind.

    Only `raised` events count, the first one per alert_id. An alert matches a label of the same kind and
    subject when its start lies in [label start − 1 day, label end + 1 day]; each label and each alert
    matches at most once (points matched to intervals greedily by earliest interval end, which is optimal).
    """
    raised: list[dict] = []
    seen: set[str] = set()
    for i, a in enumerate(alerts):
        if a.get("event") != "raised":
            continue
        aid = str(a.get("alert_id", f"#{i}"))
        if aid in seen:
            continue
        seen.add(aid)
        raised.append(a)

    by_kind_labels: dict[str, list[dict]] = defaultdict(list)
    decoys: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for lab in labels:
        kind = lab.get("kind")
        s, e = _seconds(lab.get("start")), _seconds(lab.get("end"))
        if s is None:
            continue
        e = s if e is None else max(e, s)
        if kind == "none":
            decoys[_subject(lab)].append((s - DAY_S, e + DAY_S, str(lab.get("decoy", "unnamed"))))
        else:
            by_kind_labels[str(kind)].append({"subject": _subject(lab), "start": s, "end": e})

    kinds: dict[str, dict] = {}
    for kind in SCORED_KINDS:
        labs = by_kind_labels.get(kind, [])
        als = [a for a in raised if a.get("kind") == kind]
        pts = []
        for a in als:
            st, det = _seconds(a.get("start")), _seconds(a.get("detected_at"))
            pts.append((st if st is not None else float("inf"), det, _subject(a), a))
        pts.sort(key=lambda p: (p[0], p[1] if p[1] is not None else float("inf"), str(p[3].get("alert_id", ""))))
        by_subject: dict[tuple[str, str], list[int]] = defaultdict(list)
        for j, lab in enumerate(labs):
            by_subject[lab["subject"]].append(j)
        used = [False] * len(labs)
        delays: list[float] = []
        tp = 0
        hits: dict[str, int] = defaultdict(int)
        for st, det, subj, _a in pts:
            best = None
            for j in by_subject.get(subj, []):
                lab = labs[j]
                if used[j] or not (lab["start"] - DAY_S <= st <= lab["end"] + DAY_S):
                    continue
                if best is None or (lab["end"], lab["start"]) < (labs[best]["end"], labs[best]["start"]):
                    best = j
            if best is not None:
                used[best] = True
                tp += 1
                if det is not None:
                    delays.append((det - labs[best]["start"]) / 3600.0)
                continue
            # A false positive: did a decoy (widened by a day each side) overlap [alert start, detected_at]?
            lo = st
            hi = det if det is not None and det >= st else st
            names = sorted({name for d0, d1, name in decoys.get(subj, []) if d0 <= hi and lo <= d1})
            for name in names:
                hits[name] += 1
        n_l, n_a = len(labs), len(als)
        fp, fn = n_a - tp, n_l - tp
        p, r = _ratio(tp, n_a), _ratio(tp, n_l)
        f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r > 0 else 0.0)
        kinds[kind] = {"labels": n_l, "alerts": n_a, "tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r,
                       "f1": f1, "decoy_hits": dict(sorted(hits.items())),
                       "delay_h_median": statistics.median(delays) if delays else None}
    unscored: dict[str, int] = defaultdict(int)
    for a in raised:
        if a.get("kind") not in SCORED_KINDS:
            unscored[str(a.get("kind"))] += 1
    tp = sum(k["tp"] for k in kinds.values())
    n_a = sum(k["alerts"] for k in kinds.values())
    n_l = sum(k["labels"] for k in kinds.values())
    p, r = _ratio(tp, n_a), _ratio(tp, n_l)
    overall = {"labels": n_l, "alerts": n_a, "tp": tp, "fp": n_a - tp, "fn": n_l - tp, "precision": p,
               "recall": r, "f1": None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)}
    return {"kinds": kinds, "overall": overall, "unscored": dict(sorted(unscored.items()))}


def read_jsonl(path: Path) -> list[dict]:
    out = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}, line {n}: not a JSON object")
            out.append(rec)
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_table(result: dict) -> str:
    head = f"{'kind':<22}{'labels':>7}{'alerts':>7}{'tp':>5}{'fp':>5}{'fn':>5}{'prec':>7}{'recall':>7}" \
           f"{'f1':>7}{'delay_h':>9}  decoy hits"
    rows = [head, "-" * len(head)]
    for kind, k in result["kinds"].items():
        hits = ", ".join(f"{n}={c}" for n, c in k["decoy_hits"].items()) or "-"
        rows.append(f"{kind:<22}{k['labels']:>7}{k['alerts']:>7}{k['tp']:>5}{k['fp']:>5}{k['fn']:>5}"
                    f"{_fmt(k['precision']):>7}{_fmt(k['recall']):>7}{_fmt(k['f1']):>7}"
                    f"{_fmt(k['delay_h_median'], 1):>9}  {hits}")
    o = result["overall"]
    rows.append("-" * len(head))
    rows.append(f"{'all scored':<22}{o['labels']:>7}{o['alerts']:>7}{o['tp']:>5}{o['fp']:>5}{o['fn']:>5}"
                f"{_fmt(o['precision']):>7}{_fmt(o['recall']):>7}{_fmt(o['f1']):>7}")
    if result["unscored"]:
        rows.append("not scored: " + ", ".join(f"{k}={n}" for k, n in result["unscored"].items()))
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alerts", required=True, type=Path, help="alert events, JSON lines (docs/FORMATS.md)")
    parser.add_argument("--labels", required=True, type=Path, help="labels.jsonl written by `cistern simulate`")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    for name in ("alerts", "labels"):
        path = getattr(args, name)
        if not path.is_file():
            print(f"cistern evaluate: --{name} {path}: file not found", file=sys.stderr)
            return 2
    try:
        alerts = read_jsonl(args.alerts)
        labels = read_jsonl(args.labels)
    except (ValueError, OSError) as e:
        print(f"cistern evaluate: {e}", file=sys.stderr)
        return 1
    result = evaluate(alerts, labels)
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(result))
    return 0
