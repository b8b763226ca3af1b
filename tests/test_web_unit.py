"""Runs the front end's node:test unit tests (tests/web/*.test.js) so one pytest command covers them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_TESTS = sorted((REPO / "tests" / "web").glob("*.test.js"))


def test_web_logic_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (Node.js >= 18) is not installed; the web unit tests need it")
    assert NODE_TESTS, "no tests/web/*.test.js found"
    result = subprocess.run([node, "--test", *map(str, NODE_TESTS)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
