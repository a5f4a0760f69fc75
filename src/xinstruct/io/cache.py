"""A crash-safe cache of per-record model work, one SQLite file per task.

Why SQLite (the standard library's): a batch of results is committed in one transaction, so a run killed at
any instant keeps whole batches and nothing else; looking a record up is an indexed read from disk, so a task
resumes over a million documents without holding their keys in memory; and a record that is done again (a retry
after a server error) replaces its earlier outcome in the same transaction, so no superseded row is ever read.

Rows are grouped by `key` (e.g. a document's id and text hash): `put(key, rows)` stores every row a record
produced (its candidates, or its reject) and `get(key)` returns them. The cache carries the fingerprint of the
settings its rows were made with; opened with another one, it starts empty.

`BlobCache` is the same for work that yields one value of bytes per key (an embedding vector): no JSON, no rows.

Both answer what core/work.journaled_map asks of a task's cache: is a key `finished` (a record cached with a
status that is not retried: `done`, or refine's `set_aside`; any stored vector), and its `finished_entry`, which
another split's task copies instead of asking the model again.

Keep the cache on a local disk or a shared filesystem with working locks (one process writes each file).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

DONE, FAILED = "done", "failed"  # a record's status: finished, or retried on the next run (a server error)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS rows (key TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL,
                                 PRIMARY KEY (key, seq));
"""


class _SqliteCache:
    schema = SCHEMA
    table = "rows"

    def __init__(self, path: str | Path, fingerprint: str | None = None, readonly: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(self.schema)
        stored = self.stored_fingerprint
        self.reset = False
        if fingerprint is not None and not readonly and stored != fingerprint:
            self.reset = stored is not None and self.count() > 0
            with self.transaction():
                self.db.execute(f"DELETE FROM {self.table}")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))

    @property
    def stored_fingerprint(self) -> str | None:
        """The fingerprint the rows were made under (None: none recorded)."""
        row = self.db.execute("SELECT value FROM meta WHERE name='fingerprint'").fetchone()
        return row[0] if row else None

    def transaction(self):
        return _Transaction(self.db)

    def count(self) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RecordCache(_SqliteCache):
    """key → (status, rows). `finished`: the statuses a rerun does not ask again (default: done)."""

    def __init__(self, path: str | Path, fingerprint: str | None = None, readonly: bool = False,
                 finished: tuple[str, ...] = (DONE,)):
        super().__init__(path, fingerprint, readonly)
        self.finished_statuses = finished

    def finished(self, key: str) -> bool:
        return self.status(key) in self.finished_statuses

    def finished_entry(self, key: str) -> tuple[str, str, list[dict]] | None:
        """(key, status, rows) to put in another cache, if `key` is finished here."""
        status, rows = self.get(key)
        return (key, status, rows) if status in self.finished_statuses else None

    def put(self, key: str, status: str, rows: list[dict]) -> None:
        """Store every row one record produced (replacing what it produced before). Call inside a transaction
        (`with cache.transaction():`) so a batch commits as a whole."""
        self.db.execute("DELETE FROM rows WHERE key=?", (key,))
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)",
                            [(key, i, status, json.dumps(r, ensure_ascii=False)) for i, r in enumerate(rows)])

    def put_many(self, items: Iterable[tuple[str, str, list[dict]]]) -> None:
        """One batch, (key, status, rows) each, committed atomically."""
        with self.transaction():
            for key, status, rows in items:
                self.put(key, status, rows)

    def status(self, key: str) -> str | None:
        row = self.db.execute("SELECT status FROM rows WHERE key=? LIMIT 1", (key,)).fetchone()
        return row[0] if row else None

    def get(self, key: str) -> tuple[str | None, list[dict]]:
        """(status, rows) of a record, (None, []) if it was never done."""
        found = self.db.execute("SELECT status, data FROM rows WHERE key=? ORDER BY seq", (key,)).fetchall()
        if not found:
            return None, []
        return found[0][0], [json.loads(d) for _, d in found]

    def count(self, status: str | None = None) -> int:
        """Records (not rows) done, or done with `status`."""
        if status is None:
            return self.db.execute("SELECT COUNT(DISTINCT key) FROM rows").fetchone()[0]
        return self.db.execute("SELECT COUNT(DISTINCT key) FROM rows WHERE status=?", (status,)).fetchone()[0]

    def items(self) -> Iterator[tuple[str, str, dict]]:
        """Every (key, status, row), in key order."""
        for key, status, data in self.db.execute("SELECT key, status, data FROM rows ORDER BY key, seq"):
            yield key, status, json.loads(data)


class BlobCache(_SqliteCache):
    """key → bytes, e.g. a text's hash → its embedding vector."""

    schema = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
    table = "blobs"

    def get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM blobs WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def __contains__(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM blobs WHERE key=?", (key,)).fetchone() is not None

    finished = __contains__

    def finished_entry(self, key: str) -> tuple[str, bytes] | None:
        value = self.get(key)
        return None if value is None else (key, value)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """One batch of (key, value), committed atomically."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?)", list(items))


def one_row_entry(key: Callable[[object], str]) -> Callable[[object, tuple[str, dict]], tuple[str, str, list[dict]]]:
    """The cache entry (key, status, [row]) of a record whose model outcome is (status, one row): refine's evidence
    for a pair, evaluate's answer or verdict for a job."""
    return lambda record, outcome: (key(record), outcome[0], [outcome[1]])


def open_reusable(paths: Iterable[Path], fingerprint: str | None, kind: type = RecordCache, **kw) -> list:
    """Read-only caches among `paths` made under `fingerprint` (another split's tasks): what they finished is
    copied, not asked again. The caller closes them."""
    out = []
    for path in paths:
        cache = kind(path, readonly=True, **kw)
        if cache.stored_fingerprint == fingerprint:
            out.append(cache)
        else:
            cache.close()
    return out


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
