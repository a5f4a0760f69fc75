import pytest
from typer.testing import CliRunner

from xinstruct.cli import app

runner = CliRunner()


def test_help_lists_the_stages():
    out = runner.invoke(app, ["--help"]).output
    for command in ("corpus", "seed", "train-generator", "generate", "run", "demo", "eval-generator"):
        assert command in out


def test_bad_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("exectuor: {}\n")
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "exectuor: unknown key (did you mean 'executor'?)" in result.output


def test_use_commands_are_listed_and_explain_missing_inputs(tmp_path):
    out = runner.invoke(app, ["--help"]).output
    for command in ("tune", "answer", "chat", "evaluate", "compare"):
        assert command in out
    (tmp_path / "config.json").write_text("{}")
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2 and "seed/pairs.jsonl is missing" in " ".join(result.output.split())
    result = runner.invoke(app, ["tune", str(tmp_path)])
    assert result.exit_code == 2 and "no exported dataset" in " ".join(result.output.split())
    result = runner.invoke(app, ["answer", "Hello?", "--tuned", str(tmp_path)])
    assert result.exit_code == 2 and "no tuned model" in " ".join(result.output.split())


def test_answer_with_the_bundled_model(llama):
    result = runner.invoke(app, ["answer", "Name a fruit.", "--lang", "sw", "--max-tokens", "8", "--temperature",
                                 "0", "--show-prompt"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Name a fruit. Answer in Swahili." in out and "### Response:" in out


BAD_CONFIGS = {
    "unknown key": ("corpus:\n  min_char: 100\n", "corpus.min_char: unknown key (did you mean 'min_chars'?)"),
    "wrong type": ("generate:\n  n_per_doc: many\n", "generate.n_per_doc: Input should be a valid integer"),
    "negative count": ("generate:\n  n_per_doc: -1\n", "generate.n_per_doc: Input should be greater than or equal to 0"),
    "bounds out of order": ("corpus:\n  min_chars: 900\n  max_chars: 500\n",
                            "corpus: min_chars (900) is above max_chars (500)"),
    "unknown language": ("languages: [sw, xx]\n", "languages: unknown language code(s) xx"),
    "llamacpp with base_url": ("generator: {backend: llamacpp, base_url: 'http://x/v1'}\n",
                               "generator.base_url: unknown key for backend llamacpp"),
    "missing input": ("corpus:\n  inputs: [{path: nowhere.jsonl, lang: sw}]\n", "nowhere.jsonl: no such file or folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_are_one_line_exit_2_and_no_run_folder(tmp_path, case):
    text, message = BAD_CONFIGS[case]
    path = tmp_path / "c.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\n{text}")
    result = runner.invoke(app, ["corpus", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_relative_paths_are_read_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "sw.jsonl").write_text('{"id": "1", "text": "Habari"}\n')
    (folder / "c.yaml").write_text("corpus:\n  inputs: [{path: data/sw.jsonl, lang: sw}]\n"
                                   "seed:\n  inputs: [{path: data/sw.jsonl, lang: sw}]\n")
    monkeypatch.chdir(tmp_path)  # somewhere else
    result = runner.invoke(app, ["check-config", str(folder / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert str(folder / "data" / "sw.jsonl") in result.output and "config ok" in result.output


def test_version():
    from importlib.metadata import version

    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0 and shown.output.strip() == f"xinstruct {version('xinstruct')}"


def test_check_config_summarises_and_warns_and_json_is_the_whole_config(tmp_path):
    import json

    (tmp_path / "sw.jsonl").write_text('{"id": "1", "text": "Habari"}\n')
    path = tmp_path / "c.yaml"
    path.write_text("languages: [sw]\ncorpus:\n  inputs: [{path: sw.jsonl, lang: sw}]\n"
                    "seed:\n  inputs: [{path: sw.jsonl, lang: sw}]\n"
                    "refine: {evaluator: {kind: judge}}\n")
    shown = runner.invoke(app, ["check-config", str(path)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "generator" in shown.output and "bundled generator adapter" in shown.output
    assert "judge on the bundled 270M model" in shown.output and "decontaminate.questions is empty" in shown.output
    assert len(shown.output.splitlines()) < 25
    whole = runner.invoke(app, ["check-config", str(path), "--json"])
    assert whole.exit_code == 0 and json.loads(whole.output.split("\nconfig ok")[0])["languages"] == ["sw"]


def test_the_example_config_is_valid_on_any_machine():
    """configs/example.yaml reads only files that ship with xinstruct: check-config passes without ../shared."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "configs" / "example.yaml"
    shown = runner.invoke(app, ["check-config", str(example)])
    assert shown.exit_code == 0, shown.output
    assert "shared" not in example.read_text()
