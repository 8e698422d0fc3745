"""`instructrl ppo`: PPO(-ptx) against the reward model (paper, section 3.5, appendix C.3-C.4).

One iteration reads like the algorithm (PPOTrainer.step):
sample responses -> old / reference logprobs and values -> RM scores -> per-token rewards with
the KL penalty -> GAE -> PPO epochs over minibatches (clipped policy loss + gamma * pretraining
NLL for PPO-ptx; clipped value loss) -> statistics -> KL controller update.

Details of lm-human-preferences, each visible here: left-padded prompts with position ids that
skip padding; logits divided by the temperature when sampling and when scoring; a response ends
at its first EOS (pad = EOS, so masks come from lengths); optional missing-EOS penalty and
stop-string truncation; advantage whitening (and optional reward whitening); adaptive KL with a
clipped proportional error; no dropout during RL. Policy and value share nothing (the paper).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from instructrl import losses, models, rollout, rundir, trainer
from instructrl.batches import Example, collate, masked_logits, ptx_examples, right_pad
from instructrl.config import PPOConfig, save_config
from instructrl.errors import UserError
from instructrl.plots import plot_curves
from instructrl.progress import progress_bar
from instructrl.records import Prompt, Sample, read_records, write_records

log = logging.getLogger(__name__)
# (ids (B, L), mask (B, L), response_start= (B,): each row's first response column) -> (B,)
ScoreFn = Callable[..., torch.Tensor]


@dataclass
class Rollout:
    """One batch of episodes. P prompt columns (left-padded), T response columns (right-padded)."""

    input_ids: torch.Tensor  # (B, P + T)
    attention: torch.Tensor  # (B, P + T) bool: real prompt and response tokens
    response_mask: torch.Tensor  # (B, T) bool: response tokens up to and including the first EOS
    prompt_width: int
    ended: torch.Tensor  # (B,) bool: the response ended with EOS or a stop string
    texts: list[str]
    finish_reasons: list[str]  # per episode: "eos", "length" or "stop"
    scored: list[list[int]]  # per episode, what the RM reads (rollout.scored_sequence)
    logprobs: torch.Tensor | None = None  # (B, T) under the rollout policy (training model)
    engine_logprobs: torch.Tensor | None = None  # (B, T) the sampler's own, when it is not exact
    is_weights: torch.Tensor | None = None  # (B, T) truncated importance weights (rollout.tis_cap)
    ref_logprobs: torch.Tensor | None = None  # (B, T) under the SFT reference
    values: torch.Tensor | None = None  # (B, T)
    scores: torch.Tensor | None = None  # (B,)
    kl: torch.Tensor | None = None  # (B,) KL to the reference per response (k1, nats)
    trunk: models.Trunk | None = None  # hidden states after the layers the models share

    def rows(self, idx: torch.Tensor) -> models.Trunk | None:
        """The shared trunk's hidden states of minibatch `idx`."""
        if self.trunk is None:
            return None
        return models.Trunk(self.trunk.layers, self.trunk.hidden[idx.to(self.trunk.hidden.device)])


def response_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    prompt_width: int,
    response_width: int,
    temperature: float,
    *,
    with_entropy: bool = False,
    trunk: models.Trunk | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) log pi(y_t | x, y_<t) of the response tokens, logits divided by the temperature
    (as when sampling), and optionally (B, T) entropies. Logits only for response positions.
    `trunk`: these rows' hidden states after the lower layers the models share."""
    hidden = models.final_hidden(model, input_ids, attention, trunk)  # (B, P + T, H)
    h = hidden[:, prompt_width - 1 : prompt_width - 1 + response_width]  # (B, T, H): predicts y_t
    logits = models.unwrap(model).get_output_embeddings()(h).float() / temperature  # (B, T, V)
    labels = input_ids[:, prompt_width : prompt_width + response_width]
    logprobs = losses.token_logprobs(logits, labels)
    entropy = (
        losses.entropy_from_logits(logits.detach()) if with_entropy else None
    )  # a statistic only
    return logprobs, entropy


def response_values(
    value_model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    prompt_width: int,
    response_width: int,
    trunk: models.Trunk | None = None,
) -> torch.Tensor:
    """(B, T) V(s_t): the value head at the position that predicts y_t."""
    per_token = value_model(input_ids, attention, per_token=True, trunk=trunk)  # (B, P + T)
    return per_token[:, prompt_width - 1 : prompt_width - 1 + response_width]


