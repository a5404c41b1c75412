"""How many real-time MOSHI calls one GPU serves: step time of the batched engine per batch size.

A call needs one step every 80 ms, so the largest batch whose p99 step time stays under
80 ms is the number of concurrent real-time calls per GPU. This drives ``MoshiEngine`` itself
(the bridge's step: batched Mimi encode, LMGen step, Mimi decode, token copy to the host), over
Kyutai's real 7B architecture (``loaders._lm_kwargs``) with RANDOM weights in bf16, so it
needs no download: the arithmetic is the same as with trained weights.

On a machine without a GPU it runs the tiny test model on CPU instead and says so: those
figures show the framework's overhead and how batching amortises it, nothing about Moshi 7B.

    .venv/bin/python benchmarks/moshi_batch.py                    # GPU if present, else tiny CPU
    .venv/bin/python benchmarks/moshi_batch.py --batches 1,8,16,32,48,64 --steps 50 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine.tiny_moshi import (  # noqa: E402
    build_tiny_moshi,
)
from xswarm import config as xconfig  # noqa: E402
from xswarm.engine import moshi_loader  # noqa: E402
from xswarm.engine.moshi import FRAME_SAMPLES, MoshiEngine  # noqa: E402
from xswarm.errors import EngineLoadError  # noqa: E402

BUDGET_MS = 80.0


def engine_config(moshi: dict[str, Any], slots: int) -> xconfig.Config:
    section = {k: v for k, v in moshi.items() if v is not None}
    return xconfig.from_mapping({"voice.moshi": section | {"slots": slots}}, "benchmark")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(engine: MoshiEngine, steps: int, warm_steps: int, seed: int) -> list[float]:
    """Every slot active with its own audio; wall time of each full step, host to host."""
    rng = np.random.default_rng(seed)
    voices = rng.standard_normal((engine.capacity, FRAME_SAMPLES)).astype(np.float32) * 0.05
    for slot in range(engine.capacity):
        engine.join(slot)
    times = []
    for index in range(warm_steps + steps):
        frames = {slot: np.roll(voices[slot], index * 97) for slot in range(engine.capacity)}
        started = time.perf_counter()
        out = engine.step(frames)
        elapsed = (time.perf_counter() - started) * 1000
        assert len(out) == engine.capacity
        if index >= warm_steps:
            times.append(elapsed)
    return times


def measure_masked(
    engine: MoshiEngine, steps: int, warm_steps: int, seed: int
) -> tuple[list[float], list[float]]:
    """All slots live, then 1 live + the rest masked (joined, no frame), step after step.

    Alternating the two puts both under the same machine load, so their ratio holds on a
    busy host where two runs one after the other would not compare.
    """
    rng = np.random.default_rng(seed)
    voices = rng.standard_normal((engine.capacity, FRAME_SAMPLES)).astype(np.float32) * 0.05
    for slot in range(engine.capacity):
        engine.join(slot)
    all_live, one_live = [], []
    for index in range(warm_steps + steps):
        for times, slots in ((all_live, range(engine.capacity)), (one_live, range(1))):
            frames = {slot: np.roll(voices[slot], index * 97) for slot in slots}
            started = time.perf_counter()
            engine.step(frames)
            if index >= warm_steps:
                times.append((time.perf_counter() - started) * 1000)
    return all_live, one_live


def timed(
    engine: MoshiEngine, args: argparse.Namespace, batch: int
) -> tuple[list[float], list[float] | None]:
    """Step times of every slot live and, with --masked, of one live slot beside them."""
    if args.masked:
        return measure_masked(engine, args.steps, args.warm_steps, batch)
    return measure(engine, args.steps, args.warm_steps, batch), None


def random_model(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any, Any]:
    """The bridge's own random-weight path (``random_weights = true``), built once for all B.

    The engine's ``_build`` makes the LM and Mimi exactly as a bridge with that key does; the
    built modules are then attached to one engine per batch size.
    """
    import torch

    torch.manual_seed(0)
    moshi: dict[str, Any] = {
        "device": args.device,
        "dtype": args.dtype,
        "context": args.context,
        "random_weights": True,
    }
    if args.arch == "tiny":
        tiny = build_tiny_moshi(workdir)
        moshi |= {"config": tiny["config"], "tokenizer": tiny["tokenizer"], "top_k": 50}
    builder = MoshiEngine(engine_config(moshi, 1))
    files = moshi_loader.resolve_files(builder.config)
    builder._build(files, moshi_loader.check_device(args.device))
    built = (builder._lm, builder._mimi, builder._tokenizer)
    builder.close()
    return built, files.mimi_config, moshi


def run_random(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    device = moshi_loader.check_device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory
        print(f"GPU: {name} ({total / 2**30:.1f} GiB), torch {torch.__version__}")
    else:
        name = "cpu"
        torch.set_num_threads(args.threads)
        print(f"CPU smoke run of the random-weight path ({args.threads} thread(s))")
    arch = "Kyutai 7B architecture" if args.arch == "7b" else "TINY test architecture"
    print(f"model: {arch}, RANDOM weights, {args.dtype}, context {args.context}")
    started = time.perf_counter()
    (lm, mimi, tokenizer), mimi_config, moshi = random_model(args, workdir)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    lm_numel = sum(p.numel() for p in lm.parameters())
    mimi_numel = sum(p.numel() for p in mimi.parameters())
    print(f"built in {time.perf_counter() - started:.1f} s: LM {lm_numel / 1e9:.3f} B parameters")
    plan = moshi_loader.plan_memory(
        _lm_shape(lm),
        mimi_config,
        lm_numel,
        mimi_numel,
        args.dtype,
        args.context,
        False,
        device.type,
    )
    # The weights are already resident: what is free now is for slots (and the reserve).
    free = moshi_loader.free_memory(device) + plan.weights_bytes
    fit = plan.slots_that_fit(free)
    print(
        f"memory plan: {plan.per_slot_bytes / 2**30:.4f} GiB per slot; "
        f"{fit} slots fit in {free / 2**30:.1f} GiB"
    )
    moshi |= {"cuda_graphs": not args.no_cuda_graphs}
    rows = []
    for batch in args.batches:
        if batch > fit:
            print(f"B={batch}: skipped, the memory plan fits {fit} slots")
            break
        engine = MoshiEngine(engine_config(moshi, batch))
        try:
            engine.attach(lm, mimi, tokenizer, device)
            times, masked = timed(engine, args, batch)
        except torch.cuda.OutOfMemoryError:
            print(f"B={batch}: out of GPU memory, stopping")
            engine.close()
            break
        engine.close()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row(batch, times, masked))
        print_row(rows[-1])
    return {"device": name, "model": f"moshi-{args.arch}-random-{args.dtype}", "rows": rows}


def _lm_shape(lm: Any) -> dict[str, int]:
    """The numbers the memory plan reads, taken from a built LM."""
    return {
        "dim": lm.dim,
        "num_layers": len(lm.transformer.layers),
        "dep_q": lm.dep_q,
        "depformer_dim": lm.depformer_in[0].out_features,
        "depformer_num_layers": len(lm.depformer.layers),
    }


def run_cpu(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    print("NO GPU: CPU mode runs the TINY random test model only (LM dim 64, 2 layers;")
    print("Mimi dim 32). These figures are framework overhead, NOT Moshi 7B; the GPU table")
    print(
        f"stays empty. CPU: {platform.processor() or platform.machine()}, "
        f"{args.threads} torch thread(s), torch {torch.__version__}"
    )
    lines = build_tiny_moshi(workdir)
    rows = []
    for batch in args.batches:
        engine = MoshiEngine(engine_config(lines | {"context": args.context}, batch))
        try:
            engine.load()  # the same path as real weights: files, fit check, load
        except EngineLoadError as exc:
            print(f"B={batch}: {exc}")
            break
        times, masked = timed(engine, args, batch)
        rows.append(row(batch, times, masked))
        engine.close()
        print_row(rows[-1])
    return {"device": "cpu", "model": "tiny-random-fp32", "rows": rows}


def row(batch: int, times: list[float], masked: list[float] | None = None) -> dict[str, Any]:
    p50, p99 = percentile(times, 50), percentile(times, 99)
    out = {
        "batch": batch,
        "steps": len(times),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "per_call_ms": round(p50 / batch, 3),
        "real_time": p99 < BUDGET_MS,
    }
    if masked is not None:
        one_live = percentile(masked, 50)
        out |= {
            "one_live_p50_ms": round(one_live, 2),
            "one_live_p99_ms": round(percentile(masked, 99), 2),
            "one_live_over_all_live": round(one_live / p50, 3),
        }
    return out


def print_row(r: dict[str, Any]) -> None:
    verdict = "real-time" if r["real_time"] else f"too slow for {BUDGET_MS:g} ms"
    print(
        f"B={r['batch']:>3}  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
        f"per call {r['per_call_ms']:7.3f} ms  {verdict}"
    )
    if "one_live_p50_ms" in r:
        print(
            f"       1 live + {r['batch'] - 1} masked: p50 {r['one_live_p50_ms']:8.2f} ms  "
            f"p99 {r['one_live_p99_ms']:8.2f} ms  = {r['one_live_over_all_live']:.2f} x all live"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu; default: cuda if any")
    parser.add_argument(
        "--batches", default="1,8,16,32,48,64", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--steps", type=int, default=50, help="measured steps per batch size")
    parser.add_argument("--warm-steps", type=int, default=10, help="unmeasured steps first")
    parser.add_argument("--context", type=int, default=3000)
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--threads", type=int, default=1, help="CPU mode: torch threads")
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument(
        "--random",
        action="store_true",
        help="on CPU too, run the random-weight path (the GPU path) instead of the tiny files",
    )
    parser.add_argument("--arch", default="7b", choices=("7b", "tiny"), help="random path's model")
    parser.add_argument(
        "--masked",
        action="store_true",
        help="also time 1 live slot + B-1 masked ones (alternating with all live), to show "
        "what an idle slot costs",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="moshi-bench-") as tmp:
        if args.device.startswith("cuda") or args.random:
            result = run_random(args, Path(tmp))
        else:
            result = run_cpu(args, Path(tmp))
    if args.device.startswith("cuda"):
        result["max_memory_reserved"] = torch.cuda.max_memory_reserved()
        print(f"max_memory_reserved: {result['max_memory_reserved'] / (1 << 30):.2f} GiB")
    fast = [r["batch"] for r in result["rows"] if r["real_time"]]
    best = max(fast) if fast else 0
    tiny = "tiny" in result["model"]
    what = f"{result['model']} on {result['device']}" + (" (NOT Moshi 7B)" if tiny else "")
    print(f"largest batch with p99 < {BUDGET_MS:g} ms: {best}  [{what}]")
    if not tiny:
        print(f"=> {best} concurrent real-time MOSHI calls on one {result['device']}")
    if args.json:
        args.json.write_text(json.dumps(result | {"largest_real_time_batch": best}, indent=1))


if __name__ == "__main__":
    main()
