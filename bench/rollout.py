"""Rollout speed: our engine against transformers' `generate` as shipped, and against the roof.

    python bench/rollout.py [--model default] [--new-tokens 48] [--batches 1,8,32] [--k 4]
    python bench/rollout.py --options [--compile]
    python bench/rollout.py --ends

--options measures, instead, the transformers options on our bf16 engine at the largest batch
and in the K shape (the shipped path is our decode loop, `rollout.decode`, with SDPA attention
and a dynamic KV cache; a static cache measured as noise under transformers' generate and is not
an option of the loop): eager attention, a batch twice as large, transformers' continuous batching (`generate_batch` with
paged SDPA attention; no shared prefill), and with --compile torch.compile of the copy's
forward (dynamic shapes; its compile time printed). Last line: JSON of those tokens/s.

For each batch size: HF `generate` (sampling at temperature 1 over the full vocabulary, every
row made to write all its new tokens, so every method does the same work) on the policy, then
our `rollout.Engine` with quantize=none (the same path, K samples sharing a prefill where a
prompt repeats), quantize=bf16 (a bfloat16 copy) and quantize=int8 (a dynamically
int8-quantised copy), each copy's mean |logprob gap| to the fp32 policy on its own samples, and CTranslate2 int8
where that package is installed (its conversion timed), all on the same prompts and seeds; tokens/s counts the response tokens actually produced. The roof is a batched
no-grad forward (32 x 96 tokens) measured in the same run. The K row is the samples step's
shape: batch/K prompts x K samples each. Last line: JSON with ratio = the best engine's
tokens/s over HF generate's at the largest batch (goal >= 2.5, about half the roof).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import peers
import torch


def tokens_per_s(fn, n_runs: int = 1) -> float:
    fn()  # warm-up (allocations, first-call overheads)
    tokens, start = 0, time.perf_counter()
    for _ in range(n_runs):
        tokens += fn()
    return tokens / (time.perf_counter() - start)


def logprob_gap(policy, engine, rows: list[list[int]], new_tokens: int) -> float:
    """Mean |log pi_policy - log pi_engine| over the tokens an engine samples (temperature 1):
    how far its samples' log-probabilities are from the fp32 policy's (PPO's ppo/logprob_gap)."""
    from instructrl.losses import token_logprobs

    gens = engine.generate(
        rows, max_new_tokens=new_tokens, temperature=1.0, seed=0, return_logprobs=True
    )
    gaps = []
    with torch.no_grad():
        for prompt, g in zip(rows, gens, strict=True):
            seq = torch.tensor([prompt + g.token_ids])
            logits = policy(seq).logits[0, len(prompt) - 1 : -1].float()
            exact = token_logprobs(logits, torch.tensor(g.token_ids))
            gaps.append((exact - torch.tensor(g.logprobs)).abs())
    return torch.cat(gaps).mean().item()


def ctranslate2_generator(model: str) -> dict:
    """CTranslate2 (an inference engine for CPUs), where installed: the policy converted to int8
    in process, as a PPO loop would have to after every update, timed."""
    import tempfile

    import ctranslate2

    from instructrl import models

    out = tempfile.mkdtemp(prefix="ct2-")
    start = time.perf_counter()
    converter = ctranslate2.converters.TransformersConverter(models.resolve_model(model))
    converter.convert(out, quantization="int8", force=True)
    convert_s = time.perf_counter() - start
    generator = ctranslate2.Generator(
        out, device="cpu", compute_type="int8", intra_threads=torch.get_num_threads()
    )
    return {"generator": generator, "convert_s": convert_s, "version": ctranslate2.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt in the K row")
    parser.add_argument("--options", action="store_true", help="transformers' options instead")
    parser.add_argument("--compile", action="store_true", help="with --options: torch.compile")
    parser.add_argument(
        "--ends", action="store_true", help="answers that end: our decode loop against generate"
    )
    args = parser.parse_args()
    if args.options:
        return options(args)
    if args.ends:
        return ends(args)

    from instructrl import models, rollout
    from instructrl.config import RolloutConfig
    from instructrl.data import load_prompts

    tokenizer = models.load_tokenizer(args.model)
    policy = models.load_policy(args.model).eval()
    batches = [int(b) for b in args.batches.split(",")]
    prompts = [p.prompt for p in load_prompts("train")[: max(batches)]]
    ids = rollout.encode_prompts(tokenizer, prompts)
    T = args.new_tokens

    def hf_generate(rows: list[list[int]]) -> int:
        return peers.hf_generate(policy, tokenizer, rows, new_tokens=T)

    engines = {"none": rollout.Engine(policy, tokenizer, RolloutConfig(quantize="none"))}
    copy_s = {}
    for q in ("bf16", "int8"):
        start = time.perf_counter()
        engines[q] = rollout.Engine(policy, tokenizer, RolloutConfig(quantize=q))
        copy_s[q] = time.perf_counter() - start

    def engine(q: str, rows: list[list[int]], k: int = 1) -> int:
        return peers.engine_tokens(engines[q], rows, new_tokens=T, k=k)

    x = torch.randint(0, 1000, (32, 96))
    with torch.no_grad():
        roof = tokens_per_s(lambda: policy(x).logits.shape[0] * 96)

    ct2 = ctranslate2_generator(args.model) if importlib.util.find_spec("ctranslate2") else None

    def ctranslate2_rows(rows: list[list[int]]) -> int:
        tokens = [tokenizer.convert_ids_to_tokens(r) for r in rows]
        out = ct2["generator"].generate_batch(
            tokens,
            max_length=T,
            min_length=T,
            sampling_topk=0,  # the full vocabulary
            sampling_temperature=1.0,
            include_prompt_in_result=False,
        )
        return sum(len(r.sequences_ids[0]) for r in out)

    rows_out = []
    for b in batches:
        batch = ids[:b]
        row = {
            "batch": b,
            "hf_generate": tokens_per_s(lambda batch=batch: hf_generate(batch)),
            "engine_fp32": tokens_per_s(lambda batch=batch: engine("none", batch)),
            "engine_bf16": tokens_per_s(lambda batch=batch: engine("bf16", batch)),
            "engine_int8": tokens_per_s(lambda batch=batch: engine("int8", batch)),
        }
        if ct2:
            row["ctranslate2_int8"] = tokens_per_s(lambda batch=batch: ctranslate2_rows(batch))
        rows_out.append(row)
    k_prompts = ids[: max(1, max(batches) // args.k)]
    k_row = {
        "batch": f"{len(k_prompts)}x{args.k}",
        "hf_generate": tokens_per_s(
            lambda: hf_generate([p for p in k_prompts for _ in range(args.k)])
        ),
        "engine_fp32": tokens_per_s(lambda: engine("none", k_prompts, args.k)),
        "engine_bf16": tokens_per_s(lambda: engine("bf16", k_prompts, args.k)),
        "engine_int8": tokens_per_s(lambda: engine("int8", k_prompts, args.k)),
    }
    if ct2:
        k_row["ctranslate2_int8"] = tokens_per_s(
            lambda: ctranslate2_rows([p for p in k_prompts for _ in range(args.k)])
        )
    rows_out.append(k_row)

    gap = {q: logprob_gap(policy, engines[q], ids[:8], T) for q in ("bf16", "int8")}
    print(
        f"model {args.model}, {T} new tokens, temperature 1, full vocabulary, "
        f"{torch.get_num_threads()} threads; roof (forward 32 x 96): {roof:.0f} tokens/s; "
        f"bf16 copy made in {copy_s['bf16']:.1f} s (gap {gap['bf16']:.3f} nats/token), "
        f"int8 copy in {copy_s['int8']:.1f} s (gap {gap['int8']:.3f} nats/token)"
    )
    if ct2:
        print(f"ctranslate2 {ct2['version']}: int8 conversion {ct2['convert_s']:.1f} s")
    columns = ["engine_fp32", "engine_bf16", "engine_int8", *(["ctranslate2_int8"] if ct2 else [])]
    print(
        f"{'batch':>7} {'hf_generate':>12} "
        + " ".join(f"{c:>16}" for c in columns)
        + f" {'best/HF':>8}"
    )
    for r in rows_out:
        best = max(r[c] for c in columns)
        print(
            f"{r['batch']!s:>7} {r['hf_generate']:12.1f} "
            + " ".join(f"{r[c]:16.1f}" for c in columns)
            + f" {best / r['hf_generate']:8.2f}"
        )
    largest = rows_out[len(batches) - 1]
    faithful = [c for c in columns if c in ("engine_fp32", "engine_bf16")]
    best = max(largest[c] for c in columns)
    best_faithful = max(largest[c] for c in faithful)
    print(
        json.dumps(
            {
                "bench": "rollout",
                "ratio": round(best / largest["hf_generate"], 2),
                "ratio_faithful": round(best_faithful / largest["hf_generate"], 2),
                "goal": ">= 2.5",
                "batch": largest["batch"],
                "roof_tokens_per_s": round(roof, 1),
                "bf16_copy_s": round(copy_s["bf16"], 2),
                "int8_copy_s": round(copy_s["int8"], 2),
                "bf16_logprob_gap": round(gap["bf16"], 4),
                "int8_logprob_gap": round(gap["int8"], 4),
                "ctranslate2_convert_s": round(ct2["convert_s"], 2) if ct2 else None,
                "rows": [
                    {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in rows_out
                ],
            }
        )
    )


def options(args) -> None:
    """tokens/s of the bf16 engine with each option transformers offers, against the shipped
    path, at the largest batch and in the K shape, on the same prompts and seeds."""
    from instructrl import models, rollout
    from instructrl.config import RolloutConfig
    from instructrl.data import load_prompts

    tokenizer = models.load_tokenizer(args.model)
    policy = models.load_policy(args.model).eval()
    b = max(int(x) for x in args.batches.split(","))
    ids = rollout.encode_prompts(tokenizer, [p.prompt for p in load_prompts("train")[: 2 * b]])
    T = args.new_tokens

    def measure(engine) -> dict:
        return {
            f"b{b}": tokens_per_s(lambda: peers.engine_tokens(engine, ids[:b], new_tokens=T)),
            f"b{2 * b}": tokens_per_s(
                lambda: peers.engine_tokens(engine, ids[: 2 * b], new_tokens=T)
            ),
            f"{b // args.k}x{args.k}": tokens_per_s(
                lambda: peers.engine_tokens(engine, ids[: b // args.k], new_tokens=T, k=args.k)
            ),
        }

    def bf16_engine(attn="sdpa"):
        engine = rollout.Engine(policy, tokenizer, RolloutConfig(quantize="bf16"))
        engine.model.set_attn_implementation(attn)
        return engine

    rows = {
        "shipped (sdpa, dynamic cache)": measure(bf16_engine()),
        "eager attention": measure(bf16_engine("eager")),
    }
    rows["continuous batching (generate_batch)"] = continuous_batching(
        policy, ids, b=b, k=args.k, new_tokens=T
    )
    extra = {}
    if args.compile:
        engine = bf16_engine()
        engine.model.forward = torch.compile(engine.model.forward, dynamic=True)
        start = time.perf_counter()
        peers.engine_tokens(engine, ids[:b], new_tokens=T)
        extra["compile_s"] = round(time.perf_counter() - start, 1)
        rows["torch.compile (dynamic)"] = measure(engine)
    print(f"bf16 engine, {T} new tokens, temperature 1, {torch.get_num_threads()} threads")
    shapes = list(next(iter(rows.values())))
    print(f"{'option':38}" + "".join(f"{s:>10}" for s in shapes))
    for name, r in rows.items():
        print(f"{name:38}" + "".join(f"{r[s]:10.1f}" for s in shapes))
    if extra:
        print(f"torch.compile: first call (compilation) {extra['compile_s']} s")
    print(
        json.dumps(
            {
                "bench": "rollout-options",
                **extra,
                "rows": {n: {s: round(v, 1) for s, v in r.items()} for n, r in rows.items()},
            }
        )
    )


def ends(args) -> None:
    """The evaluation's shape, where answers end: 32 test prompts x 3 samples sharing a prefill
    (96 rows), temperature 0.7, top-p 0.9, up to 48 new tokens, EOS allowed, on the policy in
    fp32. transformers' generate with our sampler (the engine before its own decode loop: rows
    that ended decode padding until the batch's last one ends) against rollout.generate
    (`rollout.decode`: ended rows leave the batch and its KV cache), each run twice, the same
    seeds, and the loop again with top-p applied as a warper of the whole scores, then their
    softmax (NucleusWarper, and transformers' TopPLogitsWarper, which sorts the vocabulary);
    tokens/s counts the response tokens produced. Last line: JSON with ratio."""
    from transformers import TopPLogitsWarper

    from instructrl import models, rollout
    from instructrl.data import load_prompts

    tokenizer = models.load_tokenizer(args.model)
    policy = models.load_policy(args.model).eval()
    prompts = [p.prompt for p in load_prompts("test")[:32]]
    ids = rollout.encode_prompts(tokenizer, prompts)
    rows = [p for p in ids for _ in range(3)]
    T, temperature, top_p = args.new_tokens, 0.7, 0.9

    def before() -> int:
        return peers.hf_generate_sampled(
            policy, tokenizer, rows, new_tokens=T, temperature=temperature, top_p=top_p
        )

    def ours() -> int:
        gens = rollout.generate(
            policy,
            tokenizer,
            ids,
            max_new_tokens=T,
            temperature=temperature,
            top_p=top_p,
            batch_size=len(rows),
            samples_per_prompt=3,
            share_prefill=True,
        )
        return sum(len(g.token_ids) for g in gens)

    figures = {"generate": tokens_per_s(before, 2), "decode": tokens_per_s(ours, 2)}
    init = rollout.InverseCDFSampler.__init__
    # the loop as it was: top-p as a warper of the whole (B, V) scores, then a softmax of them
    for name, warper in (
        ("decode_warping_top_p", rollout.NucleusWarper),
        ("decode_sorting_top_p", TopPLogitsWarper),
    ):

        def as_warper(self, *, warper=warper, **kw):
            init(self, **kw)
            if self.nucleus is not None:
                self.warpers.append(warper(self.nucleus.top_p))
                self.nucleus = None

        rollout.InverseCDFSampler.__init__ = as_warper
        try:
            figures[name] = tokens_per_s(ours, 2)
        finally:
            rollout.InverseCDFSampler.__init__ = init
    print(
        f"model {args.model}, 32 prompts x 3 samples, up to {T} new tokens, temperature "
        f"{temperature}, top-p {top_p}, {torch.get_num_threads()} threads: transformers generate "
        f"{figures['generate']:.1f} tokens/s, our decode loop {figures['decode']:.1f} tokens/s "
        f"({figures['decode_warping_top_p']:.1f} with NucleusWarper as a warper and a second "
        f"softmax of the vocabulary, {figures['decode_sorting_top_p']:.1f} with transformers' "
        "TopPLogitsWarper, which sorts the vocabulary every step)"
    )
    print(
        json.dumps(
            {
                "bench": "rollout-ends",
                "ratio": round(figures["decode"] / figures["generate"], 2),
                **{k: round(v, 1) for k, v in figures.items()},
            }
        )
    )


def continuous_batching(policy, ids: list[list[int]], *, b: int, k: int, new_tokens: int) -> dict:
    """transformers' continuous batching (`generate_batch`, paged SDPA attention) on a bf16
    copy, in the shapes of `options`: b and 2b prompts, and b/k prompts each repeated k times
    (it has no shared prefill; repeated prompts are separate requests), its manager kept between
    calls so that its start-up is paid in the warm-up call. Sampling at temperature
    1 over the full vocabulary, every request made to write all its new tokens."""
    from instructrl import rollout

    model = rollout.low_precision_copy(policy, "bf16")
    model.set_attn_implementation("paged|sdpa")
    config = peers.peer_sampling(new_tokens)

    def run(rows: list[list[int]]) -> int:
        torch.manual_seed(0)
        out = model.generate_batch(
            inputs=rows, generation_config=config, progress_bar=False, persistent_manager=True
        )
        return sum(len(o.generated_tokens) for o in out.values())

    return {
        f"b{b}": tokens_per_s(lambda: run(ids[:b])),
        f"b{2 * b}": tokens_per_s(lambda: run(ids[: 2 * b])),
        f"{b // k}x{k}": tokens_per_s(lambda: run([r for r in ids[: b // k] for _ in range(k)])),
    }


if __name__ == "__main__":
    main()