def reward_model_scorer(rm: Any) -> ScoreFn:
    @torch.no_grad()
    def score(
        input_ids: torch.Tensor, attention: torch.Tensor, *, response_start: torch.Tensor
    ) -> torch.Tensor:
        return rm(input_ids, attention, **models.response_start_kwargs(rm, response_start))

    return score


def logprob_gap(r: Rollout) -> float:
    """Mean |log pi_train - log pi_engine| over response tokens: how far the sampling engine's
    log-probabilities are from the training model's (0 for an exact engine)."""
    if r.engine_logprobs is None:
        return 0.0
    gap = (r.logprobs - r.engine_logprobs).abs()
    return losses.masked_mean(gap, r.response_mask).item()


class PolicyAndValue(torch.nn.Module):
    """Policy and value model in one module, for engines that train one model (DeepSpeed).
    The loop calls each by name; this module's own forward is never used."""

    def __init__(self, policy: Any, value: Any):
        super().__init__()
        self.policy, self.value = policy, value


class PPOTrainer:
    """Holds the models and optimizers; `step(prompt_ids)` runs one PPO iteration."""

    def __init__(
        self,
        cfg: PPOConfig,
        *,
        accelerator: Any,
        policy: Any,
        ref_policy: Any | None,
        value_model: Any,
        tokenizer: Any,
        score_fn: ScoreFn,
        ptx: list[Any] | None = None,
        trunk_layers: int = 0,
    ):
        self.cfg, self.accelerator, self.tokenizer, self.score_fn = (
            cfg,
            accelerator,
            tokenizer,
            score_fn,
        )
        self.ptx = ptx or []
        self.pad_id = tokenizer.pad_token_id
        # policy, reference and value model share their frozen bottom layers (share_trunk): one
        # forward through them per rollout batch feeds every model's upper layers
        self.trunk_layers = trunk_layers
        # batch_size and minibatch_size count episodes over all processes; each takes its share
        processes = accelerator.num_processes
        if cfg.batch_size % processes or cfg.minibatch_size % processes:
            raise UserError(
                f"ppo: batch_size={cfg.batch_size} and minibatch_size={cfg.minibatch_size} count "
                f"episodes over all {processes} processes: expected both to be multiples of {processes}"
            )
        self.minibatch = cfg.minibatch_size // processes

        def warm(iteration: int) -> float:
            """Constant lr after a linear warmup from 0.1x (paper, C.3)."""
            return (
                0.1 + 0.9 * min(1.0, iteration / cfg.warmup_iterations)
                if cfg.warmup_iterations
                else 1.0
            )

        self.joint = None  # under DeepSpeed: the one engine that trains policy and value
        if trainer.uses_deepspeed(accelerator):
            self._prepare_deepspeed(policy, value_model, warm)
        else:
            policy_opt = trainer.make_optimizer(policy, cfg, lr=cfg.lr)
            value_opt = trainer.make_optimizer(value_model, cfg, lr=cfg.value_lr)
            policy_sched = torch.optim.lr_scheduler.LambdaLR(policy_opt, warm)
            value_sched = torch.optim.lr_scheduler.LambdaLR(value_opt, warm)
            (
                self.policy,
                self.value_model,
                self.policy_opt,
                self.value_opt,
                policy_sched,
                value_sched,
            ) = accelerator.prepare(
                policy, value_model, policy_opt, value_opt, policy_sched, value_sched
            )
            self.schedulers = [policy_sched, value_sched]
        # the reference computes as the prepared policy does (same autocast, or DeepSpeed's
        # precision and placement): KL 0 at the start
        self.ref_policy = (
            None if ref_policy is None else trainer.prepare_frozen(accelerator, ref_policy)
        )
        self.kl_ctl = (
            losses.AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.adaptive_kl
            else losses.FixedKLController(cfg.kl_coef)
        )
        self.engine = rollout.Engine(
            models.unwrap(self.policy),
            tokenizer,
            cfg.rollout,
            # sharded (FSDP): the engine samples from its own whole copy, refreshed every sync
            full_weights=(
                (lambda: trainer.full_state_dict(accelerator, self.policy))
                if trainer.is_sharded(accelerator)
                else None
            ),
        )
        self.ema = (
            trainer.WeightEMA(models.unwrap(self.policy), cfg.ema_decay) if cfg.ema_decay else None
        )
        if self.ema is not None:  # saved with every checkpoint, restored on resume
            accelerator.register_for_checkpointing(self.ema)
        self.iteration = 0

    def _prepare_deepspeed(self, policy: Any, value_model: Any, warm: Callable) -> None:
        """DeepSpeed takes one model per engine and accelerate one engine per accelerator, so
        one module holds policy and value (TRL's PolicyAndValueWrapper): one AdamW with a
        parameter group each (lr, value_lr), one backward of both losses per minibatch (their
        parameters are disjoint, so each gets the gradient it gets alone), the gradient norm
        clipped over both. The warmup schedule is ours, stepped once per iteration (DeepSpeed
        would step a prepared one every minibatch)."""
        cfg, acc = self.cfg, self.accelerator
        trainer.configure_deepspeed(acc, micro_batch_size=self.minibatch, grad_clip=cfg.grad_clip)
        joint = trainer.zero3_adopt(acc, PolicyAndValue(policy, value_model))
        optimizer = trainer.make_optimizer(
            joint, cfg, groups=[(policy, cfg.lr), (value_model, cfg.value_lr)]
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warm)
        self.joint, self.policy_opt = acc.prepare(joint, optimizer)
        acc.register_for_checkpointing(schedule)
        inner = models.unwrap(self.joint)
        self.policy, self.value_model, self.value_opt = inner.policy, inner.value, None
        self.schedulers = [schedule]

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def sample(self, prompt_ids: list[list[int]], seed: int) -> Rollout:
        """Sample one response per prompt with the current policy (temperature cfg.temperature,
        the full vocabulary) through the one generation path, in one batch seeded `seed`."""
        cfg = self.cfg
        policy = models.unwrap(self.policy)
        # an exact engine's logits (divided by the temperature, as when sampling) are the old
        # logprobs: no second forward pass (lm-human-preferences keeps these too); another
        # engine's are kept to measure the gap and weight the loss (rollout.tis_cap)
        # under mixed precision (bf16 autocast on GPU) a cached decode's logits differ from a
        # full forward's by bf16 rounding (1e-3 nats): the training model recomputes them there
        reuse_own = (
            cfg.reuse_rollout_logprobs
            and not getattr(self.accelerator, "native_amp", False)
            and self.joint is None  # DeepSpeed: bf16 weights, rounded as under autocast
        )
        reuse = (reuse_own or not self.engine.exact) and not cfg.stop
        policy.eval()
        generations = self.engine.generate(
            prompt_ids,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=0,
            top_p=1.0,
            stop=cfg.stop,
            batch_size=len(prompt_ids),
            seed=seed,
            return_logprobs=reuse,
        )
        policy.train()
        return self._rollout(prompt_ids, generations, with_logprobs=reuse)

    def _rollout(
        self, prompt_ids: list[list[int]], generations: list[Any], *, with_logprobs: bool
    ) -> Rollout:
        """Left-padded prompts and right-padded responses as one (B, P + T) batch."""
        T = self.cfg.max_new_tokens
        input_ids, mask = rollout.left_pad(prompt_ids, self.pad_id)
        tokens = []
        for g in generations:
            if g.finish_reason == "stop":  # truncate at the stop string, end there with EOS
                kept = self.tokenizer(g.text, add_special_tokens=False)["input_ids"][: T - 1]
                tokens.append([*kept, self.tokenizer.eos_token_id])
            else:
                tokens.append(g.token_ids)
        responses, response_mask = right_pad(tokens, self.pad_id, width=T)  # (B, T)
        ended = torch.tensor([g.finish_reason != "length" for g in generations])
        full = torch.cat([input_ids, responses], dim=1)
        attention = torch.cat([mask, response_mask], dim=1)
        texts = [g.text for g in generations]
        # the RM reads the text's tokens (+ EOS when it ended), exactly as in its training
        # comparisons: a cut-off response is scored without EOS there and here
        scored = [
            rollout.scored_sequence(self.tokenizer, p, g.text, ended=rollout.ended(g.finish_reason))
            for p, g in zip(prompt_ids, generations, strict=True)
        ]
        reasons = [g.finish_reason for g in generations]
        r = Rollout(
            full, attention, response_mask, input_ids.shape[1], ended, texts, reasons, scored
        )
        if with_logprobs:
            logprobs = torch.zeros((len(generations), T))
            for i, g in enumerate(generations):
                logprobs[i, : len(g.logprobs)] = torch.tensor(g.logprobs)
            if self.engine.exact:
                r.logprobs = logprobs
            else:
                r.engine_logprobs = logprobs
        return r

    @torch.no_grad()
    def evaluate(self, r: Rollout) -> None:
        """Fill in old and reference logprobs, values and RM scores (no gradients)."""
        cfg, dev = self.cfg, self.accelerator.device
        ids, attn, T = r.input_ids.to(dev), r.attention.to(dev), r.response_mask.shape[1]
        self.policy.eval()
        self.value_model.eval()
        if self.trunk_layers:
            r.trunk = models.trunk_hidden(self.policy, ids, attn, self.trunk_layers)
        if r.logprobs is None:  # the training model's logprobs of the sampled tokens
            r.logprobs = response_logprobs(
                self.policy, ids, attn, r.prompt_width, T, cfg.temperature, trunk=r.trunk
            )[0].cpu()
        if r.engine_logprobs is not None and cfg.rollout.tis_cap > 0:
            r.is_weights = losses.tis_weights(
                logprobs=r.logprobs,
                engine_logprobs=r.engine_logprobs,
                mask=r.response_mask,
                cap=cfg.rollout.tis_cap,
            )
        if (
            self.ref_policy is None
        ):  # LoRA: the reference is the base model with the adapter disabled
            with models.unwrap(self.policy).disable_adapter():
                r.ref_logprobs = response_logprobs(
                    self.policy, ids, attn, r.prompt_width, T, cfg.temperature
                )[0].cpu()
        else:
            r.ref_logprobs = response_logprobs(
                self.ref_policy, ids, attn, r.prompt_width, T, cfg.temperature, trunk=r.trunk
            )[0].cpu()
        r.values = (
            response_values(self.value_model, ids, attn, r.prompt_width, T, r.trunk).float().cpu()
        )
        rm_ids, rm_attn = right_pad(r.scored, self.pad_id)
        starts = r.attention[:, : r.prompt_width].sum(1).to(dev)  # each prompt's length
        scores = self.score_fn(rm_ids.to(dev), rm_attn.to(dev), response_start=starts).float().cpu()
        if cfg.missing_eos_penalty is not None:
            scores = torch.where(r.ended, scores, torch.full_like(scores, cfg.missing_eos_penalty))
        r.scores = scores
        self.policy.train()
        self.value_model.train()

    # ------------------------------------------------------------------ advantages
    def advantages(
        self, r: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        rewards, kl = losses.kl_rewards(
            logprobs=r.logprobs,
            ref_logprobs=r.ref_logprobs,
            scores=r.scores,
            mask=r.response_mask,
            beta=self.kl_ctl.value,
            estimator=cfg.kl_estimator,
        )
        if cfg.whiten_rewards:
            rewards = losses.whiten(
                rewards, r.response_mask, shift_mean=False, moments=self._moments(rewards, r)
            )
        advantages, returns = losses.gae(
            rewards=rewards, values=r.values, mask=r.response_mask, gamma=cfg.gamma, lam=cfg.lam
        )
        if cfg.whiten_advantages:
            advantages = losses.whiten(
                advantages, r.response_mask, moments=self._moments(advantages, r)
            )
        return advantages, returns, rewards, kl

    def _token_share(self, mask: torch.Tensor) -> float | None:
        """A minibatch's response tokens over every process, divided by the number of
        processes: each process divides its loss sum by this, so the gradients DDP averages
        equal one process's token mean over the whole minibatch (processes' shares of a
        minibatch hold different numbers of tokens). None for one process."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return None
        # each process counts 1: the mean of their token counts = (global count) / processes
        return trainer.mean_over_processes(acc, {"n": float(mask.sum())}, 1)["n"]

    def _moments(self, values: torch.Tensor, r: Rollout) -> tuple[float, float] | None:
        """(mean, variance) over every process's response tokens, so that whitening under
        several processes equals one process whitening the whole batch; None for one process
        (the batch's own, computed by losses.whiten)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return None
        x = values[r.response_mask.bool()].double()
        m = trainer.mean_over_processes(
            acc, {"x": x.sum().item(), "xx": (x * x).sum().item()}, x.numel()
        )
        return m["x"], max(m["xx"] - m["x"] ** 2, 0.0)

    # ------------------------------------------------------------------ update
    def ptx_batch(self, rng: random.Random) -> tuple[torch.Tensor, ...] | None:
        if not self.ptx or self.cfg.ptx_coef == 0:
            return None
        chunk = [self.ptx[rng.randrange(len(self.ptx))] for _ in range(self.cfg.ptx_batch_size)]
        return tuple(t.to(self.accelerator.device) for t in collate(chunk, self.pad_id))

    def policy_objective(
        self,
        r: Rollout,
        idx: torch.Tensor,
        advantages: torch.Tensor,
        ptx: tuple | None,
        tokens: float | None = None,
    ):
        """Clipped PPO loss on minibatch `idx` plus ptx_coef * pretraining NLL (PPO-ptx);
        `tokens` as in losses.policy_loss."""
        cfg, dev = self.cfg, self.accelerator.device
        T = r.response_mask.shape[1]
        mask = r.response_mask[idx].to(dev)
        logprobs, entropy = response_logprobs(
            self.policy,
            r.input_ids[idx].to(dev),
            r.attention[idx].to(dev),
            r.prompt_width,
            T,
            cfg.temperature,
            with_entropy=True,
            trunk=r.rows(idx),
        )
        loss, stats = losses.policy_loss(
            logprobs=logprobs,
            old_logprobs=r.logprobs[idx].to(dev),
            advantages=advantages[idx].to(dev),
            mask=mask,
            clip=cfg.clip,
            is_weights=None if r.is_weights is None else r.is_weights[idx].to(dev),
            tokens=tokens,
        )
        stats["entropy"] = losses.masked_mean(entropy, mask).detach()
        if ptx is not None:
            ptx_logits, ptx_labels = masked_logits(self.policy, *ptx)
            loss, ptx_stats = losses.ptx_loss(
                policy_loss=loss,
                ptx_logits=ptx_logits,
                ptx_labels=ptx_labels,
                ptx_coef=cfg.ptx_coef,
            )
            stats.update(ptx_stats)
        return loss, stats

    def update(
        self, r: Rollout, advantages: torch.Tensor, returns: torch.Tensor, seed: int
    ) -> dict[str, float]:
        cfg, dev, acc = self.cfg, self.accelerator.device, self.accelerator
        rng = random.Random(seed)
        sums: dict[str, float] = {}
        n = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(
                len(r.texts), generator=torch.Generator().manual_seed(rng.randrange(2**31))
            )
            for start in range(0, len(order), self.minibatch):
                idx = order[start : start + self.minibatch]
                tokens = self._token_share(r.response_mask[idx])
                with acc.autocast():
                    loss, stats = self.policy_objective(
                        r, idx, advantages, self.ptx_batch(rng), tokens
                    )
                if self.joint is None:
                    self._optimizer_step(loss, self.policy, self.policy_opt)
                with acc.autocast():
                    values = response_values(
                        self.value_model,
                        r.input_ids[idx].to(dev),
                        r.attention[idx].to(dev),
                        r.prompt_width,
                        r.response_mask.shape[1],
                        r.rows(idx),
                    )
                    v_loss, v_stats = losses.value_loss(
                        values=values.float(),
                        old_values=r.values[idx].to(dev),
                        returns=returns[idx].to(dev),
                        mask=r.response_mask[idx].to(dev),
                        clip=cfg.value_clip,
                        tokens=tokens,
                    )
                if self.joint is None:
                    self._optimizer_step(v_loss, self.value_model, self.value_opt)
                else:  # one engine: DeepSpeed clips and steps inside accelerate's backward
                    acc.backward(loss + v_loss)
                for k, v in {**stats, **v_stats}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
        for schedule in self.schedulers:
            schedule.step()
        self.engine.sync(models.unwrap(self.policy))
        if self.ema is not None:
            self.ema.update(models.unwrap(self.policy))
        return {k: v / n for k, v in sums.items()}

    def _optimizer_step(self, loss: torch.Tensor, model: Any, optimizer: Any) -> None:
        self.accelerator.backward(loss)
        if self.cfg.grad_clip > 0:
            self.accelerator.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ one iteration
    def step(self, prompt_ids: list[list[int]]) -> tuple[dict[str, float], Rollout]:
        """sample -> logprobs, reference, values, scores -> rewards -> GAE -> PPO update -> stats."""
        start = time.perf_counter()
        acc = self.accelerator  # each process samples its own prompts with its own seed stream
        seed = self.cfg.seed * 1_000_003 + self.iteration * acc.num_processes + acc.process_index
        rollout = self.sample(prompt_ids, seed)
        sampled = time.perf_counter()
        self.evaluate(rollout)
        evaluated = time.perf_counter()
        if not torch.isfinite(rollout.scores).all():
            raise UserError(
                f"ppo: iteration {self.iteration + 1}: the reward model returned NaN or inf; stopped"
            )
        advantages, returns, rewards, kl = self.advantages(rollout)
        stats = self.update(rollout, advantages, returns, seed)
        updated = time.perf_counter()
        mask = rollout.response_mask
        kl_per_episode = kl.sum(1)  # (B,) nats per response, by cfg.kl_estimator
        # k3 as well: an unbiased estimate that is never negative, for the logs
        k3 = losses.kl_estimate(rollout.logprobs, rollout.ref_logprobs, "k3")
        k3 = torch.where(mask, k3, torch.zeros_like(k3)).sum(1)
        rollout.kl = torch.where(mask, rollout.logprobs - rollout.ref_logprobs, 0.0).sum(1)
        lengths = mask.sum(1).float()
        stats.update(
            score=rollout.scores.mean().item(),
            kl=kl_per_episode.mean().item(),
            kl_k3=k3.mean().item(),
            kl_coef=self.kl_ctl.value,
            reward=rewards.sum(1).mean().item(),
            explained_variance=losses.explained_variance(
                values=rollout.values, returns=returns, mask=mask
            ).item(),
            response_length=lengths.mean().item(),
            ended_frac=rollout.ended.float().mean().item(),
            logprob_gap=logprob_gap(rollout),
            lr=self.schedulers[0].get_last_lr()[0],
            iteration_s=time.perf_counter() - start,
            sample_s=sampled - start,  # where an iteration's time goes
            evaluate_s=evaluated - sampled,
            update_s=updated - evaluated,
        )
        stats["tokens_per_s"] = (
            lengths.sum().item() / stats["iteration_s"]
        )  # response tokens per second (of this process)
        stats = trainer.mean_over_processes(acc, stats, 1)  # one KL controller for all
        stats["tokens_per_s"] *= acc.num_processes
        self.kl_ctl.update(stats["kl"], len(prompt_ids) * acc.num_processes)
        self.iteration += 1
        return stats, rollout

    def state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "kl_ctl": self.kl_ctl.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.kl_ctl.load_state_dict(state["kl_ctl"])


# ---------------------------------------------------------------------- stage
def load_prompts(cfg: PPOConfig) -> list[Prompt]:
    if cfg.prompts == "default":
        from instructrl import data

        return data.load_prompts(cfg.split)
    return read_records(cfg.prompts, "prompt")


def load_ptx(cfg: PPOConfig, tokenizer: Any) -> list[Any]:
    """Pretraining chunks for PPO-ptx (empty for ptx=none)."""
    n = (
        cfg.ptx_batch_size
        * cfg.iterations
        * max(1, cfg.batch_size // cfg.minibatch_size)
        * cfg.ppo_epochs
    )
    if cfg.ptx == "none" or cfg.ptx_coef == 0:
        return []
    if cfg.ptx == "default":
        return ptx_examples(tokenizer, n=min(n, 4096), max_length=cfg.ptx_length, seed=cfg.seed)
    ids: list[int] = []
    with open(cfg.ptx, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                raise UserError(
                    f'{cfg.ptx}:{number}: text: expected a JSON object with a "text" string'
                ) from None
            ids.extend(
                [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            )
    chunks = [
        ids[i : i + cfg.ptx_length] for i in range(0, len(ids) - cfg.ptx_length + 1, cfg.ptx_length)
    ]
    if not chunks:
        raise UserError(f"{cfg.ptx}: fewer than ptx_length={cfg.ptx_length} tokens of text")
    return [Example(c, 0) for c in chunks]


def _no_dropout(model: Any) -> Any:
    """No dropout in RL (lm-human-preferences): old and new logprobs must come from one function."""
    return models.set_dropout(model, 0.0)


def run(cfg: PPOConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    accelerator = trainer.make_accelerator(cfg)
    torch.manual_seed(cfg.seed)
    tokenizer = models.load_tokenizer(cfg.policy)
    rm_tokenizer = models.load_tokenizer(cfg.reward)
    models.check_same_tokenizer(tokenizer, rm_tokenizer, names=("policy", "reward"))
    prompts = rollout.encode_within(
        tokenizer, load_prompts(cfg), max_prompt_tokens=cfg.max_prompt_tokens, where="ppo"
    )

    policy = trainer.prepare_model(
        _no_dropout(models.load_policy(cfg.policy, dtype=torch.float32)), cfg
    )
    ref = (
        None
        if cfg.lora.r > 0
        else _no_dropout(  # in the policy's dtype: the KL is exactly 0 before any update
            models.load_policy(cfg.policy, device=str(accelerator.device), dtype=torch.float32)
        ).requires_grad_(False)
    )
    rm = models.load_reward_model(cfg.reward, device=str(accelerator.device)).requires_grad_(False)
    value_model = _no_dropout(  # trains: fp32 whatever the RM was scored in
        models.load_reward_model(cfg.value or cfg.reward, dtype=torch.float32)
    ).train()
    # a value model from a shortened RM (rm.layers) with no more layers than freeze_layers
    # trains its final norm and head on those frozen layers
    value_layers = len(models.decoder_layers(value_model))
    value_model.backbone = trainer.prepare_model(
        value_model.backbone, replace(cfg, freeze_layers=min(cfg.freeze_layers, value_layers))
    )
    trunk_layers = _share_trunk(cfg, accelerator, policy, [ref, value_model], rm)
    ppo = PPOTrainer(
        cfg,
        accelerator=accelerator,
        policy=policy.train(),
        ref_policy=ref,
        value_model=value_model,
        tokenizer=tokenizer,
        score_fn=reward_model_scorer(
            trainer.prepare_frozen(accelerator, rm) if trainer.uses_deepspeed(accelerator) else rm
        ),
        ptx=load_ptx(cfg, tokenizer),
        trunk_layers=trunk_layers,
    )
    return train(ppo, prompts, out)


def _share_trunk(cfg: PPOConfig, accelerator: Any, policy: Any, others: list[Any], rm: Any) -> int:
    """How many bottom layers the policy, the reference and the value model share (0: none).

    With freeze_layers=N and all three trained from one SFT model (the value model from an RM
    whose lower N layers stayed frozen, as in the default head-only RM), those layers (or all
    of a value model shortened to fewer by rm.layers) hold equal
    weights: one copy is kept in memory and one forward through them per rollout batch feeds the
    three models' upper layers. Checked weight by weight, never assumed; off under LoRA (adapters
    sit in every layer) and under FSDP / DeepSpeed (sharded parameters).
    """
    from accelerate.utils import DistributedType

    # as many as all of them hold (a value model from a shortened RM may hold fewer)
    n = min([cfg.freeze_layers] + [len(models.decoder_layers(m)) for m in others if m is not None])
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if not cfg.share_trunk or n == 0 or cfg.lora.r > 0 or sharded or None in others:
        return 0
    policy.to(accelerator.device)
    for model in others:
        model.to(accelerator.device)
    if not all(models.share_trunk(policy, model, n) for model in others):
        log.info(
            "ppo: the value model's lower %d layers differ from the policy's: no shared trunk", n
        )
        return 0
    models.share_trunk(policy, rm, n)  # memory only: the RM reads other rows (scored_sequence)
    log.info("ppo: policy, reference and value model share their frozen bottom %d layers", n)
    return n


def train(ppo: PPOTrainer, prompts: list[tuple[Prompt, list[int]]], out: Path) -> Path:
    """The iteration loop: batches of prompts, checkpoints, metrics, samples, the final policy."""
    cfg, acc = ppo.cfg, ppo.accelerator
    checkpoints = rundir.Checkpointer(out, cfg.keep_last)
    latest = checkpoints.latest() if cfg.resume else None
    if latest is not None:
        ppo.load(checkpoints.load(acc, latest))
        log.info("resumed from %s (iteration %d of %d)", latest, ppo.iteration, cfg.iterations)
    main = acc.is_main_process
    metrics = rundir.MetricsLog(
        out / "metrics.jsonl",
        truncate_after_step=ppo.iteration if latest else None,
        enabled=main,
        trackers=rundir.open_trackers(cfg, main, "ppo"),
    )
    # every episode's response, RM score and KL: the eval's over-optimisation diagnostic
    # scores them with the held-out panel (gold) against the RM (proxy)
    rollouts = rundir.MetricsLog(
        out / "rollouts.jsonl", truncate_after_step=ppo.iteration if latest else None, enabled=main
    )
    samples_path = out / "samples.jsonl"
    samples = (
        [json.loads(line) for line in samples_path.read_text().splitlines()]
        if latest and samples_path.exists()
        else []
    )
    samples = [s for s in samples if s.get("iteration", 0) <= ppo.iteration]
    per_epoch = max(1, len(prompts) // cfg.batch_size)
    with progress_bar("ppo", total=cfg.iterations) as update:
        update(ppo.iteration)
        while ppo.iteration < cfg.iterations:
            epoch, in_epoch = divmod(ppo.iteration, per_epoch)
            order = trainer.epoch_order(len(prompts), seed=cfg.seed, epoch=epoch)
            batch = [  # this process's share of the iteration's prompts (disjoint across ranks)
                prompts[i]
                for i in order[in_epoch * cfg.batch_size : (in_epoch + 1) * cfg.batch_size]
            ][acc.process_index :: acc.num_processes]
            stats, rollout = ppo.step([ids for _, ids in batch])
            row = {"step": ppo.iteration, **{f"ppo/{k}": v for k, v in stats.items()}}
            if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
                raise UserError(
                    f"ppo: iteration {ppo.iteration}: non-finite statistics {row}; stopped, the last good "
                    f"checkpoint is {checkpoints.latest()}"
                )
            metrics.write(row)
            episodes = _episodes(acc, batch, rollout, ppo.iteration)
            for e in episodes:
                rollouts.write({k: v for k, v in e.items() if k != "prompt"})
            if cfg.sample_every and (ppo.iteration % cfg.sample_every == 0 or ppo.iteration == 1):
                samples += [_sample(e, out, cfg.seed) for e in episodes[:3]]
                if main:
                    write_records(samples_path, samples)
            update(1, score=stats["score"], kl=stats["kl"], tokens_per_s=stats["tokens_per_s"])
            if (
                cfg.checkpoint_every
                and ppo.iteration % cfg.checkpoint_every == 0
                and ppo.iteration < cfg.iterations
            ):
                checkpoints.save(acc, {"step": ppo.iteration, **ppo.state()})
    metrics.close()
    return finish(ppo, out)


def _episodes(
    acc: Any, batch: list[tuple[Prompt, list[int]]], r: Rollout, step: int
) -> list[dict[str, Any]]:
    """Every process's episodes of this iteration (gathered: rollouts.jsonl holds them all)."""
    mine = [
        {
            "step": step,
            "prompt_id": p.id,
            "prompt": p.prompt,
            "response": text,
            "finish_reason": reason,
            "score": score,
            "kl": kl,
        }
        for (p, _), text, reason, score, kl in zip(
            batch, r.texts, r.finish_reasons, r.scores.tolist(), r.kl.tolist(), strict=True
        )
    ]
    if acc.num_processes == 1:
        return mine
    from accelerate.utils import gather_object

    return gather_object(mine)


def _sample(episode: dict[str, Any], out: Path, seed: int) -> dict[str, Any]:
    """A samples.jsonl row: a Sample record plus the iteration and the RM score."""
    sample = Sample(
        prompt_id=episode["prompt_id"],
        prompt=episode["prompt"],
        response=episode["response"],
        model=str(out),
        finish_reason=episode["finish_reason"],
        seed=seed,
    )
    return {**sample.to_dict(), "iteration": episode["step"], "score": round(episode["score"], 4)}


def finish(ppo: PPOTrainer, out: Path) -> Path:
    cfg, acc = ppo.cfg, ppo.accelerator
    policy = acc.unwrap_model(ppo.policy)
    if ppo.ema is not None:
        ppo.ema.copy_to(policy)
    parts: dict[str, dict[str, Any]] = {"policy": {}, "value": {}}
    if ppo.joint is not None:  # DeepSpeed: both models' weights from their one engine
        # a collective under ZeRO-3, whose gathered weights only the main process receives
        for key, tensor in (acc.get_state_dict(ppo.joint) or {}).items():
            part, _, name = key.partition(".")
            parts[part][name] = tensor
    source = rundir.save_hf_model(
        acc,
        ppo.policy,
        ppo.tokenizer,
        out / ".final",
        merge=cfg.lora.merge,
        state_dict=parts["policy"] if ppo.joint is not None else None,
    )
    value = acc.unwrap_model(ppo.value_model)
    merged = hasattr(value.backbone, "merge_and_unload")  # reward-model form: always merged
    if ppo.joint is not None:
        full = parts["value"]
    else:
        full = None if merged else acc.get_state_dict(ppo.value_model)  # a collective if sharded
    if acc.is_main_process:
        if merged:
            value.backbone = value.backbone.merge_and_unload()
        models.save_reward_model(
            value,
            ppo.tokenizer,
            source / "value",
            bias=float(value.bias),
            extra={"type": "value"},
            state_dict=full,
        )
        rundir.install(
            source,
            out,
            "selected.json",
            json.dumps({"selected_by": "last", "iterations": ppo.iteration}) + "\n",
        )
        plot_curves(
            out / "metrics.jsonl",
            ["ppo/score", "ppo/kl", "ppo/ptx_loss", "ppo/entropy"],
            out / "curves.png",
            "PPO",
        )
    acc.wait_for_everyone()  # the policy is in place before any process moves on
    log.info("PPO policy in %s after %d iterations", out, ppo.iteration)
    return out
