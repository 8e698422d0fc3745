"""stats.py by hand: win rates with ties, Wilson and bootstrap intervals, labeler agreement."""

from __future__ import annotations

import math
import random

import pytest

from instructrl import stats
from instructrl.stats import agreement, pairwise_agreement, rank_agreement


def test_win_rate_with_ties_by_hand():
    # 3 wins, 1 tie, 1 loss over 5 prompts: (3 + 0.5) / 5 = 0.7
    result = stats.win_rate([1, 1, 1, 0.5, 0])
    assert result["win_rate"] == pytest.approx(0.7) and result["n"] == 5
    lo, hi = result["ci95"]
    assert lo <= 0.7 <= hi and lo < 0.5 < hi  # five prompts cannot rule out a coin flip


def test_win_rate_ci_clear_of_half():
    result = stats.win_rate([1] * 45 + [0] * 5)
    assert result["win_rate"] == 0.9 and 0.75 < result["ci95"][0] < 0.9 < result["ci95"][1] <= 1.0


def test_wilson_by_hand():
    # p = 0.5, n = 100: centre 0.5, half-width 1.96 * sqrt(0.25/100 + 1.96^2/40000) / (1 + 1.96^2/100)
    z = stats.Z95
    half = z * math.sqrt(0.0025 + z * z / 40000) / (1 + z * z / 100)
    lo, hi = stats.wilson(50, 100)
    assert lo == pytest.approx(0.5 - half, abs=1e-9) and hi == pytest.approx(0.5 + half, abs=1e-9)
    assert stats.wilson(0, 0) == (0.0, 1.0)


def test_pairwise_agreement_by_hand():
    # L1 ranks 0 > 1 > 2, L2 ranks 0 > 2 > 1: pairs (0,1) and (0,2) agree, (1,2) does not -> 2 of 3
    assert pairwise_agreement([[0, 1, 2], [0, 2, 1]]) == (2, 3)
    # a tie in L2 between 1 and 2 removes that pair: 2 of 2
    assert pairwise_agreement([[0, 1, 2], [0, [1, 2]]]) == (2, 2)
    # three labelers: (L1,L2) 2/3, (L1,L3) 0/3 (fully reversed), (L2,L3) 1/3 -> 3 of 9
    assert pairwise_agreement([[0, 1, 2], [0, 2, 1], [2, 1, 0]]) == (3, 9)


def test_agreement_ci_by_hand():
    result = agreement([(2, 3), (3, 3), (1, 3)], reps=200)
    assert result["agreement"] == pytest.approx(6 / 9, abs=1e-4)
    assert result["ci95"][0] <= result["agreement"] <= result["ci95"][1]
    assert result["pairs"] == 9 and result["prompts"] == 3
    assert agreement([(3, 3)] * 4, reps=50)["ci95"] == [1.0, 1.0]


def test_rank_agreement_by_hand():
    # ranks (0 best): a = 0,1,2; b = 0,2,1 -> pairs (0,1) and (0,2) agree, (1,2) does not
    assert rank_agreement([0, 1, 2], [0, 2, 1]) == (2, 3)
    # a tie in either labeler leaves that pair out
    assert rank_agreement([0, 1, 1], [0, 2, 1]) == (2, 2)
    assert rank_agreement([0, 0, 0], [0, 1, 2]) == (0, 0)


def test_bootstrap_ci_equals_a_direct_loop():
    """The percentile bootstrap against a loop written out here, same draws."""
    values = [0.0, 1.0, 1.0, 0.5, 3.0, 2.0]
    reps, seed = 200, 5
    rng = random.Random(seed)
    means = sorted(
        sum(values[rng.randrange(len(values))] for _ in values) / len(values) for _ in range(reps)
    )
    expected = (means[int(0.025 * reps)], means[int(0.975 * reps)])
    assert stats.bootstrap_mean_ci(values, reps=reps, seed=seed) == pytest.approx(expected)
    # any statistic: the maximum of a resample is never above the data's maximum
    lo, hi = stats.bootstrap_ci(values, max, reps=reps, seed=seed)
    assert lo <= hi == 3.0
    # a constant sample has a zero-width interval; no data, no interval
    assert stats.bootstrap_mean_ci([2.0] * 5) == (2.0, 2.0)
    assert all(math.isnan(x) for x in stats.bootstrap_mean_ci([]))


def test_proportion_and_mean_by_hand():
    p = stats.proportion([True, False, True, True])
    assert p["rate"] == 0.75 and p["n"] == 4
    assert p["ci95"] == pytest.approx(list(stats.wilson(3, 4)))
    m = stats.mean_ci([1.0, 2.0, 6.0])
    assert m["mean"] == 3.0 and m["n"] == 3 and m["ci95"][0] <= 3.0 <= m["ci95"][1]


def test_verdict_rests_on_the_interval():
    assert stats.verdict([0.52, 0.70], 64, threshold=0.5, min_n=30) == "reproduced"
    assert stats.verdict([0.45, 0.70], 64, threshold=0.5, min_n=30) == "not reproduced"
    assert stats.verdict([0.60, 0.90], 4, threshold=0.5, min_n=30) == "too few to tell"
    assert stats.verdict([-0.3, -0.1], 16, threshold=0.0, min_n=8, above=False) == "reproduced"
    assert stats.verdict([-0.3, 0.1], 16, threshold=0.0, min_n=8, above=False) == "not reproduced"


