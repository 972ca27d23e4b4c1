"""Hypothesis profiles for the property tests: `ci` (the default) and `long`.

`ci` is reproducible: derandomized (a fixed seed per test, no example
database), so a run that passed passes again and a failure is the same on
every machine. `long` draws fresh examples each run, twenty times as many,
and keeps failing ones in `.hypothesis/` to replay first:

    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/contract

A test states its example count for `ci` through `scaled`, so `long` grows
the database-backed tests and the pure ones alike.
"""

from __future__ import annotations

import os

from hypothesis import settings

CI_EXAMPLES = 100
LONG_FACTOR = 20

# No deadline: an example is a few HTTP exports on a shared machine, and its
# time says nothing about correctness (the suite's budget is measured instead).
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, deadline=None)
settings.register_profile(
    "long", max_examples=CI_EXAMPLES * LONG_FACTOR, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def scaled(ci_examples: int) -> int:
    """`ci_examples` under `ci`, proportionally more under `long`."""
    return max(1, ci_examples * settings.default.max_examples // CI_EXAMPLES)
