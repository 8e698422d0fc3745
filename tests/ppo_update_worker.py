"""One PPO update on a fixed rollout, in 1 or 2 processes (tests/test_distributed.py launches
it): every process samples and evaluates the same 8 episodes (same prompts, same seed), keeps
its contiguous share, computes advantages (whitened over every process's tokens) and runs
update(); the main process saves the updated policy and value weights and the update's stats
(with ema_decay=D, the policy's weight EMA instead of its weights, and the EMA's state).

    python tests/ppo_update_worker.py MODEL_DIR OUT_DIR [KEY=VALUE ...]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

PROMPTS = [
    "Say hi.",
    "What is the capital of France? Answer in one sentence, please.",
    "List three colours",
    "Write a poem.",
    "Name a fruit.",
    "Explain why the sky is blue, briefly.",
    "Count to three",
    "Tell me a joke about cats and dogs.",
]


def high_half_score(
    ids: torch.Tensor, attention: torch.Tensor, response_start=None
) -> torch.Tensor:
    """The share of a sequence's last 8 real tokens in the upper half of the vocabulary."""
    return torch.stack(
        [
            (row[mask][-8:] >= 192).float().mean()
            for row, mask in zip(ids, attention.bool(), strict=True)
        ]
    )


def share(r, rows: torch.Tensor):
    """The episodes `rows` of a Rollout (tensors and lists by row)."""
    picked = {}
    for f in dataclasses.fields(r):
        v = getattr(r, f.name)
        if isinstance(v, torch.Tensor):
            picked[f.name] = v[rows]
        elif isinstance(v, list):
            picked[f.name] = [v[i] for i in rows.tolist()]
    return dataclasses.replace(r, **picked)


def main(model_dir: str, out: str) -> None:
    from instructrl import models, trainer
    from instructrl.config import PPOConfig, load_config
    from instructrl.rollout import encode_prompts
    from instructrl.stages import ppo

    settings = {
        "policy": model_dir,
        "reward": "unused",
        "lr": 3e-3,
        "value_lr": 3e-3,
        "batch_size": len(PROMPTS),
        "minibatch_size": len(PROMPTS),  # one minibatch: the update does not depend on order
        "ppo_epochs": 2,  # the second step sees ratios away from 1
        "max_new_tokens": 8,
        "warmup_iterations": 0,
        "kl_coef": 0.01,
        "stop": "[e]",  # responses of different lengths (a random model rarely says EOS)
        "ptx": "none",
        "checkpoint_every": 0,
    }
    overrides = [f"{k}={v}" for k, v in settings.items()] + sys.argv[3:]
    cfg = load_config(PPOConfig, overrides)
    acc = trainer.make_accelerator(cfg)
    torch.manual_seed(0)
    tok = models.load_tokenizer(model_dir)
    t = ppo.PPOTrainer(
        cfg,
        accelerator=acc,
        policy=models.load_policy(model_dir).train(),
        ref_policy=models.load_policy(model_dir).requires_grad_(False),
        value_model=models.new_reward_model(model_dir).train(),
        tokenizer=tok,
        score_fn=high_half_score,
        ptx=[],
    )
    whole = t.sample(encode_prompts(tok, PROMPTS), seed=0)  # the same on every process
    t.evaluate(whole)
    mine = share(whole, torch.arange(len(PROMPTS)).chunk(acc.num_processes)[acc.process_index])
    advantages, returns, _, _ = t.advantages(mine)
    stats = t.update(mine, advantages, returns, seed=0)
    ema = None
    if t.ema is not None:  # ema_decay=D: its state round-trips, and the output is the average
        ema = t.ema.state_dict()  # whole tensors (gathered from every process under ZeRO-3)
        t.ema.load_state_dict(ema)
        t.ema.copy_to(models.unwrap(t.policy))
    weights = {  # every process: gathered from the shards under ZeRO-3
        name: trainer.full_state_dict(acc, model)
        for name, model in (("policy", t.policy), ("value", t.value_model))
    }
    if acc.is_main_process:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        for name, state in weights.items():
            save_file(  # cloned: tied embeddings share memory
                {k: v.detach().float().clone().contiguous() for k, v in state.items()},
                path / f"{name}.safetensors",
            )
        if ema is not None:
            save_file(
                {k: v.float().contiguous() for k, v in ema["shadow"].items()},
                path / "ema_state.safetensors",
            )
        tokens = [int(m.sum()) for m in mine.response_mask]
        (path / "stats.json").write_text(json.dumps({**stats, "tokens": tokens}))
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:3])
