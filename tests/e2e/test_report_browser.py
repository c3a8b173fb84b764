"""The report as a person sees it: headless Chromium renders `cistern report`'s page; the screenshot is not blank and
every section and chart is there. Chromium missing: skipped locally, a failure in CI."""

import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("timeline", "signal_blocking", "network_outage", "reverse_flow", "bypass", "disinfection", "water_quality",
            "pump_room_intrusion", "scores")
CHART_SECTIONS = SECTIONS[:-1]


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is not installed in CI (make system installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def chromium_args(profile: Path) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISTERN_")}
    r = subprocess.run([sys.executable, "-m", "ingest", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_png(path: Path) -> np.ndarray:
    """8-bit RGB/RGBA/grey PNG → array (h, w, channels); enough of the format for Chromium's screenshots."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    assert header is not None
    w, h, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (0, 2, 4, 6), f"unsupported PNG {header}"
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.int32)
    for y in range(h):
        f, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = row
        elif f == 1:  # Sub: a running sum per channel
            cur = np.cumsum(row.reshape(w, bpp), axis=0).reshape(-1) & 0xFF
        elif f == 2:  # Up
            cur = (row + prev) & 0xFF
        else:  # Average and Paeth depend on the pixel just decoded: byte by byte
            cur = np.zeros_like(row)
            r, p = row.tolist(), prev.tolist()
            c = [0] * len(r)
            for i in range(len(r)):
                a = c[i - bpp] if i >= bpp else 0
                if f == 3:
                    c[i] = (r[i] + (a + p[i]) // 2) & 0xFF
                else:
                    b, d = p[i], p[i - bpp] if i >= bpp else 0
                    pa, pb, pc = abs(b - d), abs(a - d), abs(a + b - 2 * d)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else d)
                    c[i] = (r[i] + pred) & 0xFF
            cur = np.array(c, dtype=np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


class Dom(HTMLParser):
    """Section ids, and the images inside each section."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.current = a["id"]
            self.sections[self.current] = []
        elif tag == "img" and self.current is not None:
            self.sections[self.current].append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A small simulated city replayed through the pipeline, and `cistern report` over its alerts."""
    work = tmp_path_factory.mktemp("report")
    cli("simulate", "--out", str(work / "sim"), "--meters", "150", "--days", "21", "--quiet")
    cli("replay", str(work / "sim" / "capture.jsonl"), "--registry", str(work / "sim" / "registry"), "--state-dir",
        str(work / "state"), "--alerts-file", str(work / "alerts.jsonl"), "--log-level", "WARNING")
    r = cli("report", "--alerts", str(work / "alerts.jsonl"), "--capture", str(work / "sim" / "capture.jsonl"),
            "--registry", str(work / "sim" / "registry"), "--labels", str(work / "sim" / "labels.jsonl"),
            "--out", str(work / "report"))
    page = Path(r.stdout.strip())
    assert page == (work / "report" / "report.html").resolve()
    return page


def test_report_renders_in_chromium_with_every_section_and_chart(report, tmp_path):
    args = chromium_args(tmp_path / "profile")
    dom = subprocess.run([*args, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Dom()
    parsed.feed(dom.stdout)
    assert list(parsed.sections) == list(SECTIONS)
    for sid in CHART_SECTIONS:
        assert parsed.sections[sid], f"section {sid} has no chart"
        for src in parsed.sections[sid]:
            chart = report.parent / src
            assert chart.is_file() and chart.stat().st_size > 500, src
            root = ET.parse(chart).getroot()  # well-formed SVG
            assert root.tag.endswith("svg")
            data = [g for g in root.iter() if g.get("class") == "data"]
            assert data and len(list(data[0])) > 0, f"{src} draws nothing"
    assert "<table" in dom.stdout.split('id="scores"')[1]

    shot = tmp_path / "page.png"
    r = subprocess.run([*args, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    pixels = read_png(shot)[..., :3].astype(np.float64)
    assert pixels.shape[:2] == (4000, 1280)
    # a blank (all white) page has no variance; charts and text give plenty
    assert pixels.var() > 100
    # and not just a strip at the top: the lower half of the page holds charts too
    assert pixels[2000:].var() > 50
    # colour, not only black text on white: the charts' lines and cells are there
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 80).mean() > 0.01


def test_report_without_capture_still_has_every_section(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text('{"alert_id": "a1", "event": "raised", "kind": "reverse_flow", "severity": "warning", '
                      '"subject": {"type": "meter", "id": "M000001"}, "district": "d01", '
                      '"start": "2026-09-02T00:00:00Z", "detected_at": "2026-09-02T06:00:00Z", "summary": "s"}\n')
    r = cli("report", "--alerts", str(alerts), "--out", str(tmp_path / "r"))
    page = Path(r.stdout.strip()).read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "Needs --capture and --registry" in page


def test_report_draws_the_same_examples_from_a_capture_with_other_spacing(report, tmp_path):
    """A capture file's format fixes the keys, not the spacing or their order: a capture re-written by another tool works."""
    import json

    work = report.parent.parent
    spaced = tmp_path / "capture.jsonl"
    with (work / "sim" / "capture.jsonl").open() as src, spaced.open("w") as dst:
        for line in src:
            rec = json.loads(line)
            dst.write(json.dumps({"payload": rec["payload"], "topic": rec["topic"]}) + "\n")
    cli("report", "--alerts", str(work / "alerts.jsonl"), "--capture", str(spaced), "--registry",
        str(work / "sim" / "registry"), "--out", str(tmp_path / "r"))
    assert sorted(p.name for p in (tmp_path / "r" / "charts").iterdir()) == \
        sorted(p.name for p in (report.parent / "charts").iterdir())
    assert "No disinfection was recorded" not in (tmp_path / "r" / "report.html").read_text()
