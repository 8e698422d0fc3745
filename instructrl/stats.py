"""Pure statistics: win rates with ties, Wilson and bootstrap intervals, labeler agreement.

No models, files or configs here (the web app imports this module too, so no torch either);
every function is checked against hand-computed cases.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from instructrl.errors import UserError
from instructrl.records import ranks_of

T = TypeVar("T")

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


def bootstrap_ci(
    items: Sequence[T],
    statistic: Callable[[list[T]], float],
    *,
    reps: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(items), resampling the items with replacement."""
    rng = random.Random(seed)
    n = len(items)
    values = sorted(statistic([items[rng.randrange(n)] for _ in range(n)]) for _ in range(reps))
    return values[int(alpha / 2 * reps)], values[min(reps - 1, int((1 - alpha / 2) * reps))]


def bootstrap_mean_ci(
    values: Sequence[float], *, reps: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the items)."""
    return cluster_mean_ci(values, range(len(values)), reps=reps, seed=seed, alpha=alpha)


def cluster_mean_ci(
    values: Sequence[float],
    clusters: Sequence[Any],
    *,
    reps: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean when observations come in clusters (several
    samples of one prompt): whole clusters are resampled, so correlation within a prompt does
    not narrow the interval. One observation per cluster gives bootstrap_mean_ci's interval."""
    if not values:
        return (float("nan"), float("nan"))
    sums: dict[Any, list[float]] = {}
    for v, c in zip(values, clusters, strict=True):
        sums.setdefault(c, [0.0, 0])
        sums[c][0] += v
        sums[c][1] += 1
    groups = list(sums.values())

    def mean(sample: list[list[float]]) -> float:
        return sum(g[0] for g in sample) / sum(g[1] for g in sample)

    return bootstrap_ci(groups, mean, reps=reps, seed=seed, alpha=alpha)


def _sizes(values: Sequence[Any], clusters: Sequence[Any] | None) -> dict[str, int]:
    """n (independent units: prompts) and, when prompts hold several observations, their count."""
    if clusters is None:
        return {"n": len(values)}
    n = len(set(clusters))
    return {"n": n} if n == len(values) else {"n": n, "observations": len(values)}


def win_rate(
    outcomes: Sequence[float], *, seed: int = 0, clusters: Sequence[Any] | None = None
) -> dict[str, float | list[float] | int]:
    """Outcomes per comparison: 1 win, 0 loss, 0.5 tie. Returns the rate, a 95 % bootstrap CI over
    prompts (`clusters` names each outcome's prompt when a prompt has several), and n prompts.
    (The paper's Figure 1 reports win rates against the SFT 175B baseline.)"""
    n = len(outcomes)
    rate = sum(outcomes) / n if n else float("nan")
    lo, hi = cluster_mean_ci(list(outcomes), clusters or range(n), seed=seed)
    return {"win_rate": rate, "ci95": [lo, hi], **_sizes(outcomes, clusters)}


def proportion(
    flags: Sequence[bool], *, clusters: Sequence[Any] | None = None, seed: int = 0
) -> dict[str, float | list[float] | int]:
    """Rate of True with its 95 % Wilson interval; with several observations of a prompt
    (`clusters`), a bootstrap interval over prompts instead (Wilson's assumes independent draws)."""
    n = len(flags)
    k = sum(1 for f in flags if f)
    sizes = _sizes(flags, clusters)
    ci = (
        wilson(k, n)
        if sizes["n"] == n
        else cluster_mean_ci([float(bool(f)) for f in flags], clusters or [], seed=seed)
    )
    return {"rate": k / n if n else float("nan"), "ci95": list(ci), **sizes}


def mean_ci(
    values: Sequence[float], *, seed: int = 0, clusters: Sequence[Any] | None = None
) -> dict[str, float | list[float] | int]:
    """Mean with a 95 % bootstrap CI over prompts (`clusters`, as in win_rate)."""
    n = len(values)
    return {
        "mean": sum(values) / n if n else float("nan"),
        "ci95": list(cluster_mean_ci(list(values), clusters or range(n), seed=seed)),
        **_sizes(values, clusters),
    }


