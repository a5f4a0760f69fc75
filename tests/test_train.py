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


@pytest.mark.slow
def test_bundled_generator_loads_on_llamacpp_and_transformers(llama):
    """The shipped adapter, GGUF on llama.cpp and PEFT on transformers: on both it makes the instructions of pairs
    it was trained on (the demo seeds) likelier than the bare model does, so it is loaded and applied."""
    from xinstruct.models.bundled import bundled_generator
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.models.transformers import TransformersBackend

    gguf, peft = bundled_generator()
    pairs = [p for lang in ("sw", "th", "hi") for p in list(read_jsonl(bundled_path(f"demo/{lang}/seed.jsonl")))[:2]]
    targets = [(generation_prompt(p["output"]), " " + p["instruction"]) for p in pairs]
    with LlamaCppBackend(model_config(lora=str(gguf), n_ctx=2048)) as tuned:
        assert "+lora:" in tuned.model_id
        assert sum(tuned.loglikelihood(targets)) > sum(llama.loglikelihood(targets)) + 5
    with TransformersBackend(model_config(backend="transformers", device="cpu")) as bare:
        bare_ll = sum(bare.loglikelihood(targets))
    with TransformersBackend(model_config(backend="transformers", device="cpu", lora=str(peft))) as tuned:
        assert sum(tuned.loglikelihood(targets)) > bare_ll + 5


def test_the_run_uses_the_bundled_generator_unless_told_to_train(tmp_path):
    """train.generator: bundled (default) → the generate stage loads the shipped adapter and no generator is
    trained; seed → the adapter this run trains; another base model → trained, whatever the setting."""
    from xinstruct.config import RunConfig
    from xinstruct.core.layout import RunLayout
    from xinstruct.models.bundled import bundled_generator
    from xinstruct.train.stage import generator_config, uses_bundled_generator

    cfg = RunConfig(output_dir=str(tmp_path), languages=["sw"])
    layout = RunLayout(cfg.out)
    assert uses_bundled_generator(cfg) and generator_config(cfg, layout).lora == str(bundled_generator()[0])
    assert generator_config(cfg, layout, trained_here=True).lora is None  # a round's own, not trained yet
    seed = RunConfig(output_dir=str(tmp_path), languages=["sw"], train={"generator": "seed"})
    assert not uses_bundled_generator(seed) and generator_config(seed, layout).lora is None
    other = RunConfig(output_dir=str(tmp_path), languages=["sw"], generator={"model": "/m.gguf"},
                      train={"base": {"model": "/m"}})
    assert not uses_bundled_generator(other)


def test_an_unsupported_gguf_architecture_is_named_before_training():
    from xinstruct.train.gguf_export import check_gguf_arch

    check_gguf_arch("gemma3_text")
    check_gguf_arch("qwen2")
    with pytest.raises(ValueError, match="export_gguf: false"):
        check_gguf_arch("llama")
