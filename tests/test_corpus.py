import gzip
import json
import unicodedata

import pytest
import yaml

from xinstruct.config import CorpusConfig, ExecutorConfig, InputSpec
from xinstruct.corpus.filters import compression_ratio, duplicate_line_share, normalize_text
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.corpus.pipeline import run_corpus
from xinstruct.io.files import read_jsonl
from xinstruct.io.read import InputError
from xinstruct.seed import bundled_path


def demo_docs(lang):
    return list(read_jsonl(bundled_path(f"demo/{lang}/corpus.jsonl")))


def test_normalize_is_nfc_and_keeps_zwnj_where_the_script_uses_it():
    decomposed = unicodedata.normalize("NFD", "Việt Nam")
    assert normalize_text(decomposed + "\x00  \u200c x") == "Việt Nam \u200c x"  # no language: kept
    assert normalize_text("क्\u200dष और ر\u200cا", "hi") == "क्\u200dष और ر\u200cا"  # Devanagari half form
    assert normalize_text("می\u200cخواهم", "ur") == "می\u200cخواهم"  # Perso-Arabic non-joiner
    stray = "ha\u200dba\u200cri\u200b ya\u2060 \ufeffleo"
    for lang in ("sw", "id", "tr", "vi", "fi"):
        assert normalize_text(stray, lang) == "habari ya leo", lang
    assert normalize_text("สวัสดี\u200bครับ", "th") == "สวัสดีครับ"  # Thai: ZWSP is only a line-break hint


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
    assert summary["sw"]["dropped"] == {"read:invalid_utf8": 1, "read:malformed_json": 1, "read:too_large": 1,
                                        "read:missing_text": 1, "length:empty": 1, "langid:en": 1,
                                        "dedup:near_duplicate": 1}  # each filed under its declared language
    assert summary["_unknown"]["dropped"] == {"read:unknown_lang": 1}
    kept = [r for p in (tmp_path / "out" / "clean" / "sw").glob("*.jsonl") for r in read_jsonl(p)]
    assert sorted(r["id"] for r in kept) == sorted(d["id"] for d in good)
    rejects = [r for p in (tmp_path / "out" / "rejects").glob("*/*.jsonl") for r in read_jsonl(p)]
    assert len(rejects) == 8 and all(r["stage"] and r["reason"] and r["source"] and r["where"] for r in rejects)
    # a rerun skips finished tasks and duplicates nothing
    again = run_corpus(cfg, tmp_path / "out", ["sw"])
    assert again == summary


def test_parquet_and_text_folder_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = demo_docs("hi")[:3]
    pq.write_table(pa.Table.from_pylist([{"id": d["id"], "text": d["text"]} for d in docs]), tmp_path / "d.parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    folder = tmp_path / "txt"
    (folder / "th").mkdir(parents=True)
    for d in demo_docs("th")[:2]:  # the language from the folder's name
        (folder / "th" / f"{d['id']}.txt").write_text(d["text"], encoding="utf-8")
    (folder / "th" / "broken.txt").write_bytes(b"\xff\xfe\xfa")
    cfg = CorpusConfig(inputs=[InputSpec(path=str(tmp_path / "d.parquet"), lang="hi"),
                               InputSpec(path=str(tmp_path / "empty.parquet"), lang="hi"),
                               InputSpec(path=str(folder))])
    summary = run_corpus(cfg, tmp_path / "out", ["hi", "th"])
    assert summary["hi"] == {"kept": 3, "dropped": {"read:empty_file": 1}, "read": 4}
    assert summary["th"] == {"kept": 2, "dropped": {"read:invalid_utf8": 1}, "read": 3}


def test_text_folder_without_language_is_one_line_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from xinstruct.cli import app

    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("Habari za leo")
    with pytest.raises(InputError, match="needs a language"):
        run_corpus(CorpusConfig(inputs=[InputSpec(path=str(tmp_path / "txt"))]), tmp_path / "out", ["sw"])
    assert not (tmp_path / "out").exists()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "languages": ["sw"],
                                      "corpus": {"inputs": [{"path": str(tmp_path / "txt")}]}}))
    result = CliRunner().invoke(app, ["corpus", str(config)])
    assert result.exit_code == 2 and "needs a language" in " ".join(result.output.split())
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


