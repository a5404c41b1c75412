"""Hypothesis profiles for the parser fuzzing: random locally, reproducible in CI.

``CI`` set (as .ci/run sets it) selects ``ci``: derandomized, so a red CI run is the same run
on a developer's machine, and no example database is written into the checkout. Otherwise
``dev`` draws fresh examples every run, also without a database, so worktrees stay clean.
Each test sizes its own ``max_examples`` so that tests/fuzz stays well under a minute on two
cores; ``XSWARM_FUZZ_SCALE`` multiplies them for a longer hunt.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
settings.register_profile("dev", **_COMMON)  # type: ignore[arg-type]
settings.register_profile("ci", derandomize=True, print_blob=True, **_COMMON)  # type: ignore[arg-type]
settings.load_profile("ci" if os.environ.get("CI") else "dev")
