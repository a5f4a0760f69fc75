import bz2
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xinstruct.config import InputSpec
from xinstruct.corpus.readers import plan_tasks
from xinstruct.io.read import InputError, Row, Unit, check_spec, iter_documents, iter_records, parse_hf
from xinstruct.io.records import Document, Reject

RECORDS = [{"id": f"r{i}", "lang": "sw", "text": f"Habari ya asubuhi namba {i}."} for i in range(5)]
BROKEN = b'{"id": "bad", "lang": "sw", "text": "no end'


def jsonl_bytes(records, extra: bytes = b"") -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records) + extra


def write_compressed(path, data: bytes) -> None:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    elif path.suffix == ".zst":
        with pa.output_stream(str(path), compression="zstd") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def summary(items) -> list:
    """What a stream holds, without the file name (so plain and compressed files compare equal)."""
    return [(type(i).__name__, i.record if isinstance(i, Row) else i.reason, i.where) for i in items]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.bz2", ".jsonl.zst"])
def test_compressed_jsonl_reads_like_plain(tmp_path, suffix):
    data = jsonl_bytes(RECORDS, BROKEN + b"\n")
    plain, packed = tmp_path / "a.jsonl", tmp_path / f"a{suffix}"
    write_compressed(plain, data)
    write_compressed(packed, data)
    assert packed.read_bytes() != data
    got = list(iter_records(InputSpec(path=str(packed))))
    assert summary(got) == summary(iter_records(InputSpec(path=str(plain))))
    assert [i.record for i in got if isinstance(i, Row)] == RECORDS
    assert [i.reason for i in got if isinstance(i, Reject)] == ["read:malformed_json"]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_cut_off_compressed_file_is_a_reject_not_silence(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    write_compressed(path, jsonl_bytes(RECORDS * 200))
    path.write_bytes(path.read_bytes()[:-20])
    rejects = [i for i in iter_records(InputSpec(path=str(path), lang="sw")) if isinstance(i, Reject)]
    assert [(r.reason, r.lang) for r in rejects] == [("read:unreadable_file", "sw")]
    assert "runcated" in rejects[0].detail["error"]


def test_json_list_and_object_holding_one_list(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(RECORDS + [7]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": RECORDS}))
    (tmp_path / "two.json").write_text(json.dumps({"a": RECORDS, "b": RECORDS}))
    items = list(iter_records(InputSpec(path=str(tmp_path / "list.json"))))
    assert [i.record for i in items[:5]] == RECORDS and items[0].where == "item 0"
    assert items[5].reason == "read:not_an_object" and items[5].where == "item 5"
    assert [i.record for i in iter_records(InputSpec(path=str(tmp_path / "wrapped.json")))] == RECORDS
    (only,) = iter_records(InputSpec(path=str(tmp_path / "two.json"), lang="th"))
    assert (only.reason, only.lang) == ("read:not_a_record_list", "th")


def test_parquet_streams_in_batches_and_empty_files_give_no_records(tmp_path):
    rows = [{"id": str(i), "text": f"maandishi {i}"} for i in range(2500)]  # more than one 1,000-row batch
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "big.parquet")
    got = list(iter_records(InputSpec(path=str(tmp_path / "big.parquet"))))
    assert [i.record for i in got] == rows and got[-1].where == "row 2500"
    (tmp_path / "zero.parquet").write_bytes(b"")
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("text", pa.string())])), tmp_path / "norows.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really")
    for name in ("zero", "norows"):
        items = list(iter_records(InputSpec(path=str(tmp_path / f"{name}.parquet"), lang="hi")))
        assert [(i.reason, i.lang) for i in items] == [("read:empty_file", "hi")], name
    (bad,) = iter_records(InputSpec(path=str(tmp_path / "corrupt.parquet")))
    assert bad.reason == "read:unreadable_file"


