"""The project's documentation stands on its own (issue 18): no file a user gets cites the reference
notes kept outside the repository (`../shared/`, REFERENCE.md); tests may, users never see them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"\.\./shared|REFERENCE\.md|REFERENCE §")


def shipped_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return [PROJECT_ROOT / name for name in listed if not name.startswith("tests/")]


def test_no_file_outside_tests_cites_the_private_reference_notes():
    cited = []
    for path in shipped_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if CITATION.search(line):
                cited.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()[:120]}")
    assert cited == [], "cite the public documentation page instead:\n" + "\n".join(cited)


def test_the_check_sees_the_files_users_get():
    names = {str(path.relative_to(PROJECT_ROOT)) for path in shipped_files()}
    assert {"README.md", "config.yaml", "mappings/salesforce.yaml", "docs/mappings.md",
            "connector/okendo.py"} <= names
