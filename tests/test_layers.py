"""No import cycles: every module imports on its own, and the contracts in pyproject.toml (layers, acyclic) hold."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

IMPORT_EACH = """
import importlib, pkgutil, sys
import xinstruct
names = sorted(m.name for m in pkgutil.walk_packages(xinstruct.__path__, "xinstruct.") if m.name != "xinstruct.__main__")
failures = []
for name in names:
    for loaded in [m for m in sys.modules if m == "xinstruct" or m.startswith("xinstruct.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as e:
        failures.append(f"{name}: {e}")
print(len(names))
print("\\n".join(failures), file=sys.stderr)
sys.exit(1 if failures else 0)
"""


def test_every_module_imports_alone():
    """A cycle can hide when modules happen to be imported in a lucky order: import each one first (in a
    separate interpreter, so this test's purging of modules cannot disturb the others)."""
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 60


def test_layers_contract():
    """pyproject.toml's import-linter contracts: the layers, and no import cycle inside any package (imports inside
    functions included). import-linter comes with the dev extras, which CI installs: missing, this fails."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "lint-imports not found beside this Python: pip install -e '.[dev]'"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([exe, "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True,
                            text=True, timeout=300, check=False)
    print(result.stdout + result.stderr)  # shown by `pytest -rA`, and with the failure
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# The names of a run folder's parts (core/layout.py): no other module joins them onto a path itself.
RUN_FOLDER_NAMES = {"corpus", "clean", "rejects", "filtered", "seed", "pairs.jsonl", "candidates", "cache", "refine",
                    "final", "kept", "dropped", "labels", "diversify", "embeddings", "dataset", "report", "stages",
                    "summaries", "manifest.json", "config.json", "summary.json", "README.md", "jsonl", "parquet", "hf",
                    "tune", "evaluate", "compare", "tune-seed", "tune-xinstruct", "tuned.json", "Modelfile", "answers",
                    "judgements", "grades", "leaderboard.csv", "fastchat", "question.jsonl", "model_answer",
                    "model_judgment"}
RUN_FILE_SUFFIXES = (".candidates.jsonl", ".rejects.jsonl", ".pool.jsonl", ".selected.jsonl", ".dropped.jsonl",
                     ".labels.jsonl", ".errors.jsonl", ".sqlite")
# models/transformers.py reads a Hugging Face model folder's config.json
NOT_CHECKED = ("core/layout.py", "models/transformers.py")


def _path_literals(tree: ast.AST):
    """(line, text) of each string literal on the right of a `/` (f-strings: their literal parts)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and isinstance(right.value, str):
                yield node.lineno, right.value
            elif isinstance(right, ast.JoinedStr):
                yield node.lineno, "".join(v.value for v in right.values if isinstance(v, ast.Constant))


def test_only_the_layout_names_run_folder_paths():
    """Stages ask RunLayout (and the tune, evaluate and compare layouts beside it) for a run folder's paths
    (core/layout.py); a name joined onto a path anywhere else would let the two drift apart."""
    package = Path(__file__).resolve().parents[1] / "src" / "xinstruct"
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(NOT_CHECKED):
            continue
        for line, text in _path_literals(ast.parse(path.read_text(encoding="utf-8"))):
            if text in RUN_FOLDER_NAMES or text.endswith(RUN_FILE_SUFFIXES):
                found.append(f"{rel}:{line}: / {text!r}")
    assert not found, "run folder paths built outside core/layout.py:\n" + "\n".join(found)
