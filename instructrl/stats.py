"""Pure statistics for evaluation: win rates with ties, Wilson and bootstrap intervals.

No models, files or configs here; every function is checked against hand-computed cases.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (successes may be fractional, e.g. half wins)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean_ci(
    values: Sequence[float], *, reps: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the items)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    lo = means[int(alpha / 2 * reps)]
    hi = means[min(reps - 1, int((1 - alpha / 2) * reps))]
    return (lo, hi)


def win_rate(outcomes: Sequence[float], *, seed: int = 0) -> dict[str, float | list[float] | int]:
    """Outcomes per prompt: 1 win, 0 loss, 0.5 tie. Returns the rate, a 95 % bootstrap CI over
    prompts, and n. (The paper's Figure 1 reports win rates against the SFT 175B baseline.)"""
    n = len(outcomes)
    rate = sum(outcomes) / n if n else float("nan")
    lo, hi = bootstrap_mean_ci(list(outcomes), seed=seed)
    return {"win_rate": rate, "ci95": [lo, hi], "n": n}


def proportion(flags: Sequence[bool]) -> dict[str, float | list[float] | int]:
    """Rate of True with its 95 % Wilson interval."""
    n = len(flags)
    k = sum(1 for f in flags if f)
    return {"rate": k / n if n else float("nan"), "ci95": list(wilson(k, n)), "n": n}


def mean_ci(values: Sequence[float], *, seed: int = 0) -> dict[str, float | list[float] | int]:
    n = len(values)
    return {
        "mean": sum(values) / n if n else float("nan"),
        "ci95": list(bootstrap_mean_ci(list(values), seed=seed)),
        "n": n,
    }
