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
    assert sorted(r["reason"] for r in rejects) == ["seed:malformed_json", "seed:missing_instruction",
                                                    "seed:missing_lang"]


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
