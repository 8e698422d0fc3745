"""SFT on a tiny random model: the loss by hand, padding invariance, resume, reload."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from instructrl import batches, models, rundir, trainer
from instructrl.config import SFTConfig, load_config
from instructrl.errors import ConfigError, ModelNotFoundError, RecordError
from instructrl.records import Demonstration
from instructrl.stages import sft

DEMOS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    (
        "Write a short poem about the sea.",
        "Oh sea, so vast and blue,\nwith waves and salt at hand.",
    ),
    ("List three colours.", "Red, green and blue."),
    (
        "Explain why the sky is blue in simple words.",
        "Air scatters blue light more than red light, so the sky looks blue.",
    ),
    ("Summarize: The quick brown fox jumps over the lazy dog.", "A fox jumps over a dog."),
    ("Say hi.", "Hi!"),
]


@pytest.fixture()
def demos_file(tmp_path):
    path = tmp_path / "demos.jsonl"
    rows = [
        {"prompt_id": f"d{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(DEMOS * 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loss_equals_hand_computed_nll(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    model = models.load_policy(str(tiny_model_dir))
    demos = [Demonstration(prompt=p, response=r) for p, r in DEMOS[:3]]
    examples, _ = sft.encode_demonstrations(tokenizer, demos, max_length=256, where="t")
    ids, attn, mask = batches.collate(examples, tokenizer.pad_token_id)
    loss, stats = batches.nll_loss(model, ids, attn, mask)
    # independent path: full logits of each example alone, sum -log p over response tokens by hand
    total, count = 0.0, 0
    for e in examples:
        with torch.no_grad():
            logits = model(torch.tensor([e.input_ids])).logits[0]  # (L, V)
        logp = torch.log_softmax(logits, -1)
        for t in range(e.n_prompt, len(e.input_ids)):
            total -= logp[t - 1, e.input_ids[t]].item()
            count += 1
    assert int(stats["tokens"]) == count
    assert loss.item() == pytest.approx(total / count, abs=1e-5)
    # the response ends with EOS and the prompt is the chat template's generation prompt
    assert examples[0].input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(examples[0].input_ids[: examples[0].n_prompt]).endswith(
        "<|im_start|>assistant\n"
    )


def test_padding_invariance(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    model = models.load_policy(str(tiny_model_dir))
    examples, _ = sft.encode_demonstrations(
        tokenizer,
        [Demonstration(prompt=p, response=r) for p, r in (DEMOS[5], DEMOS[3])],
        max_length=256,
        where="t",
    )
    short, long = examples
    assert len(long.input_ids) > len(short.input_ids) + 5
    alone = batches.nll_loss(model, *batches.collate([short], tokenizer.pad_token_id))[0]
    ids, attn, mask = batches.collate([short, long], tokenizer.pad_token_id)
    mask[1] = False  # score only the short example, now padded beside a longer one
    padded = batches.nll_loss(model, ids, attn, mask)[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def _cfg(tiny_model_dir, demos_file, out, **over):
    args = [
        f"model={tiny_model_dir}",
        f"data={demos_file}",
        f"out={out}",
        "batch_size=4",
        "lr=1e-3",
        "val_fraction=0",
    ]
    return load_config(SFTConfig, args + [f"{k}={v}" for k, v in over.items()])


def test_resume_after_kill_matches_straight_run(tiny_model_dir, demos_file, tmp_path, monkeypatch):
    common = {"max_steps": 6, "checkpoint_every": 2, "dropout": 0.1}
    straight = sft.run(_cfg(tiny_model_dir, demos_file, tmp_path / "a", **common))

    calls = {"n": 0}
    original = trainer.Throughput.add

    def killed_at_step_5(self, tokens):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return original(self, tokens)

    monkeypatch.setattr(trainer.Throughput, "add", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        sft.run(_cfg(tiny_model_dir, demos_file, tmp_path / "b", **common))
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-4"]
    monkeypatch.setattr(trainer.Throughput, "add", original)
    resumed = sft.run(_cfg(tiny_model_dir, demos_file, tmp_path / "b", resume="true", **common))

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-6, f"resumed vs straight: max abs weight diff {diff:.3g}"
    first = load_file(tiny_model_dir / "model.safetensors")
    assert max((a[k] - first[k]).abs().max().item() for k in a) > 1e-4  # it did train
    steps = [r["step"] for r in rundir.read_metrics(resumed / "metrics.jsonl") if "sft/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # rows past the checkpoint were replaced, not duplicated


@pytest.mark.parametrize("lora_r", [0, 4])
def test_saved_model_reloads_with_plain_transformers(
    tiny_model_dir, demos_file, tmp_path, monkeypatch, lora_r
):
    captured = {}
    fixed = torch.tensor([[1, 5, 9, 20, 33, 2]])
    original = rundir.save_hf_model

    def capture(accelerator, model, tokenizer, out, **kw):
        inner = accelerator.unwrap_model(model).eval()
        with torch.no_grad():
            captured["logits"] = inner(fixed).logits.clone()
        return original(accelerator, model, tokenizer, out, **kw)

    monkeypatch.setattr(rundir, "save_hf_model", capture)
    out = sft.run(
        _cfg(tiny_model_dir, demos_file, tmp_path / "m", max_steps=2, **{"lora.r": lora_r})
    )
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, pipeline\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
        f"torch.save(m(torch.tensor({fixed.tolist()})).logits.detach(), sys.argv[2])\n"
        "pipe = pipeline('text-generation', model=sys.argv[1])\n"
        "print(pipe('Say hi.', max_new_tokens=3)[0]['generated_text'])\n"
        "assert 'instructrl' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "l.pt")], check=True)
    reloaded = torch.load(tmp_path / "l.pt")
    torch.testing.assert_close(reloaded, captured["logits"], atol=1e-5, rtol=0)
    assert not any(
        k.startswith("base_model") or "lora" in k for k in load_file(out / "model.safetensors")
    )
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the hub's own reader
    assert card.data.library_name == "transformers" and "instructrl" in card.data.tags
    assert f"- data: `{demos_file}`" in card.text and "| sft/loss |" in card.text


def test_bad_input(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RecordError, match="found none"):
        sft.run(_cfg(tiny_model_dir, empty, tmp_path / "o"))
    no_response = tmp_path / "bad.jsonl"
    no_response.write_text('{"prompt": "hi", "response": "ok"}\n{"prompt": "hi"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: response: missing required field"):
        sft.run(_cfg(tiny_model_dir, no_response, tmp_path / "o"))
    with pytest.raises(ModelNotFoundError):
        sft.run(_cfg(tmp_path / "no-model", no_response, tmp_path / "o"))
    with pytest.raises(ConfigError, match="data: expected a demonstrations JSONL"):
        load_config(SFTConfig, [])


def test_long_prompts_are_counted_not_silent(tiny_model_dir, tmp_path):
    path = tmp_path / "long.jsonl"
    rows = [
        {"prompt": "word " * 300, "response": "ok"},
        {"prompt": "Say hi.", "response": "Hi! " * 100},
        {"prompt": "Hi", "response": "Hello."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = sft.run(_cfg(tiny_model_dir, path, tmp_path / "o", max_steps=1, max_length=64))
    first = rundir.read_metrics(out / "metrics.jsonl")[0]
    assert (
        first["sft/dropped_long_prompt"],
        first["sft/truncated_response"],
        first["sft/examples"],
    ) == (1, 1, 2)


def test_checkpoint_selected_by_rm_score(tiny_model_dir, demos_file, tmp_path):
    import json as _json

    from instructrl.config import RMConfig
    from instructrl.stages import reward

    comps = tmp_path / "c.jsonl"
    comps.write_text(
        "".join(
            _json.dumps({"prompt": p, "responses": [r, "no"], "ranking": [0, 1]}) + "\n"
            for p, r in DEMOS
        )
    )
    rm = reward.run(
        load_config(
            RMConfig,
            [
                f"model={tiny_model_dir}",
                f"data={comps}",
                f"out={tmp_path / 'rm'}",
                "val_fraction=0",
            ],
        )
    )
    cfg = load_config(
        SFTConfig,
        [
            f"model={tiny_model_dir}",
            f"data={demos_file}",
            f"out={tmp_path / 's'}",
            f"reward={rm}",
            "val_fraction=0.34",
            "eval_every=1",
            "max_steps=3",
            "batch_size=4",
            "rm_eval_tokens=4",
        ],
    )
    out = sft.run(cfg)
    rows = [r for r in rundir.read_metrics(out / "metrics.jsonl") if "sft/val_rm_score" in r]
    assert len(rows) == 3
    best = max(rows, key=lambda r: r["sft/val_rm_score"])
    selected = _json.loads((out / "selected.json").read_text())
    assert selected["selected_by"] == "val_rm_score" and selected["step"] == best["step"]


def test_freeze_layers_stops_backward_below_the_top(tiny_model_dir):
    model = models.load_policy(str(tiny_model_dir)).train()
    trainer.freeze_lower(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("model.embed_tokens", "model.layers.0.")) for n in trainable)
    assert any(n.startswith("model.layers.1.") for n in trainable)
    seen = []
    hook = model.model.layers[0].register_full_backward_hook(lambda *a: seen.append(1))
    ids = torch.tensor([[1, 5, 9, 20]])
    model(ids).logits.sum().backward()
    hook.remove()
    assert seen == []  # backward never entered the frozen layer


def test_tensorboard_gets_the_same_scalars_as_metrics_jsonl(tiny_model_dir, demos_file, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = sft.run(
        _cfg(tiny_model_dir, demos_file, tmp_path / "tb", max_steps=3, report_to="[tensorboard]")
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (events,) = [p.parent for p in (out / "tracking" / "sft").glob("events.out.tfevents.*")]
    acc = EventAccumulator(str(events))
    acc.Reload()
    expected = {
        (k, r["step"]): v
        for r in rows
        for k, v in r.items()
        if k != "step" and isinstance(v, (int, float))
    }
    logged = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert logged.keys() == expected.keys() and len(logged) >= 3 * 3
    for key, value in expected.items():  # metrics.jsonl rounds to 6 decimals; float32 events
        assert logged[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    with pytest.raises(ConfigError, match="report_to: expected some of tensorboard"):
        _cfg(tiny_model_dir, demos_file, tmp_path / "x", report_to="[neptune]")
