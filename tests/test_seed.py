import json

from xinstruct.config import InputSpec
from xinstruct.seed import load_pairs
from xinstruct.seed.parallel import load_instructions, parallel_pairs


def test_load_pairs_alpaca_style_and_bad_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps({"instruction": "Translate this.", "input": "Hello", "output": "Habari", "lang": "sw"}).encode(),
        json.dumps({"instruction": "", "output": "x", "lang": "sw"}).encode(),
        b"{not json",
        json.dumps({"prompt": "Say hi.", "response": "Jambo"}).encode(),
    ]) + b"\n")
    rejects = []
    pairs = list(load_pairs([InputSpec(path=str(path), lang=None)], rejects))
    assert [p["instruction"] for p in pairs] == ["Translate this.\n\nHello"]
    assert sorted(r["reason"] for r in rejects) == ["read:malformed_json", "seed:missing_instruction",
                                                    "seed:missing_lang"]


def _seed_rows(n: int) -> list[dict]:
    return [{"id": f"s{i}", "lang": ("sw", "th")[i % 2], "instruction": f"Write sentence {i}.",
             "output": ("Sentensi ya {}.", "ประโยคที่ {}")[i % 2].format(i)} for i in range(n)]


def test_parquet_and_compressed_seed_files_load(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _seed_rows(24)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "seed.parquet")
    plain = tmp_path / "seed.jsonl"
    plain.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "seed.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    got = {}
    for name in ("seed.parquet", "seed.jsonl", "seed.jsonl.gz"):
        rejects = []
        got[name] = list(load_pairs([InputSpec(path=str(tmp_path / name))], rejects))
        assert rejects == [], name
    assert len(got["seed.parquet"]) == 24
    assert [p["output"] for p in got["seed.parquet"]] == [r["output"] for r in rows]
    strip = [{k: v for k, v in p.items() if k != "source"} for p in got["seed.jsonl"]]
    for name in ("seed.parquet", "seed.jsonl.gz"):
        assert [{k: v for k, v in p.items() if k != "source"} for p in got[name]] == strip


def test_seed_rejects_keep_reason_and_language(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = _seed_rows(4) + [{"id": "no-out", "lang": "th", "instruction": "Say hi."},
                            {"id": "odd", "lang": "xx", "instruction": "Say hi.", "output": "hi"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + '{"lang": "sw", broken\n')
    rejects = []
    pairs = list(load_pairs([InputSpec(path=str(path))], rejects, languages=["sw"]))
    assert [p["id"] for p in pairs] == ["s0", "s2"]
    assert [(r["reason"], r["lang"], r["where"]) for r in rejects] == [
        ("seed:not_in_run_languages", "th", "line 2"), ("seed:not_in_run_languages", "th", "line 4"),
        ("seed:missing_output", "th", "line 5"), ("seed:unknown_lang", None, "line 6"),
        ("read:malformed_json", "sw", "line 7")]
    assert all(r["source"] == str(path) for r in rejects)


def test_bundled_flores_instructions():
    instructions = load_instructions("bundled:flores")
    assert len(instructions) == 150
    splits = [r["split"] for r in instructions.values()]
    assert splits.count("heldout") == 37


def test_parallel_pairs_from_shared_flores(shared_data):
    instructions = load_instructions("bundled:flores")
    pairs = parallel_pairs(instructions, shared_data / "text" / "flores_sib200", "th", "heldout")
    assert len(pairs) == 37 and all(p["lang"] == "th" and p["split"] == "heldout" for p in pairs)
    assert all(p["instruction"] == instructions[p["id"].split(":")[0]]["instruction"] for p in pairs)


def test_translate_pairs_accounts_for_every_input(llama):
    """The bundled 270M base model is a poor translator: whatever it returns, every English pair ends up either
    as a kept translation that passed language ID, or set aside with a reason."""
    from xinstruct.corpus.langid import LanguageIdentifier
    from xinstruct.seed.translate import translate_pairs

    english = [{"id": f"en-{i}", "lang": "en", "instruction": ins, "output": out, "source": "t", "split": "train"}
               for i, (ins, out) in enumerate([("Give a tip for sleeping well.", "Go to bed at the same time."),
                                               ("Name a fruit.", "A mango is a sweet tropical fruit.")])]
    pairs, rejects = translate_pairs(english, "sw", llama, max_tokens=24)
    assert len(pairs) + len(rejects) == 2
    assert all(r["reason"].startswith("translate:") for r in rejects)
    assert all(LanguageIdentifier().check(p["output"], "sw").ok for p in pairs)
