"""Batched generation: chat template, left padding, sampling, EOS / length / stop-string ends.

Left padding keeps every prompt's last token at the same column so new tokens line up; HF
`generate` derives position ids from the attention mask, so padded rows see the same positions
as unpadded ones. Pad and EOS are the same token in SmolLM2, so the response of a row ends at its
*first* EOS, and masks come from lengths, never from `input_ids != pad_id`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from instructrl.errors import UserError
from instructrl.records import PromptText, prompt_as_text

log = logging.getLogger(__name__)


@dataclass
class Generation:
    text: str
    token_ids: list[int]  # response tokens, the EOS included when the model emitted one
    finish_reason: str  # "eos" | "length" | "stop"
    seed: int
    logprobs: list[float] | None = None  # (len(token_ids),) under the sampler, on request


def render_prompt(tokenizer, prompt: PromptText, *, chat_template: bool = True) -> str:
    """The exact text the model sees before its response (also used by SFT, so train = test)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt_as_text(prompt)


def encode_prompts(
    tokenizer, prompts: Sequence[PromptText], *, chat_template: bool = True
) -> list[list[int]]:
    return [
        tokenizer(
            render_prompt(tokenizer, p, chat_template=chat_template), add_special_tokens=False
        )["input_ids"]
        for p in prompts
    ]


def encode_response(
    tokenizer, prompt: PromptText, response: str, *, max_length: int
) -> tuple[list[int], int, bool] | None:
    """(prompt + response + EOS ids, prompt length, truncated) as the policy would produce them:
    the chat-templated prompt, then the response tokens and EOS. None when the prompt leaves
    fewer than 8 tokens for the response; an overflowing response is cut (and loses its EOS)."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    response_ids = [
        *tokenizer(response, add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]
    if len(prompt_ids) > max_length - 8:
        return None
    truncated = len(prompt_ids) + len(response_ids) > max_length
    return (prompt_ids + response_ids)[:max_length], len(prompt_ids), truncated


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) input ids padded on the left with pad_id, and the (B, P) bool mask of real tokens."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if s:
            input_ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = True
    return input_ids, mask


def cut_response(token_ids: Sequence[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Tokens up to and including the first EOS; whether an EOS was found."""
    for i, t in enumerate(token_ids):
        if t in eos_ids:
            return list(token_ids[: i + 1]), True
    return list(token_ids), False


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut text before the earliest stop string."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def eos_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: Sequence[str] = (),
    batch_size: int = 8,
    seed: int = 0,
    samples_per_prompt: int = 1,
    return_logprobs: bool = False,
    progress=None,
) -> list[Generation]:
    """Sample `samples_per_prompt` responses per prompt (consecutive in the output), in batches
    of `batch_size` rows; batch i is seeded seed + i. temperature 0 is greedy; top_k 0 and
    top_p 1 are off (passed explicitly: nothing is inherited from the model's
    generation_config). With return_logprobs, each Generation carries the sampler's own
    log-probabilities of its tokens (logits divided by the temperature, as when sampling)."""
    from transformers import GenerationConfig

    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    sampling = temperature > 0
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=top_k if sampling else None,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids),
        return_dict_in_generate=True,
        output_logits=return_logprobs,
    )
    rows = [ids for ids in prompt_ids for _ in range(samples_per_prompt)]
    device = next(model.parameters()).device
    outputs: list[Generation] = []
    for b, start in enumerate(range(0, len(rows), batch_size)):
        batch = rows[start : start + batch_size]
        input_ids, mask = left_pad(batch, pad_id)
        batch_seed = seed + b
        torch.manual_seed(batch_seed)
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.long().to(device),
            generation_config=gen_config,
        )
        new_tokens = out.sequences[:, input_ids.shape[1] :].cpu()  # (B, T' <= max_new_tokens)
        logprobs = (
            _sampled_logprobs(out.logits, new_tokens, temperature if sampling else 1.0)
            if return_logprobs
            else None
        )
        n_tokens = 0
        for i, row in enumerate(new_tokens.tolist()):
            token_ids, ended = cut_response(row, eos_ids)
            n_tokens += len(token_ids)
            text = tokenizer.decode(token_ids, skip_special_tokens=True)
            text, stopped = apply_stop(text, stop)
            reason = "stop" if stopped else ("eos" if ended else "length")
            outputs.append(
                Generation(
                    text=text,
                    token_ids=token_ids,
                    finish_reason=reason,
                    seed=batch_seed,
                    logprobs=None if logprobs is None else logprobs[i, : len(token_ids)].tolist(),
                )
            )
        if progress is not None:
            progress(len(batch), n_tokens, time.perf_counter() - t0)
    return outputs


