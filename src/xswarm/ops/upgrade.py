"""An upgrade: a new release, rolled out one instance at a time, undone if it is unhealthy.

The new release is built beside the old one, its units installed and ``current`` flipped;
then each running instance is restarted and must come back ready on the new code. If one does
not, the old release's saved units and ``current`` are put back and everything is restarted
onto it again: the server is left running what it ran before, and the upgrade fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from xswarm.ops import releases, rolling
from xswarm.ops.layout import Layout
from xswarm.ops.rolling import RolloutError


def upgrade(
    layout: Layout,
    wheelhouse: Path,
    version: str | None,
    timeout: float,
    keep: int,
    python: str,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Build the release of ``version`` (default: the newest wheel) and switch onto it."""
    rolling.check_layout(layout)
    old = releases.current(layout)
    if old is None:
        raise RolloutError("nothing is installed yet; run `sudo xswarm install` first")
    wheel = releases.find_wheel(wheelhouse, version)
    new, built = releases.build(layout, wheel, wheelhouse, python)
    if new == old:
        say(f"release {new} is already current; nothing to upgrade")
        return
    say(f"release {new} {'built' if built else 'already present'}; upgrading from {old}")
    running = rolling.running_targets(layout)
    error = rolling.switch_to(layout, new, running, say, fresh_units=True, timeout=timeout)
    if error is None:
        for name in releases.prune(layout, keep):
            say(f"removed old release {name} (keeping {keep})")
        say(f"upgraded {old} -> {new}")
        return
    warn(f"ROLLING BACK to {old}: {error}")
    again = rolling.switch_to(layout, old, running, say, fresh_units=False, timeout=timeout)
    if again is not None:
        raise RolloutError(
            f"upgrade to {new} failed ({error}) and so did the rollback "
            f"to {old} ({again}); see `sudo xswarm doctor`"
        )
    raise RolloutError(f"upgrade to {new} failed ({error}); rolled back to {old}")
