import json
import unicodedata

from xinstruct.config import CorpusConfig, InputSpec
from xinstruct.corpus.filters import compression_ratio, duplicate_line_share, normalize_text
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.corpus.pipeline import run_corpus
from xinstruct.io.files import read_jsonl
from xinstruct.seed import bundled_path


def demo_docs(lang):
    return list(read_jsonl(bundled_path(f"demo/{lang}/corpus.jsonl")))


def test_normalize_is_nfc_and_keeps_zwnj():
    decomposed = unicodedata.normalize("NFD", "Việt Nam")
    assert normalize_text(decomposed + "\x00  \u200c x") == "Việt Nam \u200c x"


def test_thai_without_spaces_passes_and_repetition_fails():
    thai = demo_docs("th")[0]["text"]
    assert compression_ratio(thai) > 0.25
    assert compression_ratio("ซื้อเลยวันนี้ " * 40) < 0.25
    assert duplicate_line_share("a line\na line\nanother") > 0.5


def test_langid_votes():
    lid = LanguageIdentifier()
    assert lid.check(demo_docs("sw")[0]["text"], "sw").ok
    assert lid.check(demo_docs("hi")[0]["text"], "hi").ok
    assert not lid.check(demo_docs("sw")[0]["text"], "th").ok
    english = "The committee met on Tuesday to discuss the new budget for schools and hospitals in the region."
    verdict = lid.check(english, "sw")
    assert not verdict.ok and verdict.detected == "en"


def _write_bad_file(path, good):
    lines = [json.dumps({"id": d["id"], "lang": "sw", "text": d["text"]}, ensure_ascii=False).encode()
             for d in good]
    lines += [
        b'{"id": "bad-utf8", "lang": "sw", "text": "\xff\xfe broken \xc3\x28"}',
        b'{"id": "broken-json", "lang": "sw", "text": "no end',
        json.dumps({"id": "empty", "lang": "sw", "text": ""}).encode(),
        json.dumps({"id": "huge", "lang": "sw", "text": "neno " * 2_000_000}).encode(),  # a 10 MB document
        json.dumps({"id": "english", "lang": "sw", "text": "This is an English paragraph about the weather "
                    "and the markets, written to look like a normal web page so that only language "
                    "identification can tell that it is not Swahili at all, whatever its label says."}).encode(),
        json.dumps({"id": "unknown-lang", "lang": "xx", "text": "whatever"}).encode(),
        json.dumps({"id": "no-text", "lang": "sw"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_malformed_input_is_counted_and_set_aside(tmp_path):
    good = demo_docs("sw")[:10]
    raw = tmp_path / "raw.jsonl"
    _write_bad_file(raw, good)
    dup = tmp_path / "dup.jsonl"  # another file with a copy of a document: dedup must see across files
    dup.write_text(json.dumps({"id": "copy", "lang": "sw", "text": good[0]["text"]}, ensure_ascii=False) + "\n")
    cfg = CorpusConfig(inputs=[InputSpec(path=str(raw)), InputSpec(path=str(dup))], max_line_bytes=1_000_000)
    summary = run_corpus(cfg, tmp_path / "out", ["sw"])
    assert summary["sw"]["kept"] == 10
    dropped = {**summary["sw"]["dropped"], **summary.get("?", {}).get("dropped", {})}
    assert dropped["read:invalid_utf8"] == 1
    assert dropped["read:malformed_json"] == 1
    assert dropped["read:too_large"] == 1
    assert dropped["read:unknown_lang"] == 1
    assert dropped["read:missing_text"] == 1
    assert dropped["length:empty"] == 1
    assert dropped["langid:en"] == 1
    assert dropped["dedup:near_duplicate"] == 1
    kept = [r for p in (tmp_path / "out" / "clean" / "sw").glob("*.jsonl") for r in read_jsonl(p)]
    assert sorted(r["id"] for r in kept) == sorted(d["id"] for d in good)
    rejects = [r for p in (tmp_path / "out" / "rejects").glob("*.jsonl") for r in read_jsonl(p)]
    assert all(r["stage"] and r["reason"] for r in rejects)
    # a rerun skips finished tasks and duplicates nothing
    again = run_corpus(cfg, tmp_path / "out", ["sw"])
    assert again["sw"]["kept"] == 10


def test_parquet_and_text_folder_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = demo_docs("hi")[:3]
    pq.write_table(pa.Table.from_pylist([{"id": d["id"], "text": d["text"]} for d in docs]), tmp_path / "d.parquet")
    folder = tmp_path / "txt"
    folder.mkdir()
    for d in demo_docs("th")[:2]:
        (folder / f"{d['id']}.txt").write_text(d["text"], encoding="utf-8")
    (folder / "broken.txt").write_bytes(b"\xff\xfe\xfa")
    cfg = CorpusConfig(inputs=[InputSpec(path=str(tmp_path / "d.parquet"), lang="hi"),
                               InputSpec(path=str(folder), lang="th", format="text")])
    summary = run_corpus(cfg, tmp_path / "out", ["hi", "th"])
    assert summary["hi"]["kept"] == 3 and summary["th"]["kept"] == 2
    assert summary["?"]["dropped"] == {"read:invalid_utf8": 1}
