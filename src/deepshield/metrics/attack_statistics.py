"""Per-budget statistics of an attack that mean what they say: counted over the images the attack
could break (correct when clean) and, for perturbation sizes and query costs, over the images it
did break. An unbroken image keeps x (perturbation 0), so a median over all images reads 0 while
half the split is fooled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.metrics import inputs


def _stat(values: np.ndarray) -> tuple[float | None, float | None]:
    """(median, mean) of values [k] as floats, or (None, None) when empty."""
    if values.size == 0:
        return None, None
    return float(np.median(values)), float(np.mean(values))


def success_statistics(
    clean_correct: Any, fooled: Any, l2: Any, queries: Any | None = None
) -> dict[str, Any]:
    """clean_correct, fooled: [N] bools (right when clean, wrong under attack); l2: [N] L2 norms of
    x_adv - x; queries: [N] model queries spent per image (0: not attacked) or None.

    Keys: attacked (images right when clean), successes (of those, wrong under attack),
    success_rate (successes / attacked, None when nothing was attacked), l2_median_success,
    l2_mean_success (over successes; None without one) and, with queries, queries_median_success,
    queries_mean_success (over successes) and queries_median_image, queries_mean_image (over
    every image the attack queried).
    """
    ok = inputs.as_array(clean_correct, "clean_correct").astype(bool)
    broken = ok & inputs.as_array(fooled, "fooled").astype(bool)
    norms = inputs.scores(l2, "l2")
    inputs.same_length(ok, broken, ("clean_correct", "fooled"))
    inputs.same_length(ok, norms, ("clean_correct", "l2"))
    attacked, successes = int(ok.sum()), int(broken.sum())
    median, mean = _stat(norms[broken])
    out: dict[str, Any] = {
        "attacked": attacked,
        "successes": successes,
        "success_rate": successes / attacked if attacked else None,
        "l2_median_success": median,
        "l2_mean_success": mean,
    }
    if queries is not None:
        spent = inputs.scores(queries, "queries")
        inputs.same_length(ok, spent, ("clean_correct", "queries"))
        out["queries_median_success"], out["queries_mean_success"] = _stat(spent[broken])
        out["queries_median_image"], out["queries_mean_image"] = _stat(spent[spent > 0])
    return out
