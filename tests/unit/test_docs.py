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


def _user_docs() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]}


def test_the_docs_point_to_nothing_outside_the_repository():
    """Users have the repository, not the project's design notes: no CONTRACT/DOMAIN references, and every
    relative link lands on a file that exists."""
    import re

    for name, text in _user_docs().items():
        assert not re.search(r"CONTRACT|DOMAIN\.md|\.\./shared", text), name
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert ((ROOT / name).parent / target).exists(), f"{name} links to {target}, which is not there"


def test_formats_names_every_alert_kind_and_the_readme_links_it():
    from detectors import DETECTORS

    formats = (ROOT / "docs" / "FORMATS.md").read_text()
    missing = [k for cls in DETECTORS.values() for k in cls.kinds if f"`{k}`" not in formats]
    assert missing == [], "docs/FORMATS.md does not list these alert kinds"
    assert "FORMATS.md" in (ROOT / "README.md").read_text()


def test_every_setting_the_docs_name_exists():
    """A setting named in the README, the docs or the changelog is one Cistern reads (a renamed or removed one left in
    the prose sends an operator to set something that does nothing)."""
    import re

    from ingest.config import all_settings, env_name

    known = {env_name(n) for n in all_settings()} | {"CISTERN_CONFIG"}
    texts = {**_user_docs(), "CHANGELOG.md": (ROOT / "CHANGELOG.md").read_text()}
    for name, text in texts.items():
        named = set(re.findall(r"\bCISTERN_[A-Z0-9_]*[A-Z0-9]\b", text))
        # (prefixes such as CISTERN_BYPASS_* name a family; the test servers' variables are the test suite's)
        unknown = sorted(n for n in named if n not in known and not n.startswith("CISTERN_TEST_")
                         and not any(k.startswith(n + "_") for k in known))
        assert unknown == [], f"{name} names settings Cistern does not have: {unknown}"
