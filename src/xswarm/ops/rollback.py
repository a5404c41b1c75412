"""A rollback: back to an earlier release that is still installed.

Restores the units that release was installed with (kept in ``releases/<v>/units``), moves
``current``, runs daemon-reload, and restarts one instance at a time with a health check.
"""

from __future__ import annotations

from collections.abc import Callable

from xswarm.ops import releases, rolling
from xswarm.ops.layout import Layout
from xswarm.ops.rolling import RolloutError


def rollback(
    layout: Layout, release: str | None, timeout: float, say: Callable[[str], None]
) -> None:
    """Switch to ``release`` (default: the one before the current) and restart onto it."""
    rolling.check_layout(layout)
    now = releases.current(layout)
    target = release or releases.previous(layout)
    present = releases.installed(layout)
    if target is None:
        raise RolloutError(
            f"no earlier release to go back to (installed: {', '.join(present) or 'none'})"
        )
    if target not in present:
        raise RolloutError(
            f"release {target} is not installed; installed: {', '.join(present) or 'none'}"
        )
    if target == now:
        say(f"release {target} is already current")
        return
    say(f"rolling back {now} -> {target}")
    running = rolling.running_targets(layout)
    error = rolling.switch_to(layout, target, running, say, fresh_units=False, timeout=timeout)
    if error is not None:
        raise RolloutError(f"rollback to {target}: {error}")
    say(f"now on {target}")
