"""Finding, checking and sizing a MOSHI model before anything is allocated.

Start-up must fail in seconds with one line an operator can act on, not minutes later with a
CUDA out-of-memory trace. So everything here runs before a single weight is loaded: the files
are found (explicit paths, then the state directory ``xswarm models pull`` writes to, then the
Hugging Face cache, never the network), the device is checked, and the memory the requested
slots need is computed from the model config and the checkpoint headers and compared with the
device's free memory. Only ``check_device``, ``free_memory`` and the random-weight count
import torch.

With ``random_weights = true`` (speed measurement only, see ``random_model``) no weight files
are looked for: the paths are None, the architecture is the ``config`` file's or Kyutai's 7B,
and the weights' size comes from a build on torch's meta device.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xswarm.config import Config
from xswarm.errors import EngineLoadError

DEFAULT_MOSHI_NAME = "model.safetensors"
DEFAULT_MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
DEFAULT_TOKENIZER_NAME = "tokenizer_spm_32k_3.model"
CONFIG_NAME = "config.json"
INSTALL_HINT = (
    "moshi is not installed: pip install '.[moshi]' && pip install --no-deps moshi==0.2.13"
)
MAX_CONFIG_JSON_BYTES = 1 << 20

# Keys of moshi's config.json that describe the repository, not the LM's constructor.
_NON_LM_KEYS = (
    "moshi_name",
    "mimi_name",
    "tokenizer_name",
    "mimi_config_name",
    "lora_name",
    "model_type",
    "lm_gen_config",
    "tts_config",
    "stt_config",
    "model_id",
)
# Kyutai's 7B: the numbers the memory plan needs when no config.json is given.
KYUTAI_7B = {
    "dim": 4096,
    "num_layers": 32,
    "context": 3000,
    "depformer_dim": 1024,
    "depformer_num_layers": 6,
    "dep_q": 8,
}
KYUTAI_MIMI_TRANSFORMER = {"d_model": 512, "num_layers": 8, "context": 250}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
GIB = 1 << 30
# Not per slot: CUDA graphs, cuBLAS workspaces, allocator slack; measured budgets, not exact.
CUDA_RESERVE_BYTES = 3 * GIB // 2
CPU_RESERVE_BYTES = GIB // 2
NO_CFG = (
    "[voice.moshi] cfg_coef = {} needs a model with conditioning; "
    "this one has none: set cfg_coef = 1.0"
)
# Activations and temporaries of one slot's step, on top of its caches.
PER_SLOT_SLACK = 0.05


class ModelAbsent(EngineLoadError):
    """MOSHI cannot run here at all: no package, no model files or no device to run on.

    The only failures ``engine = "auto"`` answers with echo; every other one (a damaged file,
    a config that does not fit, too little memory) stops start-up, because an operator who
    installed a model wants to hear about it, not an echo.
    """


@dataclass(frozen=True)
class ModelFiles:
    """Where each part of the model lives, and the configs read from disk (None: Kyutai's).

    Weight paths are None only with ``random_weights = true``: the model is built untrained;
    the tokenizer is None then too unless one is configured (``HashedTokenizer`` stands in).
    """

    moshi_weights: Path | None
    mimi_weights: Path | None
    tokenizer: Path | None
    lm_config: dict[str, Any] | None
    mimi_config: dict[str, Any] | None
    config_path: Path | None = None

    @property
    def random(self) -> bool:
        return self.moshi_weights is None


def missing_modules() -> str | None:
    """The install hint when torch, moshi or their needs are absent; found without importing."""
    for module in ("torch", "moshi", "sentencepiece", "safetensors", "einops"):
        if importlib.util.find_spec(module) is None:
            return f"{INSTALL_HINT} ({module} is missing)"
    return None


def pulled_dir(config: Config, repo: str) -> Path:
    """The folder ``xswarm models pull`` fills for ``repo`` inside the state directory."""
    return config.state_dir() / "models" / repo.replace("/", "--")


def _from_hf_cache(repo: str, filename: str) -> Path | None:
    """A file of ``repo`` already in the Hugging Face cache; never touches the network."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def _from_repo(config: Config, repo: str, filename: str) -> Path | None:
    if not repo:
        return None
    local = pulled_dir(config, repo) / filename
    if local.is_file():
        return local
    return _from_hf_cache(repo, filename)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EngineLoadError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_JSON_BYTES:
        raise EngineLoadError(
            f"{what} {path} is {len(raw)} bytes; expected a JSON object under 1 MiB"
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineLoadError(
            f"{what} {path} is not valid JSON ({exc}); fix or replace it"
        ) from None
    if not isinstance(data, dict):
        raise EngineLoadError(f"{what} {path} must hold a JSON object of LM settings")
    return data


def _explicit(value: str, key: str, what: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelAbsent(
            f"no {what} at {path} ([voice.moshi] {key}); fix the path or run `xswarm models pull`"
        )
    return path


def resolve_files(config: Config) -> ModelFiles:
    """Find every file the model needs, locally only; EngineLoadError names what is missing."""
    settings = config.moshi
    if settings.random_weights:
        return _random_files(config)
    repo = settings.hf_repo
    raw: dict[str, Any] | None = None
    config_path: Path | None = None
    if settings.config:
        config_path = _explicit(settings.config, "config", "MOSHI model config")
    else:
        config_path = _from_repo(config, repo, CONFIG_NAME)
    if config_path is not None:
        raw = _read_json(config_path, "MOSHI model config")
    config_dir = config_path.parent if config_path is not None else None

    names = dict(raw or {})
    paths: dict[str, Path] = {}
    parts = (
        (
            "moshi_weights",
            settings.moshi_weights,
            "moshi_name",
            DEFAULT_MOSHI_NAME,
            "MOSHI weights",
        ),
        ("mimi_weights", settings.mimi_weights, "mimi_name", DEFAULT_MIMI_NAME, "Mimi weights"),
        (
            "tokenizer",
            settings.tokenizer,
            "tokenizer_name",
            DEFAULT_TOKENIZER_NAME,
            "MOSHI text tokenizer",
        ),
    )
    for key, explicit, name_key, default_name, what in parts:
        if explicit:
            paths[key] = _explicit(explicit, key, what)
            continue
        filename = str(names.get(name_key, default_name))
        candidates = [config_dir / filename] if config_dir is not None else []
        local = next((c for c in candidates if c.is_file()), None)
        found = local or _from_repo(config, repo, filename)
        if found is None:
            where = f"{pulled_dir(config, repo)} or the Hugging Face cache" if repo else "anywhere"
            raise ModelAbsent(
                f"no {what} ({filename} of {repo or 'no hf_repo'}) in {where}; "
                f"run `xswarm models pull` or set [voice.moshi] {key}"
            )
        paths[key] = found

    mimi_config = None
    if raw is not None and raw.get("mimi_config_name"):
        name = str(raw["mimi_config_name"])
        beside = config_dir / name if config_dir is not None else None
        mimi_path = (
            beside if beside is not None and beside.is_file() else _from_repo(config, repo, name)
        )
        if mimi_path is None:
            raise EngineLoadError(
                f"MOSHI model config names mimi_config_name {name!r}, which is not beside it "
                f"nor in {repo or 'any repository'}; put it next to the config.json"
            )
        mimi_config = _read_json(mimi_path, "Mimi config")
    lm_config = None if raw is None else {k: v for k, v in raw.items() if k not in _NON_LM_KEYS}
    return ModelFiles(
        paths["moshi_weights"],
        paths["mimi_weights"],
        paths["tokenizer"],
        lm_config,
        mimi_config,
        config_path,
    )


def _random_files(config: Config) -> ModelFiles:
    """The architecture (and any tokenizer) random weights are built with; no weight files."""
    settings = config.moshi
    for key in ("moshi_weights", "mimi_weights"):
        if getattr(settings, key):
            raise EngineLoadError(
                f"[voice.moshi] random_weights = true and {key} are both set; random weights "
                f"ignore files: remove one"
            )
    tokenizer = (
        _explicit(settings.tokenizer, "tokenizer", "MOSHI text tokenizer")
        if settings.tokenizer
        else None
    )
    if not settings.config:
        return ModelFiles(None, None, tokenizer, None, None)
    config_path = _explicit(settings.config, "config", "MOSHI model config")
    raw = _read_json(config_path, "MOSHI model config")
    mimi_config = None
    if raw.get("mimi_config_name"):
        mimi_path = config_path.parent / str(raw["mimi_config_name"])
        if not mimi_path.is_file():
            raise EngineLoadError(
                f"MOSHI model config names mimi_config_name {raw['mimi_config_name']!r}, which "
                "is not beside it; put it next to the config.json"
            )
        mimi_config = _read_json(mimi_path, "Mimi config")
    lm_config = {k: v for k, v in raw.items() if k not in _NON_LM_KEYS}
    return ModelFiles(None, None, tokenizer, lm_config, mimi_config, config_path)


def check_device(spec: str) -> Any:
    """The torch.device for ``spec``, or EngineLoadError saying which devices this machine has."""
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise EngineLoadError(
            f"device {spec!r} is not a device name; "
            'set [voice.moshi] device = "cuda", "cuda:N" or "cpu"'
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise EngineLoadError(
            f'device {spec} is not supported; set [voice.moshi] device = "cuda", "cuda:N" or "cpu"'
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ModelAbsent(
            f'device {spec} not found: no CUDA device; set [voice.moshi] device = "cpu"'
        )
    index = 0 if device.index is None else device.index
    if index >= count:
        present = ", ".join(f"cuda:{i}" for i in range(count))
        plural = "device" if count == 1 else "devices"
        raise ModelAbsent(
            f"device {spec} not found: this machine has {count} CUDA {plural} ({present})"
        )
    return torch.device("cuda", index)


def free_memory(device: Any) -> int:
    """Bytes free on ``device`` now: the GPU's free memory, or the host's available RAM."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def checkpoint_numel(path: Path, what: str) -> int:
    """Number of values stored in a safetensors checkpoint, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            total = 0
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = handle.get_slice(name).get_shape()
                count = 1
                for size in shape:
                    count *= int(size)
                total += count
    except Exception as exc:  # safetensors raises its own and OS errors for bad headers
        raise EngineLoadError(
            f"{what} {path} is not a readable safetensors checkpoint ({exc}); "
            "download it again with `xswarm models pull`"
        ) from None
    return total


@dataclass(frozen=True)
class MemoryPlan:
    """What the model needs on its device: fixed bytes, then bytes for each slot."""

    weights_bytes: int
    per_slot_bytes: int
    reserve_bytes: int

    def need(self, slots: int) -> int:
        return self.weights_bytes + self.reserve_bytes + slots * self.per_slot_bytes

    def slots_that_fit(self, free_bytes: int) -> int:
        spare = free_bytes - self.weights_bytes - self.reserve_bytes
        return max(0, spare // self.per_slot_bytes)


def plan_memory(
    lm_config: dict[str, Any] | None,
    mimi_config: dict[str, Any] | None,
    lm_numel: int,
    mimi_numel: int,
    dtype: str,
    context: int,
    cfg: bool,
    device_type: str,
) -> MemoryPlan:
    """Bytes for the weights and, per slot, for the KV caches (layers × 2 × context × dim).

    The LM runs in ``dtype``; Mimi stays in fp32 as Kyutai runs it. CFG doubles the LM batch.
    """
    lm = {**KYUTAI_7B, **(lm_config or {})}
    width = DTYPE_BYTES[dtype]
    lm_kv = int(lm["num_layers"]) * 2 * context * int(lm["dim"]) * width
    depformer_kv = (
        int(lm["depformer_num_layers"]) * 2 * int(lm["dep_q"]) * int(lm["depformer_dim"]) * width
    )
    if cfg:
        lm_kv, depformer_kv = 2 * lm_kv, 2 * depformer_kv
    mimi_tr = {**KYUTAI_MIMI_TRANSFORMER, **((mimi_config or {}).get("transformer") or {})}
    mimi_kv = (
        2 * int(mimi_tr["num_layers"]) * 2 * int(mimi_tr["context"]) * int(mimi_tr["d_model"]) * 4
    )
    per_slot = int((lm_kv + depformer_kv + mimi_kv) * (1 + PER_SLOT_SLACK))
    reserve = CUDA_RESERVE_BYTES if device_type == "cuda" else CPU_RESERVE_BYTES
    return MemoryPlan(lm_numel * width + mimi_numel * 4, max(per_slot, 1), reserve)


def check_fit(plan: MemoryPlan, slots: int, free_bytes: int, device_name: str) -> None:
    """Refuse ``slots`` the device cannot hold, saying how many would fit."""
    need = plan.need(slots)
    if need <= free_bytes:
        return
    fit = plan.slots_that_fit(free_bytes)
    advice = (
        f"set [voice.moshi] slots = {fit} (or lower [voice.bridge] max_concurrent_calls)"
        if fit > 0
        else 'use a larger device, a shorter [voice.moshi] context or dtype = "bf16"'
    )
    raise EngineLoadError(
        f"{slots} MOSHI slots need {need / GIB:.1f} GiB on {device_name} "
        f"({plan.weights_bytes / GIB:.1f} GiB weights "
        f"+ {plan.per_slot_bytes / GIB:.3f} GiB per slot "
        f"+ {plan.reserve_bytes / GIB:.1f} GiB reserve) but {free_bytes / GIB:.1f} GiB is free; "
        f"{fit} slots fit: {advice}"
    )


@dataclass(frozen=True)
class Preflight:
    """Everything start-up checked before allocating: files, device, plan, free memory."""

    files: ModelFiles
    device: Any
    plan: MemoryPlan
    free_bytes: int


def preflight(config: Config, slots: int) -> Preflight:
    """Every check that needs no model in memory, in the order an operator would fix them."""
    missing = missing_modules()
    if missing:
        raise ModelAbsent(missing)
    settings = config.moshi
    files = resolve_files(config)
    device = check_device(settings.device)
    cfg = settings.cfg_coef != 1.0
    if cfg and not (files.lm_config or {}).get("fuser"):
        raise EngineLoadError(NO_CFG.format(settings.cfg_coef))
    if files.moshi_weights is None or files.mimi_weights is None:
        from moshi.models import loaders

        from xswarm.engine.random_model import parameter_counts

        lm_kwargs = dict(files.lm_config or loaders._lm_kwargs)
        lm_numel, mimi_numel = parameter_counts(lm_kwargs, files.mimi_config)
    else:
        lm_numel = checkpoint_numel(files.moshi_weights, "MOSHI weights")
        mimi_numel = checkpoint_numel(files.mimi_weights, "Mimi weights")
    plan = plan_memory(
        files.lm_config,
        files.mimi_config,
        lm_numel,
        mimi_numel,
        settings.dtype,
        settings.context,
        cfg,
        device.type,
    )
    free = free_memory(device)
    check_fit(plan, slots, free, str(device))
    return Preflight(files, device, plan, free)
