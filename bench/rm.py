"""Reward-model training throughput: the paper's K-way batching against pair flattening.

    python bench/rm.py [--model default] [--comparisons 4] [--max-length 96]
    python bench/rm.py --features [--comparisons 32] [--k 6]
    python bench/rm.py --scoring runs/default/eval [--prompts 40]

--scoring reads an evaluation's generations (every policy's answers to the test prompts) and
its reward model, and scores them all as `batches.score_texts` does in the evaluation: the
answers of one prompt sharing one forward of the prompt, against plain batches by length (the
same RM behind a wrapper, as under DDP); sequences/s of each, the ratio and the largest reward
difference. Last line: {"bench": "rm-scoring", "ratio": <shared / plain>, ...}.

--features measures instead the head_only RM's feature pass (`reward.head_features`: the
K completions of a prompt sharing one prefill) with the backbone in fp32 and in bf16
(rm.quantize), completions/s of each, and how far the bf16 features are from the fp32 ones
(relative L2 per completion; and the rank agreement of one random head's scores). Last line:
{"bench": "rm-features", "ratio": <bf16 / fp32 completions per s>, ...}.

K-way (ours): each prompt's K completions go through the network once and all C(K, 2) pairs
come from those K rewards. Pair-flattened (pairwise trainers): each pair is its own
chosen/rejected example, K(K-1) forwards per prompt. Both do forward + backward + an AdamW
step on the same comparisons (responses of the default model, cut to --max-length tokens), each
mode in its own process for its own peak RSS. The ratio should approach K - 1.
Last line: {"bench": "rm", "ratio": <K = 9 ratio>, "goal": ">= 6", ...}.
Measured on the 2-core machine (default model, 4 comparisons, 96 tokens, with other work
running beside it): K = 4: 1.85x (RSS 3.2 vs 5.2 GB); K = 9: 8.89x (RSS 4.2 vs 15.6 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def comparisons(k: int, n: int):
    from instructrl import data
    from instructrl.records import Comparison, read_records

    samples = read_records(data.DATA_DIR / "calibration_samples.jsonl", "sample")
    by_prompt: dict[str, list] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt_id, []).append(s)
    groups = [
        g for g in by_prompt.values() if isinstance(g[0].prompt, str) and len(g[0].prompt) < 120
    ]
    out = []
    for i in range(n):
        rows = [groups[(i * 3 + j // 4) % len(groups)][j % 4] for j in range(k)]
        out.append(
            Comparison(
                prompt=rows[0].prompt, responses=[r.response for r in rows], ranking=list(range(k))
            )
        )
    return out


def child(mode: str, k: int, args) -> dict:
    import torch

    from instructrl import models
    from instructrl.batches import RankedExample
    from instructrl.stages import reward

    tok = models.load_tokenizer(args.model, padding_side="right")
    model = models.new_reward_model(args.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.95))
    comps = comparisons(k, args.comparisons)
    examples, _ = reward.encode_comparisons(tok, comps, max_length=args.max_length, where="bench")
    if mode == "pairs":  # every pair its own K = 2 example
        examples = [
            RankedExample([e.completions[w], e.completions[lo]], [0, 1], e.prompt_len)
            for c, e in zip(comps, examples, strict=True)
            for w, lo in c.pairs()
        ]
        per_step = max(1, len(examples) // args.comparisons)
    else:
        per_step = 1
    start = time.perf_counter()
    for i in range(0, len(examples), per_step):
        loss, _, _ = reward.batch_loss(model, examples[i : i + per_step], tok.pad_token_id, "cpu")
        loss.backward()
        opt.step()
        opt.zero_grad()
    elapsed = time.perf_counter() - start
    return {
        "comparisons_per_s": args.comparisons / elapsed,
        "seconds": elapsed,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--comparisons", type=int, default=4)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--child", nargs=2, metavar=("MODE", "K"))
    p.add_argument("--features", action="store_true", help="fp32 against bf16 features")
    p.add_argument("--k", type=int, default=6, help="with --features: completions per prompt")
    p.add_argument("--scoring", metavar="EVAL_DIR", help="shared-prompt against plain RM scoring")
    p.add_argument("--prompts", type=int, default=0, help="with --scoring: the first N prompts")
    args = p.parse_args()
    if args.features:
        return features(args)
    if args.scoring:
        return scoring(args.scoring, args.prompts)
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], int(args.child[1]), args)))
        return
    results = {}
    for k in (4, 9):
        for mode in ("kway", "pairs"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                mode,
                str(k),
                "--model",
                args.model,
                "--comparisons",
                str(args.comparisons),
                "--max-length",
                str(args.max_length),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise SystemExit(f"{mode} K={k} failed:\n{proc.stderr[-3000:]}")
            results[(k, mode)] = json.loads(lines[-1][7:])
    print(
        f"{'K':>3s} {'K-way cmp/s':>12s} {'pairs cmp/s':>12s} {'ratio':>7s} {'K-1':>4s} {'RSS K-way':>10s} {'RSS pairs':>10s}"
    )
    summary = {"bench": "rm"}
    for k in (4, 9):
        a, b = results[(k, "kway")], results[(k, "pairs")]
        ratio = a["comparisons_per_s"] / b["comparisons_per_s"]
        print(
            f"{k:3d} {a['comparisons_per_s']:12.3f} {b['comparisons_per_s']:12.3f} {ratio:7.2f} {k - 1:4d} "
            f"{a['peak_rss_gb']:9.2f}G {b['peak_rss_gb']:9.2f}G"
        )
        summary[f"ratio_k{k}"] = round(ratio, 2)
        summary[f"kway_rss_gb_k{k}"] = round(a["peak_rss_gb"], 2)
        summary[f"pairs_rss_gb_k{k}"] = round(b["peak_rss_gb"], 2)
    summary.update(
        ratio=summary["ratio_k9"],
        goal=">= 6",
        model=args.model,
        comparisons=args.comparisons,
        max_length=args.max_length,
    )
    print(json.dumps(summary))


def features(args) -> None:
    import torch

    from instructrl import models
    from instructrl.stages import reward

    tok = models.load_tokenizer(args.model, padding_side="right")
    comps = comparisons(args.k, args.comparisons)
    examples, _ = reward.encode_comparisons(tok, comps, max_length=192, where="bench")
    n = sum(len(e.completions) for e in examples)
    feats, rate = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rm = models.reward_model_on(  # frozen, as the stage's scorer (reward.bf16_scorer)
            models.load_policy(args.model, dtype=dtype).requires_grad_(False),
            torch.nn.Linear(1, 1),
        )
        reward.head_features(rm, examples[:2], tok.pad_token_id)  # warm-up
        start = time.perf_counter()
        feats[name] = reward.head_features(rm, examples, tok.pad_token_id)
        rate[name] = n / (time.perf_counter() - start)
    a, b = feats["fp32"], feats["bf16"]
    rel = ((a - b).norm(dim=-1) / a.norm(dim=-1)).mean().item()
    w = torch.randn(a.shape[1], generator=torch.Generator().manual_seed(0))
    ra, rb = a @ w, b @ w
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    agree = sum(bool((ra[i] > ra[j]) == (rb[i] > rb[j])) for i, j in pairs) / len(pairs)
    print(
        f"{args.comparisons} prompts x K = {args.k} ({n} completions), {torch.get_num_threads()} "
        f"threads: fp32 {rate['fp32']:.1f}, bf16 {rate['bf16']:.1f} completions/s "
        f"({rate['bf16'] / rate['fp32']:.2f}x); bf16 features {rel:.4f} from fp32 (relative L2), "
        f"a random head orders {agree:.4f} of the pairs alike"
    )
    print(
        json.dumps(
            {
                "bench": "rm-features",
                "ratio": round(rate["bf16"] / rate["fp32"], 2),
                "fp32_per_s": round(rate["fp32"], 1),
                "bf16_per_s": round(rate["bf16"], 1),
                "relative_l2": round(rel, 4),
                "pair_agreement": round(agree, 4),
                "completions": n,
            }
        )
    )


def scoring(eval_dir: str, limit: int = 0) -> None:
    from pathlib import Path

    import torch
    from omegaconf import OmegaConf

    from instructrl import models
    from instructrl.batches import score_texts
    from instructrl.records import read_records

    cfg = OmegaConf.load(Path(eval_dir) / "config.yaml")
    rm = models.load_reward_model(cfg.reward)
    tok = models.load_tokenizer(cfg.reward, padding_side="right")
    samples = [
        s
        for f in sorted((Path(eval_dir) / "generations").glob("*.jsonl"))
        for s in read_records(f, "sample")
    ]
    if limit:
        keep = set(list(dict.fromkeys(s.prompt_id for s in samples))[:limit])
        samples = [s for s in samples if s.prompt_id in keep]
    pairs = [(s.prompt, s.response) for s in samples]
    reasons = [s.finish_reason for s in samples]
    kw = {"batch_size": 16, "max_length": 2048, "device": "cpu", "finish_reasons": reasons}

    class Wrapper(torch.nn.Module):  # no backbone of its own: score_texts' plain batches
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, ids, attn):
            return self.module(ids, attn)

    score_texts(rm, tok, pairs[:32], **{**kw, "finish_reasons": reasons[:32]})  # warm-up
    seconds, scores = {}, {}
    for name, model in (("plain", Wrapper(rm)), ("shared", rm)):
        start = time.perf_counter()
        with torch.no_grad():
            scores[name] = score_texts(model, tok, pairs, **kw)
        seconds[name] = time.perf_counter() - start
    gap = max(abs(a - b) for a, b in zip(scores["plain"], scores["shared"], strict=True))
    n = len({(json.dumps(p), r, f) for (p, r), f in zip(pairs, reasons, strict=True)})
    print(
        f"{n} distinct sequences of {len({s.prompt_id for s in samples})} prompts, "
        f"{torch.get_num_threads()} threads: plain batches {n / seconds['plain']:.1f}/s "
        f"({seconds['plain']:.1f} s), one forward of each prompt {n / seconds['shared']:.1f}/s "
        f"({seconds['shared']:.1f} s): {seconds['plain'] / seconds['shared']:.2f}x; "
        f"largest reward difference {gap:.2e}"
    )
    print(
        json.dumps(
            {
                "bench": "rm-scoring",
                "ratio": round(seconds["plain"] / seconds["shared"], 2),
                "plain_s": round(seconds["plain"], 1),
                "shared_s": round(seconds["shared"], 1),
                "sequences": n,
                "max_abs_diff": gap,
            }
        )
    )


if __name__ == "__main__":
    main()
