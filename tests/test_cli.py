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
