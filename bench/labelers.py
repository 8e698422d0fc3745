"""Simulated panel speed and calibration.

    python bench/labelers.py [--n 1000]

1. Speed: the training panel ranks N comparisons of K = 4 (embeddings included, fresh caches)
   on this machine; goal: 1,000 comparisons in under a minute on 2 cores (ratio = 60 s / time).
2. Calibration: pairwise agreement within each labeler group on the shipped samples of the
   default model (K = 4 for 160 training prompts), beside the paper's 72.6 % and 77.3 %.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from instructrl import data
from instructrl.labelers import Item, Judge, Panel, calibration_agreement


def synthetic_items(n: int, seed: int = 0) -> list[Item]:
    """K = 4 responses per prompt: the reference, a shortened one, an off-topic one, a shuffled one."""
    rng = random.Random(seed)
    prompts = [p for p in data.load_prompts() if p.reference]
    items = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        other = prompts[rng.randrange(len(prompts))].reference
        words = p.reference.split()
        shuffled = " ".join(rng.sample(words, len(words)))
        items.append(
            Item(
                p,
                [p.reference, " ".join(words[: max(3, len(words) // 2)]), other, shuffled],
                ["eos", "length", "eos", "eos"],
            )
        )
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    items = synthetic_items(args.n)
    start = time.perf_counter()
    comparisons = Panel("train", judge=Judge()).rank(items)
    elapsed = time.perf_counter() - start
    print(f"{'task':34s} {'figure':>12s}")
    print(
        f"{'rank ' + str(len(comparisons)) + ' comparisons of K = 4':34s} {elapsed:10.1f} s  ({len(comparisons) / elapsed:.0f}/s)"
    )
    result = calibration_agreement()
    for group, paper in (("train", 0.726), ("heldout", 0.773)):
        r = result[group]
        print(
            f"{'agreement ' + group:34s} {100 * r['agreement']:10.1f} %  (95 % CI {100 * r['ci95'][0]:.1f}-"
            f"{100 * r['ci95'][1]:.1f}; paper {100 * paper:.1f} %)"
        )
    print(
        json.dumps(
            {
                "bench": "labelers",
                "ratio": round(60.0 / elapsed * len(comparisons) / 1000, 2),
                "goal": ">= 1.0",
                "comparisons": len(comparisons),
                "seconds": round(elapsed, 1),
                "agreement_train": result["train"]["agreement"],
                "agreement_heldout": result["heldout"]["agreement"],
            }
        )
    )


if __name__ == "__main__":
    main()
