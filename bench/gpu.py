"""GPU figures: tokens/s of HF generate and our hf engine (bf16) at batch 64 and 16 x 4, and
seconds per PPO iteration (64 episodes, 48 new tokens, minibatch 16) with peak GPU memory, for
random-weight Llamas shaped like SmolLM2-135M and like a 1B model (random weights: speed only).

    python bench/gpu.py [--tokenizer DIR] [--smoke]

--tokenizer: a directory with SmolLM2's tokenizer and config.json (default: the embedded
default model's cache directory). Packages missing on a bare GPU image (omegaconf,
platformdirs) may be put, pure Python, under .gpu/site. --smoke: a tiny CPU run of the same
code. Writes $OUT/gpu.json (or /tmp/out) and prints one JSON line.
"""

import json
import os
import sys
import tempfile
import time

if os.path.isdir(".gpu/site"):
    sys.path.insert(0, ".gpu/site")
sys.path.insert(0, ".")
import peers
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from instructrl import models, rollout
from instructrl.config import PPOConfig, RolloutConfig, build
from instructrl.data import load_prompts
from instructrl.rundir import read_metrics
from instructrl.stages import ppo

SMOKE = "--smoke" in sys.argv
TOKENIZER = (
    sys.argv[sys.argv.index("--tokenizer") + 1]
    if "--tokenizer" in sys.argv
    else str(models.default_model_dir())
)
dev = "cpu" if SMOKE else "cuda"
out_dir = os.environ.get("OUT", "/tmp/out")
tok = AutoTokenizer.from_pretrained(TOKENIZER)
small = LlamaConfig.from_pretrained(TOKENIZER)
shapes = {"smollm2-135m-shape": small}
if not SMOKE:
    big = small.to_dict()
    big.update(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16)
    big.update(num_attention_heads=32, num_key_value_heads=8, head_dim=64)
    shapes["llama-1b-shape"] = LlamaConfig(**big)
else:
    small.update({"num_hidden_layers": 2})
B, K, T = (64, 4, 48) if not SMOKE else (4, 2, 4)
prompts = [p.prompt for p in load_prompts("train")[:B]]
ids = rollout.encode_prompts(tok, prompts)
results = {
    "device": torch.cuda.get_device_name() if not SMOKE else "cpu",
    "torch": torch.__version__,
}


def timed(fn):
    fn()
    if dev == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    n = fn()
    if dev == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def measure(cfg: LlamaConfig) -> dict:
    """Generation speeds, then a 3-iteration PPO run from directories, for one model shape."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dev, torch.bfloat16 if dev == "cuda" else torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())

    def hf(rows):
        return peers.hf_generate(model, tok, rows, new_tokens=T, device=dev)

    engine = rollout.Engine(model, tok, RolloutConfig())

    def ours(rows, k=1):
        return peers.engine_tokens(engine, rows, new_tokens=T, k=k)

    row = {"params": n_params}
    row["hf_generate_b64"] = timed(lambda: hf(ids))
    row["engine_b64"] = timed(lambda: ours(ids))
    row["hf_generate_16x4"] = timed(lambda: hf([x for x in ids[: B // K] for _ in range(K)]))
    row["engine_16x4"] = timed(lambda: ours(ids[: B // K], K))
    # one PPO setup from directories, as `instructrl ppo` runs it
    with tempfile.TemporaryDirectory() as tmp:
        model.float().save_pretrained(f"{tmp}/policy")
        tok.save_pretrained(f"{tmp}/policy")
        model = engine = None  # free the GPU copy before PPO loads its own
        torch.cuda.empty_cache() if dev == "cuda" else None
        rm = models.new_reward_model(f"{tmp}/policy", dtype=torch.float32)
        models.save_reward_model(
            rm, tok, __import__("pathlib").Path(f"{tmp}/rm"), bias=0.0, extra={"max_length": 512}
        )
        del rm
        ppo_cfg = build(
            PPOConfig,
            {
                "policy": f"{tmp}/policy",
                "reward": f"{tmp}/rm",
                "out": f"{tmp}/ppo",
                "ptx": "none",
                "iterations": 3,
                "batch_size": B,
                "minibatch_size": B // 4,
                "max_new_tokens": T,
                "checkpoint_every": 0,
                "sample_every": 0,
                "warmup_iterations": 0,
            },
        )
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        ppo.run(ppo_cfg)
        rows = read_metrics(__import__("pathlib").Path(f"{tmp}/ppo/metrics.jsonl"))
        row["ppo_iteration_s"] = [round(r["ppo/iteration_s"], 2) for r in rows]
        row["ppo_total_s_with_loading"] = round(time.perf_counter() - start, 1)
        row["ppo_peak_gib"] = (
            round(torch.cuda.max_memory_allocated() / 2**30, 1) if dev == "cuda" else None
        )
    return row


for name, cfg in shapes.items():
    row = measure(cfg)
    results[name] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}
    print(name, json.dumps(results[name]), flush=True)
os.makedirs(out_dir, exist_ok=True)
with open(f"{out_dir}/gpu.json", "w") as f:
    json.dump(results, f, indent=2)
print(json.dumps(results))
