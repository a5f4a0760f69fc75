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
