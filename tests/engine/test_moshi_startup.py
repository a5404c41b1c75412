"""Start-up: files found locally only, devices checked, memory fit computed before allocation.

Each failure must be one line that names the cause and the fix, raised as EngineLoadError
(exit status 78) before any weight is loaded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xswarm.config import Config
from xswarm.engine import moshi_loader
from xswarm.engine.moshi import MoshiEngine, probe
from xswarm.errors import EX_CONFIG, EngineLoadError

pytestmark = pytest.mark.moshi

GIB = 1 << 30


def load_error(config: Config) -> str:
    with pytest.raises(EngineLoadError) as caught:
        MoshiEngine(config).load()
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_status == EX_CONFIG
    return message


def test_the_tiny_model_loads_and_probe_says_yes(moshi_config: Callable[..., Config]) -> None:
    config = moshi_config(slots=2)
    assert probe(config) is None
    engine = MoshiEngine(config)
    assert engine.capacity == 2 and engine.frame_samples == 1920 and engine.runs_in_thread
    engine.load()
    engine.close()


def test_slots_default_to_max_concurrent_calls(moshi_config: Callable[..., Config]) -> None:
    assert MoshiEngine(moshi_config().with_bridge(max_concurrent_calls=7)).capacity == 7


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("moshi_weights", "MOSHI weights"),
        ("mimi_weights", "Mimi weights"),
        ("tokenizer", "MOSHI text tokenizer"),
        ("config", "MOSHI model config"),
    ],
)
def test_a_missing_file_is_named_with_its_fix(
    moshi_config: Callable[..., Config], tmp_path: Path, key: str, what: str
) -> None:
    gone = tmp_path / "nowhere" / "file.bin"
    config = moshi_config(**{key: str(gone)})
    message = load_error(config)
    assert message == (
        f"no {what} at {gone} ([voice.moshi] {key}); fix the path or run `xswarm models pull`"
    )
    assert probe(config) == message


def test_weights_from_the_hugging_face_cache_or_nowhere(
    tiny_moshi: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty paths mean hf_repo, looked up in the local cache (its published layout) only."""
    from xswarm import config as xconfig

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    repo = "someone/tiny-moshi"
    data = {
        "voice.moshi": {
            "hf_repo": repo,
            "device": "cpu",
            "dtype": "fp32",
            "slots": 2,
            "top_k": 50,  # the tiny model has 64 audio tokens
        },
        "paths": {"state_dir": str(tmp_path / "state")},
    }
    config = xconfig.from_mapping(data)
    reason = probe(config)
    assert reason is not None
    assert reason.startswith("no MOSHI weights (model.safetensors of someone/tiny-moshi)")
    assert "xswarm models pull" in reason

    snapshot = cache / "models--someone--tiny-moshi" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--someone--tiny-moshi" / "refs").mkdir()
    (cache / "models--someone--tiny-moshi" / "refs" / "main").write_text("0" * 40)
    files = {
        "moshi_weights": "model.safetensors",
        "mimi_weights": "mimi.safetensors",
        "tokenizer": "tokenizer.model",
        "config": "config.json",
    }
    for key, name in files.items():
        shutil.copy(tiny_moshi[key], snapshot / name)
    shutil.copy(Path(tiny_moshi["config"]).parent / "mimi_config.json", snapshot)
    raw = json.loads((snapshot / "config.json").read_text())
    raw |= {"mimi_name": "mimi.safetensors", "tokenizer_name": "tokenizer.model"}
    (snapshot / "config.json").write_text(json.dumps(raw))

    assert probe(config) is None
    found = moshi_loader.resolve_files(config)
    assert found.moshi_weights == snapshot / "model.safetensors"
    assert found.mimi_config is not None and found.lm_config is not None
    assert "mimi_name" not in found.lm_config
    engine = MoshiEngine(config)
    engine.load()
    engine.close()


