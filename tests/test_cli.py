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
