"""What a process did more of in one py-spy recording than in another; prints a table.

    .venv/bin/python benchmarks/profile_delta.py IDLE.txt IDLE_SECONDS BUSY.txt BUSY_SECONDS \
        [--thread App.run] [--top 30]

Both files are ``py-spy record --format raw`` (collapsed stacks) of one process, e.g. the
idle window and the key presses that ``tui_terminal.py --profile`` records. For every
function, the samples per second whose stack holds it (inclusive) in each recording and the
difference, busiest difference first; samples waiting in ``select`` are left out, and
``--thread`` keeps only stacks holding that frame (the main thread's event loop). Divide a
difference by the rate (200 Hz in ``tui_terminal.py``) for the share of a core it cost.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def inclusive(path: Path, thread: str) -> Counter[str]:
    """Samples per function (each counted once per stack) of the stacks holding ``thread``."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        if thread and not any(thread in frame for frame in frames):
            continue
        if "selectors.py" in frames[-1] and "select" in frames[-1]:
            continue
        for frame in set(frames):
            counts[frame] += int(samples)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("base_seconds", type=float)
    parser.add_argument("busy", type=Path)
    parser.add_argument("busy_seconds", type=float)
    parser.add_argument("--thread", default="App.run", help="keep stacks holding this frame")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    base = inclusive(args.base, args.thread)
    busy = inclusive(args.busy, args.thread)
    rows = sorted(
        (
            (busy[f] / args.busy_seconds - base[f] / args.base_seconds, f)
            for f in set(base) | set(busy)
        ),
        reverse=True,
    )
    print("| extra samples/s | base samples/s | busy samples/s | function |")
    print("|---|---|---|---|")
    for extra, frame in rows[: args.top]:
        print(
            f"| {extra:.1f} | {base[frame] / args.base_seconds:.1f} "
            f"| {busy[frame] / args.busy_seconds:.1f} | {frame} |"
        )


if __name__ == "__main__":
    main()