def test_text_folder_language_from_spec_or_folder_name(tmp_path):
    for lang, name, text in [("sw", "a.txt", "Habari"), ("th", "b.txt", "สวัสดี"), ("th", "sub/c.txt", "ครับ")]:
        (tmp_path / "docs" / lang / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / lang / name).write_text(text, encoding="utf-8")
    (tmp_path / "docs" / ".hidden.txt").write_text("skip me")
    units = check_spec(InputSpec(path=str(tmp_path / "docs")))
    docs = [d for u in units for d in iter_documents(u)]
    assert [(d.id, d.lang, d.text) for d in docs] == [("sw/a.txt", "sw", "Habari"), ("th/b.txt", "th", "สวัสดี"),
                                                      ("th/sub/c.txt", "th", "ครับ")]
    forced = [d for u in check_spec(InputSpec(path=str(tmp_path / "docs"), lang="sw")) for d in iter_documents(u)]
    assert {d.lang for d in forced} == {"sw"}

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("Habari")
    with pytest.raises(InputError) as err:
        check_spec(InputSpec(path=str(tmp_path / "plain")))
    assert "needs a language" in str(err.value) and "\n" not in str(err.value)
    unit = Unit(InputSpec(path=str(tmp_path / "plain")), str(tmp_path / "plain" / "x.txt"), "text", 6, None)
    (reject,) = iter_documents(unit)  # read without the check: set aside, never a traceback
    assert reject.reason == "read:missing_lang"


def test_missing_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("not data")
    for spec in [InputSpec(path=str(tmp_path / "nope.jsonl")), InputSpec(path=str(tmp_path / "*.jsonl")),
                 InputSpec(path=str(tmp_path / "notes")), InputSpec(path="hf:"), InputSpec(path="hf:a:b:c:d"),
                 InputSpec(path=str(tmp_path / "data"), lang="xx")]:
        with pytest.raises(InputError) as err:
            list(iter_records(spec))
        assert "\n" not in str(err.value), spec


def test_hf_grammar_one_meaning():
    assert parse_hf("hf:HuggingFaceH4/mt_bench_prompts::train") == ("HuggingFaceH4/mt_bench_prompts", None, "train")
    assert parse_hf("hf:org/set") == ("org/set", None, "train")
    assert parse_hf("hf:org/set:swahili") == ("org/set", "swahili", "train")  # the config, never a split
    assert parse_hf("hf:org/set:swahili:test") == ("org/set", "swahili", "test")
    assert parse_hf("hf:org/set:", "validation") == ("org/set", None, "validation")
    assert parse_hf("hf:org/set::", "validation") == ("org/set", None, "validation")


