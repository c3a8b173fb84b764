"""The operator docs' settings reference is the one the code has (regenerate with docs/gen_settings.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_settings_reference_in_operations_doc_is_current():
    r = subprocess.run([sys.executable, "docs/gen_settings.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_setting_is_documented_in_the_reference():
    from ingest.config import all_settings, env_name

    doc = (ROOT / "docs" / "OPERATIONS.md").read_text()
    missing = [env_name(n) for n in all_settings() if env_name(n) not in doc]
    assert missing == []