def _sampled_logprobs(
    step_logits: Sequence[torch.Tensor], tokens: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(B, T') log-probabilities of the sampled tokens from the sampler's per-step (B, V)
    logits, divided by the temperature as when sampling."""
    from instructrl.losses import token_logprobs

    logits = torch.stack(tuple(step_logits), dim=1).float().cpu() / temperature  # (B, T', V)
    return token_logprobs(logits, tokens[:, : logits.shape[1]])


def encode_within(
    tokenizer,
    prompts: Sequence[Any],
    *,
    max_prompt_tokens: int,
    where: str,
    chat_template: bool = True,
) -> list[tuple[Any, list[int]]]:
    """(prompt record, chat-templated ids) for the prompts of at most max_prompt_tokens tokens;
    the others are dropped with a count in the log (an error when none is left)."""
    encoded = encode_prompts(tokenizer, [p.prompt for p in prompts], chat_template=chat_template)
    kept = [
        (p, ids) for p, ids in zip(prompts, encoded, strict=True) if len(ids) <= max_prompt_tokens
    ]
    if len(kept) < len(prompts):
        log.warning(
            "dropped %d of %d prompts longer than max_prompt_tokens=%d",
            len(prompts) - len(kept),
            len(prompts),
            max_prompt_tokens,
        )
    if not kept:
        raise UserError(
            f"{where}: every prompt is longer than max_prompt_tokens={max_prompt_tokens}"
        )
    return kept


def sample_records(
    model,
    tokenizer,
    prompts: Sequence[Any],
    prompt_ids: Sequence[Sequence[int]],
    sampling: Any,
    *,
    model_name: str,
    seed: int,
    samples_per_prompt: int = 1,
    description: str = "generate",
) -> list[Any]:
    """`sample` records for (prompt record, prompt ids) pairs under a SamplingConfig, with a
    progress bar showing tokens/s; batch i is seeded seed + i."""
    from instructrl.progress import progress_bar
    from instructrl.records import Sample

    totals = {"tokens": 0, "seconds": 0.0}
    with progress_bar(description, total=len(prompt_ids) * samples_per_prompt) as update:

        def on_batch(n_prompts: int, n_tokens: int, seconds: float) -> None:
            totals["tokens"] += n_tokens
            totals["seconds"] += seconds
            update(n_prompts, tokens_per_s=totals["tokens"] / max(totals["seconds"], 1e-9))

        outputs = generate(
            model,
            tokenizer,
            prompt_ids,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            stop=sampling.stop,
            batch_size=sampling.batch_size,
            seed=seed,
            samples_per_prompt=samples_per_prompt,
            progress=on_batch,
        )
    log.info(
        "%s: %d tokens in %.1f s (%.1f tokens/s)",
        description,
        totals["tokens"],
        totals["seconds"],
        totals["tokens"] / max(totals["seconds"], 1e-9),
    )
    return [
        Sample(
            prompt_id=p.id,
            prompt=p.prompt,
            response=g.text,
            model=model_name,
            finish_reason=g.finish_reason,
            seed=g.seed,
        )
        for p, g in zip(
            [p for p in prompts for _ in range(samples_per_prompt)], outputs, strict=True
        )
    ]