def clean_records(folder) -> list[dict]:
    return sorted((r for p in (folder / "clean").glob("*/*.jsonl") for r in read_jsonl(p)), key=lambda r: r["id"])


def test_jsonl_gz_corpus_reads_the_same_as_plain(tmp_path):
    plain = tmp_path / "plain" / "sw.jsonl"
    plain.parent.mkdir()
    plain.write_bytes(bundled_path("demo/sw/corpus.jsonl").read_bytes())
    packed = tmp_path / "packed" / "sw.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    outs = {}
    for name, path in (("plain", plain), ("packed", packed)):
        outs[name] = run_corpus(CorpusConfig(inputs=[InputSpec(path=str(path))]), tmp_path / f"out-{name}", ["sw"])
    assert outs["packed"] == outs["plain"] and outs["plain"]["sw"]["kept"] > 30
    strip = [{k: v for k, v in r.items() if k != "source"} for r in clean_records(tmp_path / "out-plain")]
    assert [{k: v for k, v in r.items() if k != "source"} for r in clean_records(tmp_path / "out-packed")] == strip


def test_languages_outside_the_run_are_counted_rejects(tmp_path):
    inputs = [InputSpec(path=str(bundled_path(f"demo/{lang}/corpus.jsonl")), lang=declared)
              for lang, declared in (("sw", None), ("th", "th"), ("hi", None))]  # by the spec, or by the record
    summary = run_corpus(CorpusConfig(inputs=inputs), tmp_path / "out", ["sw"])
    sizes = {lang: len(demo_docs(lang)) for lang in ("sw", "th", "hi")}
    assert summary["th"] == {"kept": 0, "dropped": {"read:not_in_run_languages": sizes["th"]}, "read": sizes["th"]}
    assert summary["hi"] == {"kept": 0, "dropped": {"read:not_in_run_languages": sizes["hi"]}, "read": sizes["hi"]}
    assert summary["sw"]["read"] == sizes["sw"] and summary["sw"]["kept"] > 30
    rejected = list(read_jsonl(next((tmp_path / "out" / "rejects" / "hi").glob("read.*.jsonl"))))
    assert {r["detail"]["lang"] for r in rejected} == {"hi"} and all(r["id"].startswith("hi-") for r in rejected)


def test_zero_width_characters_leave_latin_script_words(tmp_path):
    docs = demo_docs("sw")[:5] + demo_docs("hi")[:5]
    hindi_zwj = "\u0915\u094d\u200d"  # क्‍: a half form, shaped by the ZWJ
    rows = [{**d, "text": d["text"].replace("a", "a\u200d", 20).replace("i", "i\u200b", 5)
             if d["lang"] == "sw" else d["text"] + " " + hindi_zwj + "ष"} for d in docs]
    path = tmp_path / "zw.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run_corpus(CorpusConfig(inputs=[InputSpec(path=str(path))]), tmp_path / "out", ["sw", "hi"])
    kept = clean_records(tmp_path / "out")
    sw = [r for r in kept if r["lang"] == "sw"]
    assert len(sw) == 5 and not any(ch in r["text"] for r in sw for ch in "\u200b\u200c\u200d\u2060\ufeff")
    assert {r["text"] for r in sw} == {normalize_text(d["text"], "sw") for d in docs[:5]}
    hi = [r for r in kept if r["lang"] == "hi"]
    assert len(hi) == 5 and all(hindi_zwj in r["text"] for r in hi)