# ----------------------------------------------------------------------------- agreement
def rank_agreement(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """(agreeing, compared) between two labelers' ranks of the same K responses, over the
    response pairs that neither of them ties."""
    agree = compared = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da and db:
                compared += 1
                agree += (da > 0) == (db > 0)
    return agree, compared


def pairwise_agreement(rankings: Sequence[Sequence[int | list[int]]]) -> tuple[int, int]:
    """(agreeing, compared) over all labeler pairs and response pairs of one prompt; ties skipped."""
    ranks = [ranks_of(list(r), _k(r)) for r in rankings]
    agree = compared = 0
    for a in range(len(ranks)):
        for b in range(a + 1, len(ranks)):
            n_agree, n_compared = rank_agreement(ranks[a], ranks[b])
            agree += n_agree
            compared += n_compared
    return agree, compared


def _k(ranking: Sequence[int | list[int]]) -> int:
    return sum(len(x) if isinstance(x, list) else 1 for x in ranking)


def agreement(
    per_prompt: Sequence[tuple[int, int]], *, seed: int = 0, reps: int = 1000
) -> dict[str, Any]:
    """Agreement rate with a 95 % bootstrap CI over prompts, from per-prompt (agree, compared)."""
    agree = sum(a for a, _ in per_prompt)
    compared = sum(c for _, c in per_prompt)
    if compared == 0:
        raise UserError(
            "agreement: no comparable pairs (need at least two labelers and two distinct responses)"
        )

    def rate(sample: list[tuple[int, int]]) -> float:
        c = sum(x[1] for x in sample)
        return sum(x[0] for x in sample) / c if c else agree / compared

    lo, hi = bootstrap_ci(per_prompt, rate, reps=reps, seed=seed)
    return {
        "agreement": round(agree / compared, 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "pairs": compared,
        "prompts": len(per_prompt),
    }


# ----------------------------------------------------------------------------- diagnostics
def verdict(
    ci: Sequence[float], n: int, *, threshold: float, min_n: int, above: bool = True
) -> str:
    """A claim's verdict from its 95 % CI: "reproduced" only when the whole interval lies on the
    paper's side of `threshold` (above it, or below it with above=False), "too few to tell"
    under `min_n` observations, "not reproduced" otherwise."""
    if n < min_n:
        return "too few to tell"
    lo, hi = ci
    return "reproduced" if (lo > threshold if above else hi < threshold) else "not reproduced"


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, seed: int = 0
) -> dict[str, float | list[float] | int]:
    """Mean of a_i - b_i over paired observations (the same prompts or text chunks), with a 95 %
    bootstrap CI over the pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} and {len(b)} observations")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return mean_ci(diffs, seed=seed)


def by_category(
    outcomes: Sequence[float],
    categories: Sequence[str | None],
    *,
    seed: int = 0,
    clusters: Sequence[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Win rate (with its CI over prompts) of each category's outcomes."""
    groups: dict[str, tuple[list[float], list[Any]]] = {}
    keys = clusters if clusters is not None else range(len(outcomes))
    for outcome, category, key in zip(outcomes, categories, keys, strict=True):
        group = groups.setdefault(category or "other", ([], []))
        group[0].append(outcome)
        group[1].append(key)
    return {
        c: win_rate(v, seed=seed, clusters=None if clusters is None else k)
        for c, (v, k) in sorted(groups.items())
    }


def identical_share(
    a: Sequence[str], b: Sequence[str], *, clusters: Sequence[Any] | None = None
) -> dict[str, float | list[float] | int]:
    """Share of samples where two policies wrote exactly the same text (whitespace-stripped)."""
    return proportion(
        [x.strip() == y.strip() for x, y in zip(a, b, strict=True)], clusters=clusters
    )


def best_of(scores: Sequence[Sequence[float]]) -> list[int]:
    """Per prompt, the index of the best of its K candidates by the given scores (the first of
    equals): best-of-K sampling reranked by a reward model or by the labelers themselves."""
    return [max(range(len(s)), key=lambda i: (s[i], -i)) for s in scores]


def overoptimization(
    episodes: Sequence[tuple[int, float, float, float]], *, bins: int = 4
) -> list[dict[str, float]]:
    """Gao et al. (2022)'s over-optimisation curve from PPO episodes (iteration, KL to the
    reference, proxy = RM score, gold = held-out labelers' score): the iterations are cut into
    `bins` consecutive groups of about equal size; each point is the group's mean KL, proxy and
    gold, with its iterations and episode count."""
    steps = sorted({e[0] for e in episodes})
    if not steps:
        return []
    bins = max(1, min(bins, len(steps)))
    points = []
    for b in range(bins):
        chosen = set(steps[b * len(steps) // bins : (b + 1) * len(steps) // bins])
        group = [e for e in episodes if e[0] in chosen]
        n = len(group)
        points.append(
            {
                "first": min(chosen),
                "last": max(chosen),
                "kl": sum(e[1] for e in group) / n,
                "proxy": sum(e[2] for e in group) / n,
                "gold": sum(e[3] for e in group) / n,
                "n": n,
            }
        )
    return points
