"""The layout keeps its promises: small functions and modules, a thin `ingest/`, import rules (import-linter, run by
`make lint`), and a source that loads nothing downstream of it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("devices", "ingest", "detectors", "simulator", "bench", "tests")
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 600
KNOWN_LONG: set[str] = set()  # a module or function allowed to stay long (none now)


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_function_over_100_lines_and_no_module_over_600():
    long = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES and rel not in KNOWN_LONG:
            long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in KNOWN_LONG:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert long == []


def test_ingest_holds_at_most_eight_modules_of_its_own():
    modules = sorted(p.name for p in (ROOT / "ingest").glob("*.py"))
    assert len(modules) <= 8, modules


@pytest.mark.parametrize("module,forbidden", [
    ("ingest.sources.mqtt", ("ingest.dispatch", "ingest.pipeline", "detectors", "simulator", "ingest.tools")),
    ("ingest.sinks.influx", ("ingest.dispatch", "ingest.pipeline", "detectors", "simulator", "ingest.tools")),
    ("ingest.app", ("simulator", "ingest.tools")),
])
def test_importing_a_part_loads_nothing_downstream_of_it(module, forbidden):
    code = (f"import sys, {module}; "
            f"print(sorted(m for m in sys.modules if m.startswith({forbidden!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"


def test_cistern_run_does_not_load_the_tools():
    code = ("import sys; from ingest.cli import build_parser; build_parser('run'); "
            "print(sorted(m for m in sys.modules if m.startswith(('simulator', 'ingest.tools'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_rules_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter not installed in this environment")
    r = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
