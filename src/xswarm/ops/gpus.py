"""The NVIDIA GPUs of a host, numbered the way the voice units number them.

The driver lists each GPU as ``/proc/driver/nvidia/gpus/<PCI bus id>/information`` ("Model:",
"GPU UUID:", "Bus Location:", "Device Minor:", "GPU Excluded:" lines). CUDA numbers them
fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which the GPU drop-in sets: then
``cuda:N`` is the N-th GPU by bus id, the same N that ``nvidia-smi -L`` prints, so the device an
instance's config names is the card an operator sees. Excluded GPUs get no CUDA index.
Where /proc lists nothing (a container without the proc tree), ``nvidia-smi -L`` is asked.
``CUDA_VISIBLE_DEVICES``, when set, narrows the choice to the GPUs it names (indices or UUID
prefixes), each keeping its own index.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from xswarm.errors import XswarmError

PROC_GPUS = Path("proc/driver/nvidia/gpus")
_SMI_LINE = re.compile(r"^GPU (\d+): (.*?) \(UUID: (GPU-[0-9A-Fa-f-]+)\)\s*$")


class GpuDiscoveryError(XswarmError):
    """The GPUs asked for cannot be told apart or do not exist here."""


@dataclass(frozen=True)
class Gpu:
    """One GPU: its CUDA index in bus order, and what identifies the card itself."""

    index: int
    model: str
    uuid: str = ""
    bus_id: str = ""
    minor: int | None = None

    @property
    def device(self) -> str:
        """The ``[voice.moshi] device`` that runs an engine on this GPU."""
        return f"cuda:{self.index}"

    def describe(self) -> str:
        where = f" at {self.bus_id}" if self.bus_id else ""
        return f"{self.device} {self.model}{where}"


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def from_proc(root: Path) -> list[Gpu]:
    """The GPUs the driver lists under ``root``'s /proc, by bus id, excluded ones left out."""
    folder = root / PROC_GPUS
    try:
        entries = sorted(folder.iterdir(), key=lambda path: path.name.lower())
    except (FileNotFoundError, NotADirectoryError):
        return []
    gpus: list[Gpu] = []
    for entry in entries:
        try:
            info = _fields((entry / "information").read_text(errors="replace"))
        except OSError:
            continue
        if info.get("GPU Excluded", "No").lower().startswith("y"):
            continue
        minor = info.get("Device Minor", "")
        gpus.append(
            Gpu(
                index=len(gpus),
                model=info.get("Model", "NVIDIA GPU"),
                uuid=info.get("GPU UUID", ""),
                bus_id=info.get("Bus Location", entry.name),
                minor=int(minor) if minor.isdigit() else None,
            )
        )
    return gpus


def from_smi(output: str) -> list[Gpu]:
    """The GPUs in ``nvidia-smi -L``'s lines (``GPU 0: NVIDIA H200 (UUID: GPU-…)``)."""
    gpus = []
    for line in output.splitlines():
        match = _SMI_LINE.match(line.strip())
        if match:
            gpus.append(Gpu(int(match[1]), match[2], match[3]))
    return gpus


def run_smi() -> str | None:
    """``nvidia-smi -L``'s output, or None where the tool is absent or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def visible(gpus: list[Gpu], env: Mapping[str, str]) -> list[Gpu]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` names (all when it is unset), in the order it names
    them; an entry naming no GPU here is an error, not a silent smaller fleet."""
    spec = env.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return gpus
    chosen: list[Gpu] = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        if entry.lstrip("-").isdigit():
            if int(entry) < 0:
                break  # CUDA stops at a negative index: what follows is hidden
            found = [gpu for gpu in gpus if gpu.index == int(entry)]
        else:
            found = [gpu for gpu in gpus if gpu.uuid and gpu.uuid.startswith(entry)]
        if len(found) != 1:
            known = ", ".join(f"{gpu.index} ({gpu.uuid or gpu.model})" for gpu in gpus) or "none"
            what = "no GPU" if not found else f"{len(found)} GPUs"
            raise GpuDiscoveryError(
                f"CUDA_VISIBLE_DEVICES={spec!r}: {entry!r} matches {what} on this host (GPUs: "
                f"{known}); name each GPU by its index or a unique UUID prefix, or unset it"
            )
        if found[0] not in chosen:
            chosen.append(found[0])
    return chosen


def discover(
    root: Path,
    env: Mapping[str, str],
    smi: Callable[[], str | None] | None = run_smi,
) -> list[Gpu]:
    """The GPUs to run one instance each on. ``smi`` is None under a staging root, whose /proc
    is the only truth (the host's nvidia-smi would describe another machine)."""
    gpus = from_proc(root)
    source = f"{root / PROC_GPUS} lists no GPU"
    if not gpus and smi is not None:
        output = smi()
        gpus = from_smi(output or "")
        source += " and nvidia-smi -L " + ("is absent" if output is None else "lists none")
    if not gpus:
        raise GpuDiscoveryError(
            f"--instances auto --gpu found no NVIDIA GPU: {source}; install and load the "
            "NVIDIA driver (nvidia-smi -L must list the GPUs), or give --instances N"
        )
    chosen = visible(gpus, env)
    if not chosen:
        raise GpuDiscoveryError(
            f"--instances auto --gpu found no visible GPU: CUDA_VISIBLE_DEVICES="
            f"{env.get('CUDA_VISIBLE_DEVICES', '')!r} hides all {len(gpus)}; unset it or name "
            "the GPUs to use"
        )
    return chosen
