"""Near-duplicate removal with datasketch MinHash LSH over character n-grams (script-agnostic).

Streams: a document is dropped when it is near one already kept in the same task. Tasks shard by input file,
so duplicates across files of different tasks survive; for web-scale cross-shard dedup run datatrove's
MinhashDedup stages before xinstruct.
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter


def char_shingles(text: str, n: int) -> set[bytes]:
    text = " ".join(text.lower().split())
    if len(text) <= n:
        return {text.encode("utf-8")}
    return {text[i:i + n].encode("utf-8") for i in range(len(text) - n + 1)}


class MinHashDedupFilter(BaseFilter):
    name = "🫂 minhash dedup"

    def __init__(self, threshold: float = 0.7, num_perm: int = 128, ngram: int = 5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self._lsh = None

    def filter(self, doc: Document):
        from datasketch import MinHash, MinHashLSH

        if self._lsh is None:
            self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        mh = MinHash(num_perm=self.num_perm)
        mh.update_batch(list(char_shingles(doc.text, self.ngram)))
        key = f"{doc.metadata['lang']}\x00{doc.id}"
        hits = [h for h in self._lsh.query(mh) if h.startswith(doc.metadata["lang"] + "\x00")]
        if hits:
            doc.metadata["detail"] = {"duplicate_of": hits[0].split("\x00", 1)[1]}
            return False, "dedup:near_duplicate"
        if key not in self._lsh:
            self._lsh.insert(key, mh)
        return True