def test_best_of_picks_the_first_best():
    assert stats.best_of([[0.1, 0.5, 0.5], [3.0, -1.0], [0.0, 0.0, 0.0, 0.2]]) == [1, 0, 3]


def test_overoptimization_bins_by_hand():
    # iterations 1..4, two episodes each: (iteration, kl, proxy, gold)
    episodes = [
        (1, 0.0, 0.0, 0.5),
        (1, 0.2, 0.2, 0.7),
        (2, 0.4, 0.4, 0.6),
        (2, 0.6, 0.6, 0.6),
        (3, 1.0, 1.0, 0.5),
        (3, 1.0, 1.2, 0.5),
        (4, 2.0, 2.0, 0.3),
        (4, 3.0, 2.2, 0.1),
    ]
    points = stats.overoptimization(episodes, bins=2)
    assert [(p["first"], p["last"], p["n"]) for p in points] == [(1, 2, 4), (3, 4, 4)]
    assert points[0]["kl"] == pytest.approx(0.3) and points[1]["kl"] == pytest.approx(1.75)
    assert points[0]["proxy"] == pytest.approx(0.3) and points[1]["proxy"] == pytest.approx(1.6)
    assert points[0]["gold"] == pytest.approx(0.6) and points[1]["gold"] == pytest.approx(0.35)
    assert len(stats.overoptimization(episodes, bins=10)) == 4  # at most one bin per iteration
    assert stats.overoptimization([], bins=4) == []


def test_identical_share_and_categories_and_pairs():
    share = stats.identical_share(["a", "b ", "c", "d"], ["a", "b", "x", "y"])
    assert share["rate"] == 0.5 and share["n"] == 4
    cats = stats.by_category([1, 0, 0.5, 1], ["qa", "qa", None, "qa"])
    assert cats["qa"]["win_rate"] == pytest.approx(2 / 3) and cats["qa"]["n"] == 3
    assert cats["other"]["win_rate"] == 0.5
    diff = stats.paired_difference([3.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert diff["mean"] == pytest.approx(2.0) and diff["n"] == 3
    assert 1.0 <= diff["ci95"][0] <= diff["ci95"][1] <= 3.0
    with pytest.raises(ValueError, match="3 and 2 observations"):
        stats.paired_difference([1, 2, 3], [1, 2])


def test_cluster_bootstrap_resamples_prompts_not_samples():
    values = [0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0]
    plain = stats.bootstrap_mean_ci(values, reps=300, seed=3)
    # one observation per prompt: the plain bootstrap's interval, draw for draw
    assert stats.cluster_mean_ci(values, range(7), reps=300, seed=3) == pytest.approx(plain)
    # every prompt observed twice alike: still the interval of 7 prompts, where a bootstrap
    # that took the 14 outcomes for independent ones would be narrower
    doubled = [v for v in values for _ in range(2)]
    clusters = [i for i in range(7) for _ in range(2)]
    assert stats.cluster_mean_ci(doubled, clusters, reps=300, seed=3) == pytest.approx(plain)
    naive = stats.bootstrap_mean_ci(doubled, reps=300, seed=3)
    assert naive[1] - naive[0] < plain[1] - plain[0]
    # clusters of unequal size against a loop written out here: the pooled mean of the
    # observations of the resampled prompts
    obs, keys = [1.0, 0.0, 0.0, 1.0, 1.0, 0.5], ["a", "a", "b", "c", "c", "c"]
    groups = [[1.0, 0.0], [0.0], [1.0, 1.0, 0.5]]
    rng = random.Random(4)
    means = []
    for _ in range(200):
        picked = [groups[rng.randrange(3)] for _ in range(3)]
        means.append(sum(sum(g) for g in picked) / sum(len(g) for g in picked))
    means.sort()
    expected = (means[int(0.025 * 200)], means[int(0.975 * 200)])
    assert stats.cluster_mean_ci(obs, keys, reps=200, seed=4) == pytest.approx(expected)
    # what the figures report: n prompts, and the observations when prompts have several
    w = stats.win_rate(doubled, clusters=clusters)
    assert w["win_rate"] == pytest.approx(4.5 / 7) and (w["n"], w["observations"]) == (7, 14)
    assert "observations" not in stats.win_rate(values, clusters=range(7))
    flags = [True, True, False, False, True, False]
    p = stats.proportion(flags, clusters=[0, 0, 1, 1, 2, 2])
    assert p["rate"] == 0.5 and (p["n"], p["observations"]) == (3, 6)
    assert p["ci95"] == pytest.approx(
        list(stats.cluster_mean_ci([1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 2, 2]))
    )
    # one observation a prompt keeps Wilson's interval
    assert stats.proportion(flags, clusters=range(6))["ci95"] == pytest.approx(
        list(stats.wilson(3, 6))
    )
    m = stats.mean_ci(doubled, clusters=clusters)
    assert m["mean"] == pytest.approx(4.5 / 7) and m["n"] == 7
    by = stats.by_category(doubled, ["x"] * 8 + ["y"] * 6, clusters=clusters)
    assert (by["x"]["n"], by["x"]["observations"], by["y"]["n"]) == (4, 8, 3)
