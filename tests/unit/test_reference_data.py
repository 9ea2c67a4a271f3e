"""The reference files the tests read travel with the repository, unchanged, and nothing in the
repository reads or cites anything outside it."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests/data"
#: A path built from quoted pieces (the folder, then magento or deploy); not matching itself.
_SHARED_SEGMENT = re.compile(r"[\"']shar" r"ed[\"']\s*/\s*[\"'](magento|deploy)")


@pytest.mark.parametrize(
    "relative", ["magento/admin-schema-2.4.9.yaml", "compose/compose-spec.json"]
)
def test_reference_file_is_the_published_one(relative: str) -> None:
    path = DATA / relative
    sources = (path.parent / "SOURCES.md").read_text()
    recorded = re.search(r"\*\*sha256\*\*: `([0-9a-f]{64})`", sources)
    assert recorded, f"{path.parent / 'SOURCES.md'} names no sha256"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded.group(1)
    assert "License**: Apache License 2.0" in sources


def test_nothing_reads_or_cites_files_outside_the_repository() -> None:
    # Spelled in pieces so that this file does not match itself.
    outside = ["..", "/shared"]
    spec = "REFUND" + "_API.md"
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    offenders = []
    for name in filter(None, listed):
        path = ROOT / name.decode()
        if path.suffix not in {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".ini", ""}:
            continue
        if not path.is_file() or path.stat().st_size > 200_000:
            continue
        text = path.read_text(errors="replace")
        if "".join(outside) in text or spec in text or _SHARED_SEGMENT.search(text):
            offenders.append(name.decode())
    assert offenders == []