def test_hf_sources_mean_the_same_in_every_reader(monkeypatch):
    """corpus, seed and question sets all call load_dataset(dataset, config, split=...) the same way."""
    import datasets

    from xinstruct.evaluate.questions import load_question_set
    from xinstruct.seed import load_pairs

    calls = []

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split))
        return [{"id": "q1", "lang": "sw", "text": "Habari", "instruction": "Say hi.", "output": "Jambo",
                 "turns": ["Say hi."]}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (unit,) = check_spec(InputSpec(path="hf:org/set:cfg", split="test"))
    assert [d.text for d in iter_documents(unit)] == ["Habari"]
    assert [p["output"] for p in load_pairs([InputSpec(path="hf:org/set:cfg:dev")])] == ["Jambo"]
    assert [q.text for q in load_question_set("hf:org/set::train")] == ["Say hi."]
    assert calls == [("org/set", "cfg", "test"), ("org/set", "cfg", "dev"), ("org/set", None, "train")]


def test_rejects_carry_the_declared_language(tmp_path):
    (tmp_path / "th").mkdir()
    bad = b"\xff\xfe not utf-8"
    (tmp_path / "th" / "a.jsonl").write_bytes(jsonl_bytes(RECORDS[:1], BROKEN + b"\n" + bad + b"\n"))
    (tmp_path / "mixed.jsonl").write_bytes(b'{"lang": "hi", "text": "\xff"}\n' + BROKEN + b"\n[1, 2]\n")
    by_folder = [i for i in iter_records(InputSpec(path=str(tmp_path / "th"))) if isinstance(i, Reject)]
    assert [(r.reason, r.lang) for r in by_folder] == [("read:malformed_json", "sw"), ("read:invalid_utf8", "th")]
    by_spec = [i for i in iter_records(InputSpec(path=str(tmp_path / "mixed.jsonl"), lang="ur"))]
    assert {r.lang for r in by_spec} == {"ur"}
    by_record = list(iter_records(InputSpec(path=str(tmp_path / "mixed.jsonl"))))
    assert [(r.reason, r.lang, r.where) for r in by_record] == [
        ("read:invalid_utf8", "hi", "line 1"), ("read:malformed_json", "sw", "line 2"),
        ("read:not_an_object", None, "line 3")]
    assert by_record[0].raw.startswith('{"lang": "hi", "text": "\\xff')


def test_documents_unknown_and_other_languages_are_rejects(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl_bytes([{"id": "1", "lang": "sw", "text": "a"}, {"id": "2", "lang": "th", "text": "b"},
                                  {"id": "3", "lang": "xx", "text": "c"}, {"id": "4", "text": "d"},
                                  {"id": "5", "lang": "sw", "body": "e"}]))
    (unit,) = check_spec(InputSpec(path=str(path)))
    items = list(iter_documents(unit, languages=["sw"]))
    assert items[0] == Document(id="1", lang="sw", text="a", source=str(path), where="line 1")
    assert [(i.reason, i.lang, i.detail) for i in items[1:]] == [
        ("read:not_in_run_languages", "th", {"lang": "th", "languages": ["sw"]}),
        ("read:unknown_lang", None, {"lang": "xx"}),
        ("read:missing_lang", None, {"key": "lang"}),
        ("read:missing_text", "sw", {"key": "text"})]
    assert [i.id for i in items] == ["1", "2", "3", "4", "5"]


def test_limit_counts_records_per_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl_bytes(RECORDS, BROKEN + b"\n") + jsonl_bytes(RECORDS))
    items = list(iter_records(InputSpec(path=str(path), limit=7)))
    assert sum(isinstance(i, Row) for i in items) == 7 and sum(isinstance(i, Reject) for i in items) == 1


def test_record_types_are_strict_and_write_rows_without_empty_fields():
    reject = Reject(stage="read", reason="read:too_large", lang="sw", source="f", where="line 1",
                    detail={"bytes": 9, "max_bytes": 5})
    assert reject.as_dict() == {"stage": "read", "reason": "read:too_large", "lang": "sw", "source": "f",
                                "where": "line 1", "detail": {"bytes": 9, "max_bytes": 5}}
    assert reject.as_dict()["lang"] == "sw" and "lang" in Reject("read", "read:x", None, "f", "file").as_dict()
    with pytest.raises(TypeError):
        Document(id="1", lang="sw", text="x", source="f", response="y")


def _units(sizes):
    spec = InputSpec(path="x")
    return [Unit(spec, f"f{i}", "hf" if s is None else "jsonl", s or 0, None) for i, s in enumerate(sizes)]


def test_small_files_are_grouped_into_tasks_by_bytes():
    units = _units([100] * 1000)
    groups = plan_tasks(units, 4)
    assert [len(g) for g in groups] == [250, 250, 250, 250]
    assert [u for g in groups for u in g] == units  # every unit once, in input order
    uneven = _units([10_000] + [100] * 300)
    groups = plan_tasks(uneven, 4)
    assert groups[0] == uneven[:1] and len(groups) == 4  # the big file alone; the small ones share the rest
    assert plan_tasks(_units([5, 5]), 8) == [[u] for u in _units([5, 5])]
    assert len(plan_tasks(_units([100, None, 100, 100]), 4)) == 4  # an hf: source weighs a task's share
    assert plan_tasks([], 4) == []
