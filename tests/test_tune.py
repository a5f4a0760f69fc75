"""Tuning on the exported dataset: the paper's prompt, data loading, resume, and the GGUF export served by
llama.cpp; resolving tuned folders into systems."""

import json
import shutil

import pytest

from xinstruct.answer.systems import resolve_system
from xinstruct.config import SystemConfig, TrainConfig, TuneConfig, model_config
from xinstruct.tune.data import load_tuning_pairs, tuning_examples, with_suffix

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction} Answer in {language}.\n\n### Response:")


def test_examples_follow_the_paper_prompt():
    [ex] = tuning_examples([{"lang": "sw", "instruction": "Describe the rains. Answer in Swahili.",
                             "output": "Mvua imenyesha."}], "alpaca")
    assert ex["prompt"] == ALPACA.format(instruction="Describe the rains.", language="Swahili")
    assert ex["completion"] == "\nMvua imenyesha."
    [chat] = tuning_examples([{"lang": "th", "instruction": "Describe the rains. Answer in Thai.",
                               "output": "ฝนตก"}], "assistant")
    assert "answer in Thai" in chat["prompt"] and chat["prompt"].endswith(
        "USER: Describe the rains. Answer in Thai.\nASSISTANT:")


def test_suffix_added_once():
    assert with_suffix("Describe the rains.", "hi") == "Describe the rains. Answer in Hindi."
    assert with_suffix("Describe the rains. Answer in Hindi.", "hi") == "Describe the rains. Answer in Hindi."


def test_load_pairs_from_dataset_and_seed_files(tmp_path):
    rows = [{"id": "1", "lang": "sw", "instruction": "Explain farming. Answer in Swahili.", "output": "Kilimo ni..."},
            {"id": "2", "lang": "th", "instruction": "Describe Bangkok.", "response": "กรุงเทพ..."},  # seed layout
            {"id": "3", "lang": "sw", "instruction": "", "output": "x"},
            {"id": "4", "lang": "xx", "instruction": "Hi.", "output": "y"}]
    path = tmp_path / "dataset" / "jsonl" / "all.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "{broken\n")
    rejects = []
    pairs = load_tuning_pairs(str(tmp_path), rejects=rejects)  # a run folder resolves to its dataset
    assert pairs["sw"][0]["instruction"] == "Explain farming. Answer in Swahili."
    assert pairs["th"][0]["instruction"] == "Describe Bangkok. Answer in Thai."
    assert sorted(r["reason"] for r in rejects) == ["read:malformed_json", "seed:missing_instruction",
                                                    "seed:unknown_lang"]
    assert list(load_tuning_pairs(str(path), languages=["th"])) == ["th"]
    with pytest.raises(FileNotFoundError, match="no exported dataset"):
        load_tuning_pairs(str(tmp_path / "dataset" / "jsonl"))


def _descriptor(folder, base=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuned.json").write_text(json.dumps({
        "name": "all", "languages": ["sw", "th"], "template": "alpaca", "base": base,
        "adapter_dir": str(folder / "adapter"), "gguf_lora": str(folder / "model-lora.gguf")}))


def test_tuned_folders_resolve_per_backend(tmp_path):
    _descriptor(tmp_path / "all")
    llama = resolve_system(SystemConfig(name="t", tuned=str(tmp_path)), "sw")
    assert llama.model.model is None and llama.model.lora.endswith("all/model-lora.gguf")  # bundled base
    hf = resolve_system(SystemConfig(name="t", model=model_config(backend="transformers"), tuned=str(tmp_path)), "sw")
    assert hf.model.lora.endswith("all/adapter")
    _descriptor(tmp_path / "qwen", base="Qwen/Qwen2.5-0.5B")
    with pytest.raises(ValueError, match="not a GGUF"):
        resolve_system(SystemConfig(name="t", tuned=str(tmp_path / "qwen")), "sw")
    given = resolve_system(SystemConfig(name="t", model=model_config(model="/m/qwen.gguf"), tuned=str(tmp_path / "qwen")))
    assert given.model.model == "/m/qwen.gguf"
    with pytest.raises(FileNotFoundError, match="no tuned model"):
        resolve_system(SystemConfig(name="t", tuned=str(tmp_path / "nothing")), "sw")


@pytest.mark.slow
def test_tune_resume_and_serve_the_gguf_export(tmp_path, llama):
    """Tune for 2 steps, check the GGUF adapter loads in llama.cpp and generates; a run killed after its last
    checkpoint resumes from it; a finished run on the same data is reused without training."""
    from xinstruct.io.files import read_jsonl
    from xinstruct.models.base import SamplingParams
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.seed import bundled_path
    from xinstruct.tune.stage import run_tune

    seeds = tmp_path / "seeds.jsonl"
    shutil.copy(bundled_path("demo/sw/seed.jsonl"), seeds)
    cfg = TuneConfig(limit=8, train=TrainConfig(max_steps=2, batch_size=4, max_length=256, learning_rate=1e-3,
                                                save_steps=1))
    out = tmp_path / "tune"
    [d] = run_tune(cfg, str(seeds), out, progress=False, log=lambda *_: None).values()
    assert d["train"]["steps"] == 2 and d["template"] == "alpaca" and (out / "all" / "Modelfile").exists()
    assert "ADAPTER " in (out / "all" / "Modelfile").read_text()

    pair = next(iter(read_jsonl(seeds)))
    resolved = resolve_system(SystemConfig(name="tuned", model=model_config(n_ctx=2048, n_parallel=2),
                                           tuned=str(out)), "sw")
    prompt = resolved.prompt(pair["instruction"], "sw")
    with LlamaCppBackend(resolved.model) as tuned:
        assert "+lora:" in tuned.model_id
        [result] = tuned.generate([prompt], SamplingParams(temperature=0.0, max_tokens=16))
        assert result.error is None and result.completions[0].n_tokens > 0
        tuned_ll = tuned.loglikelihood([(prompt, "\n" + pair["output"])])[0]
    assert tuned_ll > llama.loglikelihood([(prompt, "\n" + pair["output"])])[0], "the adapter did nothing"

    # killed after the last checkpoint, before the adapter was saved: the rerun resumes, not restarts
    shutil.rmtree(out / "all" / "adapter")
    (out / "all" / "train_summary.json").unlink()
    [resumed] = run_tune(cfg, str(seeds), out, progress=False, log=lambda *_: None).values()
    assert resumed["train"]["resumed_from"].endswith("checkpoint-2") and resumed["train"]["steps"] == 2
    [reused] = run_tune(cfg, str(seeds), out, progress=False, log=lambda *_: None).values()
    assert reused["train"].get("reused") is True


def test_tune_overrides_change_only_what_the_command_line_gives():
    from xinstruct.config import ConfigError
    from xinstruct.tune.stage import tune_overrides

    cfg = TuneConfig()
    assert tune_overrides(cfg).model_dump() == cfg.model_dump()
    new = tune_overrides(cfg, languages=["sw"], per_language=True, base="base.gguf", max_steps=5)
    assert new.languages == ["sw"] and new.per_language and new.train.max_steps == 5
    assert new.train.base.model == "base.gguf" and new.train.epochs == cfg.train.epochs == 3.0
    with pytest.raises(ConfigError):
        tune_overrides(cfg, epochs=0)
