from xinstruct.io.journal import Journal


def test_uncommitted_tail_is_dropped_on_reopen(tmp_path):
    with Journal(tmp_path, "x", ("a", "b")) as j:
        j.commit({"a": [{"i": 1}], "b": [{"i": 2}]})
    with open(tmp_path / "x.a.jsonl", "a") as f:  # a batch cut off by a kill: written, never committed
        f.write('{"i": 3}\n{"i": ')
    with Journal(tmp_path, "x", ("a", "b")) as j:
        assert list(j.records("a")) == [{"i": 1}]
        assert list(j.records("b")) == [{"i": 2}]
        j.commit({"a": [{"i": 4}], "b": []})
        assert [r["i"] for r in j.records("a")] == [1, 4]
