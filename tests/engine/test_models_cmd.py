"""``xswarm models pull`` and ``check``, run as the real command against a loopback Hub.

The Hugging Face Hub is outside our reach, so a small HTTP server stands in for it, speaking
the Hub's published file protocol (``/{repo}/resolve/{revision}/{file}``, HEAD metadata in
``X-Repo-Commit`` / ``ETag``, errors in ``X-Error-Code``). Everything on our side is real: the
console script, huggingface_hub, the files on disk, and the engine loading what was pulled.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from xswarm import config as xconfig
from xswarm.engine import moshi_loader
from xswarm.engine.moshi import MoshiEngine

pytestmark = pytest.mark.moshi

XSWARM = Path(sys.executable).parent / "xswarm"
COMMIT = "c0ffee" + "0" * 34


class FakeHub(BaseHTTPRequestHandler):
    repos: dict[str, dict[str, bytes]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _find(self) -> bytes | None:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self._refuse(404, "RepoNotFound")
            return None
        repo, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
        files = self.repos.get(repo)
        if files is None:
            self._refuse(404, "RepoNotFound")
            return None
        if filename not in files:
            self._refuse(404, "EntryNotFound")
            return None
        body = files[filename]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body

    def _refuse(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._find()

    def do_GET(self) -> None:  # noqa: N802
        body = self._find()
        if body is not None:
            self.wfile.write(body)


@pytest.fixture
def hub(tiny_moshi: dict[str, Any]) -> Iterator[str]:
    tiny_dir = Path(tiny_moshi["config"]).parent
    FakeHub.repos = {
        "someone/tiny-moshi": {
            "config.json": (tiny_dir / "config.json").read_bytes(),
            "mimi_config.json": (tiny_dir / "mimi_config.json").read_bytes(),
            moshi_loader.DEFAULT_MOSHI_NAME: Path(tiny_moshi["moshi_weights"]).read_bytes(),
            moshi_loader.DEFAULT_MIMI_NAME: Path(tiny_moshi["mimi_weights"]).read_bytes(),
            moshi_loader.DEFAULT_TOKENIZER_NAME: Path(tiny_moshi["tokenizer"]).read_bytes(),
        }
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def xswarm(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full_env |= {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"} | env
    return subprocess.run(
        [str(XSWARM), *args], capture_output=True, text=True, env=full_env, timeout=120
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[voice.moshi]\ndevice = "cpu"\ndtype = "fp32"\nslots = 2\n'
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    return path


def test_pull_fetches_into_the_state_dir_and_prints_working_config(
    hub: str, tmp_path: Path, config_file: Path
) -> None:
    done = xswarm(
        tmp_path,
        "models",
        "pull",
        "--repo",
        "someone/tiny-moshi",
        "--config",
        str(config_file),
        HF_ENDPOINT=hub,
    )
    assert done.returncode == 0, done.stderr
    dest = tmp_path / "state" / "models" / "someone--tiny-moshi"
    for name in FakeHub.repos["someone/tiny-moshi"]:
        assert (dest / name).read_bytes() == FakeHub.repos["someone/tiny-moshi"][name]
    printed = tomllib.loads(done.stdout)["voice"]["moshi"]
    assert printed["hf_repo"] == "someone/tiny-moshi"
    assert printed["moshi_weights"] == str((dest / moshi_loader.DEFAULT_MOSHI_NAME).resolve())
    assert printed["config"] == str((dest / "config.json").resolve())

    # Paste the printed lines: the engine loads exactly those files, with no network.
    pasted = tmp_path / "pasted.toml"
    pasted.write_text(done.stdout + '\ndevice = "cpu"\ndtype = "fp32"\nslots = 2\ntop_k = 50\n')
    engine = MoshiEngine(xconfig.load(pasted))
    engine.load()
    engine.close()
    # Or leave the paths empty: start-up finds the pulled files in the state dir by itself.
    bare = tmp_path / "bare.toml"
    bare.write_text(
        config_file.read_text().replace("[paths]", 'hf_repo = "someone/tiny-moshi"\n[paths]')
    )
    checked = xswarm(tmp_path, "models", "check", "--config", str(bare), HF_HUB_OFFLINE="1")
    assert checked.returncode == 0, checked.stderr
    assert str(dest / "config.json") in checked.stdout
    assert "MOSHI can start on cpu with 2 slots" in checked.stdout
    assert "slots would fit" in checked.stdout

    greedy = bare.read_text().replace("slots = 2", "slots = 4096\ncontext = 100000")
    bare.write_text(greedy)
    refused = xswarm(tmp_path, "models", "check", "--config", str(bare), HF_HUB_OFFLINE="1")
    assert refused.returncode == 78
    assert refused.stderr.startswith("xswarm: 4096 MOSHI slots need ")


def test_check_names_what_is_missing_and_exits_78(tmp_path: Path, config_file: Path) -> None:
    done = xswarm(tmp_path, "models", "check", "--config", str(config_file), HF_HUB_OFFLINE="1")
    assert done.returncode == 78
    assert done.stderr.startswith("xswarm: no MOSHI weights (model.safetensors of kyutai/")
    assert "run `xswarm models pull`" in done.stderr and done.stderr.count("\n") == 1


def test_pull_refuses_while_offline(tmp_path: Path, config_file: Path) -> None:
    done = xswarm(tmp_path, "models", "pull", "--config", str(config_file), HF_HUB_OFFLINE="1")
    assert done.returncode == 1
    assert "HF_HUB_OFFLINE is set" in done.stderr
    assert not (tmp_path / "state" / "models").exists()


def test_pull_explains_an_unknown_repo_and_an_unreachable_hub(
    hub: str, tmp_path: Path, config_file: Path
) -> None:
    done = xswarm(
        tmp_path,
        "models",
        "pull",
        "--repo",
        "someone/nothing",
        "--config",
        str(config_file),
        HF_ENDPOINT=hub,
    )
    assert done.returncode == 1
    assert "repository someone/nothing does not exist on the Hugging Face Hub" in done.stderr
    assert "Traceback" not in done.stderr

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    done = xswarm(
        tmp_path,
        "models",
        "pull",
        "--repo",
        "someone/tiny-moshi",
        "--config",
        str(config_file),
        HF_ENDPOINT=closed,
    )
    assert done.returncode == 1
    assert "cannot reach the Hugging Face Hub" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

    bad = xswarm(tmp_path, "models", "pull", "--repo", "no-slash", "--config", str(config_file))
    assert bad.returncode == 1 and "owner/name" in bad.stderr


def test_pull_names_a_repo_without_moshi_files(hub: str, tmp_path: Path, config_file: Path) -> None:
    FakeHub.repos["someone/other"] = {"config.json": json.dumps({"dim": 8}).encode()}
    done = xswarm(
        tmp_path,
        "models",
        "pull",
        "--repo",
        "someone/other",
        "--config",
        str(config_file),
        HF_ENDPOINT=hub,
    )
    assert done.returncode == 1
    assert "someone/other has no file model.safetensors; is it a MOSHI repository?" in done.stderr