def test_rejects_are_filed_by_language_and_step_with_their_numbers(tmp_path):
    sw, th = demo_docs("sw"), demo_docs("th")
    english = ("This is an English paragraph about the weather and the markets, written to look like a normal web "
               "page so that only language identification can tell that it is not Swahili at all, whatever its label "
               "says.")
    rows = [{"id": "short", "lang": "sw", "text": sw[0]["text"][:150]},
            {"id": "long", "lang": "sw", "text": " ".join(d["text"] for d in sw[:6])},
            {"id": "english", "lang": "sw", "text": english},
            {"id": "repeat", "lang": "th", "text": "ซื้อเลยวันนี้ " * 40},
            th[0], {"id": "copy", "lang": "th", "text": th[0]["text"]}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "{oops\n", encoding="utf-8")
    run_corpus(CorpusConfig(inputs=[InputSpec(path=str(path))]), tmp_path / "out", ["sw", "th"])
    rejects_dir = tmp_path / "out" / "rejects"
    files = sorted(str(p.relative_to(rejects_dir)) for p in rejects_dir.rglob("*") if p.is_file())
    assert files == ["_unknown/read.00000.jsonl", "sw/langid.00000.jsonl", "sw/length.00000.jsonl",
                     "th/dedup.00001.jsonl", "th/quality.00000.jsonl"]
    rejects = {r.get("id", r["where"]): r for p in rejects_dir.rglob("*.jsonl") for r in read_jsonl(p)}
    assert len(rejects) == 6
    assert rejects["short"]["detail"]["min_chars"] == 200 and rejects["short"]["detail"]["length"] < 200
    assert rejects["long"]["detail"]["max_chars"] == 2000 and rejects["long"]["detail"]["length"] > 2000
    assert rejects["repeat"]["reason"] == "quality:repetitive"
    assert rejects["repeat"]["detail"]["threshold"] == 0.25 and rejects["repeat"]["detail"]["score"] < 0.25
    assert rejects["english"]["reason"] == "langid:en"
    assert rejects["english"]["detail"]["detected"] == "en" and rejects["english"]["detail"]["threshold"] == 0.5
    assert rejects["copy"]["reason"] == "dedup:near_duplicate" and rejects["copy"]["detail"] == {
        "duplicate_of": th[0]["id"]}
    assert rejects["line 7"]["reason"] == "read:malformed_json" and rejects["line 7"]["raw"] == "{oops"
    assert all(r["source"] == str(path) and r["where"].startswith("line ") for r in rejects.values())


def test_many_small_files_share_a_few_tasks(tmp_path):
    docs = demo_docs("sw")
    for i, d in enumerate(docs):
        (tmp_path / "many" / f"{i:03d}.jsonl").parent.mkdir(exist_ok=True)
        (tmp_path / "many" / f"{i:03d}.jsonl").write_text(json.dumps(d, ensure_ascii=False) + "\n")
    summary = run_corpus(CorpusConfig(inputs=[InputSpec(path=str(tmp_path / "many"))]), tmp_path / "out", ["sw"])
    assert summary["sw"]["read"] == len(docs) == 40
    tasks = list((tmp_path / "out" / "logs" / "filter" / "completions").iterdir())
    assert len(tasks) == 4  # 4 x 1 worker, not one task per file
    again = run_corpus(CorpusConfig(inputs=[InputSpec(path=str(tmp_path / "many"))]), tmp_path / "out2", ["sw"],
                       ExecutorConfig(tasks=7))
    assert again == summary and len(list((tmp_path / "out2" / "logs" / "filter" / "completions").iterdir())) == 7


def test_the_console_table_shows_every_row_of_the_summary(tmp_path):
    """Issue 22: the corpus table printed after the stage has the _unknown row (records set aside before their
    language was known), so its rejects add up to summary.json's."""
    from rich.console import Console

    from xinstruct.pipeline.run import stage_report

    raw = tmp_path / "raw.jsonl"
    _write_bad_file(raw, demo_docs("sw")[:3])
    summary = run_corpus(CorpusConfig(inputs=[InputSpec(path=str(raw))]), tmp_path / "out", ["sw"])
    console = Console(width=250, record=True)
    console.print(stage_report("corpus", summary, 1.0))
    rows = {line.split("│")[1].strip() for line in console.export_text().splitlines() if line.count("│") > 2}
    assert {"sw", "_unknown"} <= rows
