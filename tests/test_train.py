"""Generator training end to end: TRL + LoRA on the bundled Gemma, GGUF adapter export, served by llama.cpp."""

import pytest

from xinstruct.config import TrainConfig, model_config
from xinstruct.io.files import read_jsonl
from xinstruct.models.base import SamplingParams
from xinstruct.prompts import generation_prompt
from xinstruct.seed import bundled_path
from xinstruct.train.gguf_export import gguf_tensor_name
from xinstruct.train.sft import generator_examples


def test_examples_follow_the_paper_prompt():
    [ex] = generator_examples([{"instruction": "Describe the rains.", "output": "Mvua imenyesha."}])
    assert ex["prompt"].startswith("Below is a text that describes a candidate output. Write an English "
                                   "instruction that can take the given text as an appropriate answer.")
    assert ex["prompt"].endswith("### Text:\nMvua imenyesha.\n\n### English Instruction:")
    assert ex["completion"] == " Describe the rains."


def test_gguf_names():
    assert gguf_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") == \
        ("blk.3.attn_q.weight", "a")
    assert gguf_tensor_name("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight") == \
        ("blk.0.ffn_down.weight", "b")


@pytest.mark.slow
def test_train_export_and_serve_with_llamacpp(tmp_path, llama):
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.train.sft import train_generator

    pairs = list(read_jsonl(bundled_path("demo/sw/seed.jsonl")))[:8]
    summary = train_generator(pairs, TrainConfig(max_steps=2, batch_size=4, max_length=256, learning_rate=1e-3),
                              tmp_path, progress=False)
    assert summary["steps"] == 2 and (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    target = [(generation_prompt(pairs[0]["output"]), " " + pairs[0]["instruction"])]
    with LlamaCppBackend(model_config(lora=summary["gguf_lora"], n_ctx=2048, n_parallel=2)) as tuned:
        assert "+lora:" in tuned.model_id
        tuned_ll = tuned.loglikelihood(target)[0]
        [r] = tuned.generate([target[0][0]], SamplingParams(temperature=0.0, max_tokens=24))
        assert r.error is None
    base_ll = llama.loglikelihood(target)[0]
    assert tuned_ll > base_ll, "the adapter was not applied (or training did nothing)"


@pytest.mark.slow
def test_completion_only_loss_equals_the_models_own_loss():
    """The CPU-fast loss (LM head on completion positions only) is the model's own masked token-mean loss."""
    import contextlib
    import types

    import torch

    from xinstruct.models.transformers import load_causal_lm
    from xinstruct.train.sft import CompletionLossTrainer

    model, tok = load_causal_lm(None, "cpu", "float32")
    enc = tok(["Habari ya asubuhi, rafiki yangu.", "Mvua imenyesha sana leo mjini."], return_tensors="pt",
              padding=True)
    labels = enc["input_ids"].clone()
    labels[:, :4] = -100  # the "prompt"
    labels[enc["attention_mask"] == 0] = -100
    fake_trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(autocast=contextlib.nullcontext))
    with torch.no_grad():
        ours = CompletionLossTrainer.compute_loss(fake_trainer, model, {**enc, "labels": labels})
        theirs = model(**enc, labels=labels).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-4)


@pytest.mark.slow
def test_checkpoints_do_not_change_the_adapter(tmp_path):
    """train.save_steps only decides when checkpoints are written: 2 steps with none or one after each step give
    the same adapter, byte for byte."""
    from xinstruct.train.sft import train_generator

    pairs = sorted(read_jsonl(bundled_path("demo/sw/seed.jsonl")), key=lambda p: len(p["output"]))[:4]
    adapters = []
    for save_steps in (0, 1):
        cfg = TrainConfig(max_steps=2, batch_size=2, max_length=256, learning_rate=1e-3, save_steps=save_steps)
        train_generator(pairs, cfg, tmp_path / f"s{save_steps}", progress=False)
        adapters.append((tmp_path / f"s{save_steps}" / "adapter" / "adapter_model.safetensors").read_bytes())
    assert adapters[0] == adapters[1]
