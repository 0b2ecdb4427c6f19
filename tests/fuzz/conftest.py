"""Shared settings and strategies for the fuzz suites.

Every property runs thousands of cases and must stay fast and repeatable in CI:
``derandomize`` fixes the examples (a failure reproduces on every run and every
machine), ``database=None`` keeps runs from depending on earlier ones, and
``deadline=None`` because a loaded 2-core CI machine makes per-example timing
meaningless. ``too_slow``, ``data_too_large`` and ``filter_too_much`` are
suppressed because the strategies deliberately build large inputs (tasks of
megabytes, documents of many fields) and filter out the few values of the
wrong type. ``FUZZ_SCALE`` scales every property's case count, for a longer hunt
by hand (``FUZZ_SCALE=20 pytest tests/fuzz``); other counts draw other cases.

Text comes from the seeded corpus (one draw per string, see corpus.py).
"""

from __future__ import annotations

import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz import corpus

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(examples: int) -> Any:
    """The settings of a fuzz property: ``examples`` fixed cases (times FUZZ_SCALE)."""
    return settings(max_examples=max(1, round(examples * SCALE)), derandomize=True, database=None,
                    deadline=None, suppress_health_check=[
                        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


odd = st.sampled_from(corpus.ODD_TEXTS)
scalars = st.one_of(
    # int64 only: larger integers are refused by design (see the test of that in
    # test_cli_fuzz.py), so they would not be "valid JSON" for these properties.
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), odd,
)
# Flat values: cheap to draw, and every JSON type is there.
flat_json = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(odd, scalars, max_size=3))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(odd, children, max_size=4),
    max_leaves=8,
)
json_objects = st.dictionaries(odd, json_values, max_size=5)


def wrong_types(*keep: type) -> st.SearchStrategy[Any]:
    """JSON values of every type except ``keep`` (bool is not an int here)."""
    def differs(value: Any) -> bool:
        if isinstance(value, bool):
            return bool not in keep
        if isinstance(value, float) and not math.isfinite(value):
            return True
        return not isinstance(value, keep)

    return flat_json.filter(differs)
