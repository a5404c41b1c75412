"""Fixtures for the end-to-end tests under a real systemd: wheelhouses and a booted container.

Each test module boots ONE container (module scope) and walks its scenario in order. Without
root or systemd-nspawn the tests skip and say why, unless XSWARM_REQUIRE_SYSTEMD=1 (set by
.ci/run), in which case that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd import nspawn

CHECKOUT = Path(__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip"]
WH = "/mnt/wh"
TESTS = "/mnt/tests"
XSWARM = "/opt/xswarm/current/venv/bin/xswarm"
PY = "/opt/xswarm/current/venv/bin/python"
TOKEN = "e2e-supervisor-token-long-enough-for-doctor"
CONTROL_TOKEN = "e2e-control-token-long-enough-for-doctor-too"
TEST_CONFIG = """\
[voice.bridge]
engine = "echo"
drain_timeout = 20.0
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/systemd/" in str(item.fspath):
            item.add_marker(pytest.mark.systemd)


def require_container() -> None:
    reason = nspawn.unavailable()
    if reason is None:
        return
    if os.environ.get("XSWARM_REQUIRE_SYSTEMD") == "1":
        pytest.fail(f"XSWARM_REQUIRE_SYSTEMD=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _source_copy(target: Path) -> None:
    for name in ("src", "deploy", "pyproject.toml", "README.md", "LICENSE"):
        source = CHECKOUT / name
        if source.is_dir():
            shutil.copytree(
                source,
                target / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache"),
            )
        elif source.exists():
            shutil.copy2(source, target / name)


def build_release(work: Path, out: Path, version: str, broken: bool = False) -> Path:
    """A wheel of this checkout as ``version``; ``broken`` makes its voice service die at start."""
    tree = work / f"src-{version}"
    _source_copy(tree)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(
        re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text(), count=1)
    )
    init = tree / "src/xswarm/__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    if broken:
        service = tree / "src/xswarm/bridge/service.py"
        service.write_text(
            service.read_text() + "\nraise SystemExit("
            "'release built broken on purpose: tests the automatic rollback')\n"
        )
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
    )
    return next(out.glob(f"xswarm-{version}-*.whl"))


@pytest.fixture(scope="session")
def wheelhouses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/mnt/wh in the container: deps/ (third-party wheels) and one folder per release."""
    require_container()
    root = tmp_path_factory.mktemp("wheelhouses")
    work = tmp_path_factory.mktemp("release-src")
    wheel = build_release(work, root / "0.1.0", "0.1.0")
    subprocess.run(
        [*PIP, "wheel", "-q", "-w", str(root / "deps"), str(wheel)], check=True, capture_output=True
    )
    (root / "deps" / wheel.name).unlink()
    _link_deps(root, "0.1.0")
    (root / "work").symlink_to(work)
    return root


def _link_deps(root: Path, version: str) -> None:
    for dep in (root / "deps").iterdir():
        link = root / version / dep.name
        if not link.exists():
            os.link(dep, link)


def add_release(wheelhouses: Path, version: str, broken: bool = False) -> None:
    if not list((wheelhouses / version).glob(f"xswarm-{version}-*.whl")):
        build_release(wheelhouses / "work", wheelhouses / version, version, broken)
    _link_deps(wheelhouses, version)


@pytest.fixture(scope="module")
def container(
    wheelhouses: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[nspawn.Container]:
    log = tmp_path_factory.mktemp("nspawn") / "console.log"
    binds = [(wheelhouses, WH), (Path(__file__).parent, TESTS)]
    with nspawn.booted(log, binds) as booted:
        yield booted


def bootstrap_install(box: nspawn.Container, version: str = "0.1.0", args: str = "") -> str:
    """What an operator does: pip-install xswarm anywhere, then `xswarm install` as root."""
    box.sh(
        f"python3 -m venv /root/boot && /root/boot/bin/pip install -q --no-index "
        f"--find-links {WH}/{version} xswarm=={version}"
    )
    done = box.sh(f"/root/boot/bin/xswarm install --wheelhouse {WH}/{version} {args}")
    return done.stdout


def configure(box: nspawn.Container, config: str = TEST_CONFIG) -> None:
    box.sh(
        f"cat > /opt/xswarm/config.toml <<'EOF'\n{config}EOF\n"
        f"chown root:xswarm /opt/xswarm/config.toml && "
        f"sed -i 's/^XSWARM_SUPERVISOR_TOKEN=.*$/XSWARM_SUPERVISOR_TOKEN={TOKEN}/; "
        f"s/^XSWARM_CONTROL_TOKEN=.*$/XSWARM_CONTROL_TOKEN={CONTROL_TOKEN}/' /opt/xswarm/.env && "
        "{ grep -q '^XSWARM_CONTROL_TOKEN=' /opt/xswarm/.env || "
        f"echo 'XSWARM_CONTROL_TOKEN={CONTROL_TOKEN}' >> /opt/xswarm/.env; }}"
    )


def start_call(
    box: nspawn.Container,
    name: str,
    port: int,
    seconds: float,
    mode: str = "hold",
    call_seconds: float = 1.0,
) -> str:
    """Start a caller inside the container as a transient unit; returns its result path."""
    out = f"/run/{name}.json"
    box.run(
        [
            "systemd-run",
            f"--unit={name}",
            "--collect",
            "--quiet",
            f"--setenv=PYTHONPATH={TESTS}",
            PY,
            f"{TESTS}/call_client.py",
            mode,
            "--port",
            str(port),
            "--seconds",
            str(seconds),
            "--call-seconds",
            str(call_seconds),
            "--out",
            out,
        ]
    )
    return out


def call_result(box: nspawn.Container, out: str, timeout: float) -> dict[str, object]:
    result: dict[str, object] = json.loads(box.wait_for(out, timeout))
    return result


def readyz(box: nspawn.Container, port: int) -> tuple[int, dict[str, object]]:
    done = box.run(
        [
            PY,
            "-c",
            (
                "import sys, urllib.request, urllib.error\n"
                f"try:\n r = urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=3)\n"
                " print(r.status); print(r.read().decode())\n"
                "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n"
                "except OSError as e:\n print(0); print('{}')\n"
            ),
        ],
        check=False,
    )
    lines = done.stdout.splitlines() or ["0", "{}"]
    try:
        body = json.loads(lines[1]) if len(lines) > 1 else {}
    except ValueError:
        body = {}
    return int(lines[0]), body


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll until ``predicate()`` is true; returns the seconds it took."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - begin
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
