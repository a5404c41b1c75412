"""A real wheelhouse of this checkout (the xswarm wheel plus its dependencies), built once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out)]
    subprocess.run([*pip, "--no-deps", str(CHECKOUT)], check=True, capture_output=True)
    wheel = next(out.glob("xswarm-*.whl"))
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    return out
