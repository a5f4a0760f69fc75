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


def test_journaled_map_resumes_copies_and_loads_the_model_only_for_work_left(tmp_path):
    """The one loop of every model stage (core/work.journaled_map): a kill keeps whole committed groups, a rerun
    asks only what is left, a failure worth retrying is asked again, and another split's finished records are
    copied, not asked."""
    import pytest

    from xinstruct.core.tasks import Task, open_task_cache
    from xinstruct.core.work import MapCounts, journaled_map
    from xinstruct.io.cache import DONE, FAILED

    records = [f"r{i}" for i in range(10)]
    asked: list[str] = []
    kill = [True]

    def call(batch):
        asked.extend(batch)
        if "r5" in batch and kill[0]:
            raise KeyboardInterrupt  # killed while the third group is in flight
        return [(FAILED if r == "r7" and asked.count("r7") == 1 else DONE, {"v": r.upper()}) for r in batch]

    def entry(r, outcome):
        return r, outcome[0], [outcome[1]]

    def run(task, path, workers=lambda: 1):
        counts = MapCounts()
        with open_task_cache(path, task, "fp") as (cache, others):
            for _group in journaled_map(filter(task.owns, records), str, cache, call, entry, 2, workers, retries=1,
                                        failed=lambda o: o[0] == FAILED, reuse=others, counts=counts):
                pass
        return counts

    whole = Task("sw")
    with pytest.raises(KeyboardInterrupt):
        run(whole, tmp_path / "sw.sqlite")
    assert asked == ["r0", "r1", "r2", "r3", "r4", "r5"]
    asked.clear()
    kill[0] = False
    counts = run(whole, tmp_path / "sw.sqlite")
    assert asked == ["r4", "r5", "r6", "r7", "r7", "r8", "r9"]  # r7 failed once and was asked again at once
    assert (counts.cached, counts.copied, counts.asked) == (4, 0, 6)

    def no_model():
        raise AssertionError("nothing is left to ask: the model must not load")

    asked.clear()
    assert run(whole, tmp_path / "sw.sqlite", no_model).cached == 10 and asked == []
    half = Task("sw", 0, 2)  # another split of the same language finds the whole run's cache beside it
    counts = run(half, tmp_path / f"{half.name}.sqlite", no_model)
    assert counts.copied == sum(map(half.owns, records)) and asked == []
    with open_task_cache(tmp_path / f"{half.name}.sqlite", half, "fp") as (cache, _):
        assert cache.get("r1") == (DONE, [{"v": "R1"}]) and cache.get("r3") == (None, [])
    with open_task_cache(tmp_path / "sw.001-of-002.sqlite", Task("sw", 1, 2), "other settings") as (_, others):
        assert others == []  # work made under another fingerprint is never copied
