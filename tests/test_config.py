import pytest

from xinstruct.config import ConfigError, RunConfig, load_config
from xinstruct.languages import LANGUAGES, PAPER_LANGUAGES, answer_suffix, get_language, script_share


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("corpus:\n  min_char: 100\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "corpus.min_char: unknown key (did you mean 'min_chars'?)" in str(e.value)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generate:\n  n_per_doc: many\n")
    with pytest.raises(ConfigError, match="generate.n_per_doc"):
        load_config(path)


def test_example_config_is_valid():
    from pathlib import Path
    cfg = load_config(Path(__file__).parents[1] / "configs" / "example.yaml")
    assert isinstance(cfg, RunConfig) and cfg.generate.temperature == 0.7 and cfg.generate.top_p == 0.9


def test_language_table():
    assert set(PAPER_LANGUAGES) <= set(LANGUAGES)
    assert answer_suffix("sw") == "Answer in Swahili."
    assert get_language("id").same_as == ("ms",)
    with pytest.raises(KeyError, match="unknown language"):
        get_language("xx")
    assert script_share("สวัสดีครับ 123", "Thai") == 1.0
    assert script_share("hello", "Devanagari") == 0.0


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def test_model_sections_are_one_class_per_backend(tmp_path):
    """A key of another backend is an error naming the key and the backend (issue 12: llamacpp + base_url)."""
    msg = _error(tmp_path, "generator: {backend: llamacpp, base_url: 'http://x/v1'}\n")
    assert len(msg.splitlines()) == 1 and msg.endswith(
        "generator.base_url: unknown key for backend llamacpp (base_url is a setting of backend openai)")
    msg = _error(tmp_path, "evaluate:\n  systems: [{name: a, model: {backend: transformers, devic: cpu}}]\n")
    assert "evaluate.systems.0.model.devic: unknown key for backend transformers (did you mean 'device'?)" in msg
    assert "did you mean 'llamacpp'" in _error(tmp_path, "generator: {backend: llamcpp}\n")
    msg = _error(tmp_path, "generator: {n_ctx: 0, n_parallel: 0}\nrefine: {evaluator: {model: "
                           "{backend: openai, max_concurrency: 0, read_timeout_s: -1}}}\n")
    for key in ("generator.n_ctx", "generator.n_parallel", "refine.evaluator.model.max_concurrency",
                "refine.evaluator.model.read_timeout_s"):
        assert key in msg
    assert "give base_url or base_urls" in _error(tmp_path, "generator: {backend: openai, base_url: a, "
                                                            "base_urls: [b]}\n")
    assert "lora needs `managed:`" in _error(tmp_path, "generator: {backend: openai, lora: a.gguf}\n")
    assert "managed vllm server needs `model`" in _error(tmp_path, "generator: {backend: openai, "
                                                                   "managed: {kind: vllm}}\n")
    cfg = load_config(None, {"generator": {"backend": "openai", "base_urls": ["http://a/v1/", "http://b/v1"]},
                             "evaluate": {"judge": {"backend": "tests_plugin:Judge", "options": {"k": 1}}}})
    assert type(cfg.generator).__name__ == "OpenAIConfig" and cfg.generator.endpoints == ["http://a/v1",
                                                                                          "http://b/v1"]
    assert cfg.evaluate.judge.options == {"k": 1} and type(cfg.refine.evaluator.model).__name__ == "LlamaCppConfig"


def test_model_config_and_validated_copy_check_what_code_builds():
    from xinstruct.config import model_config, validated_copy, with_adapter

    llama = model_config(n_ctx=2048)
    assert llama.backend == "llamacpp" and llama.n_ctx == 2048
    with pytest.raises(ConfigError, match="base_url: unknown key for backend llamacpp"):
        model_config(backend="llamacpp", base_url="http://x/v1")
    assert validated_copy(llama, lora="a.gguf").lora == "a.gguf"
    with pytest.raises(ConfigError, match="n_ctx: Input should be greater than 0"):
        validated_copy(llama, n_ctx=-1)
    cfg = load_config(None, {})
    with pytest.raises(ConfigError, match="template"):  # a CLI override the old model_copy(update=) let through
        validated_copy(cfg.tune, template="chatml")
    # an adapter where the backend loads one, in the form it loads; a clear ValueError where it cannot
    assert with_adapter(llama, "g.gguf", "peft", "x").lora == "g.gguf"
    assert with_adapter(model_config(backend="transformers"), "g.gguf", "peft", "x").lora == "peft"
    managed = model_config(backend="openai", managed={"kind": "vllm"}, model="Qwen/Qwen2.5-7B")
    assert with_adapter(managed, "g.gguf", "peft", "x").lora == "peft"
    with pytest.raises(ValueError, match="the retrained generator is a LoRA adapter, which the openai backend"):
        with_adapter(model_config(backend="openai"), "g.gguf", "peft", "the retrained generator")


def test_yaml_examples_in_the_docs_are_valid_configs():
    """Every ```yaml block of docs/BACKENDS.md and the README validates: the docs stay true to the schema."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).parents[1]
    blocks = [b for doc in ("docs/BACKENDS.md", "README.md")
              for b in re.findall(r"```yaml\n(.*?)```", (root / doc).read_text(), re.DOTALL)]
    assert len(blocks) >= 5
    for block in blocks:
        load_config(None, yaml.safe_load(block))


def test_a_trained_adapter_on_a_backend_that_cannot_load_one_is_a_clear_error(tmp_path):
    """refine.evaluator.kind: trained with an external openai server: a ValueError naming the problem (was an
    adapter silently ignored), raised before any training."""
    from xinstruct.refine.loop import evaluator_backend

    cfg = load_config(None, {"output_dir": str(tmp_path),
                             "refine": {"evaluator": {"model": {"backend": "openai", "model": "m"}}}})
    with pytest.raises(ValueError, match="the evaluator trained in this refinement round is a LoRA adapter, which the openai backend"):
        evaluator_backend(cfg, tmp_path / "evaluator")
    managed = load_config(None, {"refine": {"evaluator": {"model": {"backend": "openai",
                                                                     "managed": {"kind": "llamacpp"}}}}})
    assert evaluator_backend(managed, tmp_path).lora == str(tmp_path / "evaluator-lora.gguf")