def test_weights_pulled_into_the_state_dir_are_found(
    tiny_moshi: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xswarm import config as xconfig

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    state = tmp_path / "state"
    pulled = state / "models" / "kyutai--moshiko-pytorch-bf16"
    pulled.mkdir(parents=True)
    shutil.copy(tiny_moshi["moshi_weights"], pulled / moshi_loader.DEFAULT_MOSHI_NAME)
    shutil.copy(tiny_moshi["mimi_weights"], pulled / moshi_loader.DEFAULT_MIMI_NAME)
    shutil.copy(tiny_moshi["tokenizer"], pulled / moshi_loader.DEFAULT_TOKENIZER_NAME)
    described = tmp_path / "described"
    described.mkdir()
    shutil.copy(tiny_moshi["config"], described)
    shutil.copy(Path(tiny_moshi["config"]).parent / "mimi_config.json", described)
    data = {
        "voice.moshi": {"config": str(described / "config.json"), "device": "cpu"},
        "paths": {"state_dir": str(state)},
    }
    found = moshi_loader.resolve_files(xconfig.from_mapping(data))
    assert found.moshi_weights == pulled / moshi_loader.DEFAULT_MOSHI_NAME
    assert found.tokenizer == pulled / moshi_loader.DEFAULT_TOKENIZER_NAME


def test_an_absent_cuda_device_is_refused(moshi_config: Callable[..., Config]) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for spec in ("cuda", "cuda:1"):
        message = load_error(moshi_config(device=spec))
        assert (
            message == f'device {spec} not found: no CUDA device; set [voice.moshi] device = "cpu"'
        )
    assert "not a device name" in load_error(moshi_config(device="banana"))
    assert "not supported" in load_error(moshi_config(device="meta"))


def test_a_cuda_index_beyond_the_machine_names_the_devices_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The GPU is outside our reach here: stand in for torch's count of one device."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert moshi_loader.check_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(EngineLoadError) as caught:
        moshi_loader.check_device("cuda:1")
    assert str(caught.value) == "device cuda:1 not found: this machine has 1 CUDA device (cuda:0)"


def kyutai_7b_plan() -> moshi_loader.MemoryPlan:
    return moshi_loader.plan_memory(
        None, None, 7_687_729_152, 79_308_609, "bf16", 3000, cfg=False, device_type="cuda"
    )


def test_the_7b_memory_plan_matches_the_measured_figures() -> None:
    plan = kyutai_7b_plan()
    # research: 15.4 GB of bf16 weights, 1.57 GB of KV cache per slot at context 3000
    assert 15.3e9 < plan.weights_bytes < 15.8e9
    assert 1.57e9 < plan.per_slot_bytes < 1.70e9
    cfg_plan = moshi_loader.plan_memory(
        None, None, 7_687_729_152, 79_308_609, "bf16", 3000, cfg=True, device_type="cuda"
    )
    assert cfg_plan.per_slot_bytes > 1.9 * plan.per_slot_bytes


def test_slots_that_cannot_fit_say_how_many_do() -> None:
    plan = kyutai_7b_plan()
    free = 79 * GIB
    fit = plan.slots_that_fit(free)
    assert 30 <= fit <= 40
    moshi_loader.check_fit(plan, fit, free, "cuda:0")
    with pytest.raises(EngineLoadError) as caught:
        moshi_loader.check_fit(plan, 64, free, "cuda:0")
    message = str(caught.value)
    assert message.startswith("64 MOSHI slots need ")
    assert f"but 79.0 GiB is free; {fit} slots fit: set [voice.moshi] slots = {fit}" in message
    with pytest.raises(EngineLoadError, match="0 slots fit: use a larger device"):
        moshi_loader.check_fit(plan, 1, 12 * GIB, "cuda:0")


def test_slots_that_cannot_fit_are_refused_through_the_real_path(
    moshi_config: Callable[..., Config],
) -> None:
    """4096 slots of 100000 steps of KV cache: hundreds of GiB, more than this host has."""
    message = load_error(moshi_config(slots=4096, context=100000))
    assert message.startswith("4096 MOSHI slots need ")
    assert "GiB is free" in message and "slots fit" in message


def test_damaged_or_mismatched_files_are_refused(
    tiny_moshi: dict[str, Any], moshi_config: Callable[..., Config], tmp_path: Path
) -> None:
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    assert "is not a readable safetensors checkpoint" in load_error(
        moshi_config(moshi_weights=str(garbage))
    )
    bad_json = tmp_path / "config.json"
    bad_json.write_text("{not json")
    assert "is not valid JSON" in load_error(moshi_config(config=str(bad_json)))
    bad_json.write_text("[1, 2]")
    assert "must hold a JSON object" in load_error(moshi_config(config=str(bad_json)))
    wider = json.loads(Path(tiny_moshi["config"]).read_text()) | {"dim": 128}
    shutil.copy(Path(tiny_moshi["config"]).parent / "mimi_config.json", tmp_path)
    bad_json.write_text(json.dumps(wider))
    assert "do not fit the model config" in load_error(moshi_config(config=str(bad_json)))
    assert "not a sentencepiece model" in load_error(moshi_config(tokenizer=str(garbage)))
    del wider["mimi_config_name"]
    bad_json.write_text(json.dumps(wider | {"dim": 64}))
    assert "do not fit the Mimi config" in load_error(moshi_config(config=str(bad_json)))


def test_probe_explains_a_missing_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "moshi" else real(name, *a)
    )
    from xswarm import config as xconfig

    reason = probe(xconfig.defaults())
    assert reason is not None
    assert reason.startswith("moshi is not installed: pip install '.[moshi]'")


def test_cfg_without_a_conditioned_model_is_refused(moshi_config: Callable[..., Config]) -> None:
    message = load_error(moshi_config(cfg_coef=2.0))
    assert message == (
        "[voice.moshi] cfg_coef = 2.0 needs a model with conditioning; "
        "this one has none: set cfg_coef = 1.0"
    )


def test_importing_the_engine_and_probing_leave_torch_unloaded(tmp_path: Path) -> None:
    """Echo-only machines and the CLI must not pay for importing torch."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from xswarm import config\n"
        "import xswarm.engine.moshi as m, xswarm.commands.models\n"
        "reason = m.probe(config.defaults())\n"
        "assert reason and 'no MOSHI weights' in reason, reason\n"
        "print(sorted({'torch', 'moshi'} & set(sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "XSWARM_STATE_DIR": str(tmp_path), "HF_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
