"""llama.cpp in-process, with continuous batching over llama-cpp-python's low-level API. The default backend.

Why in-process rather than llama-cpp-python's OpenAI server: that server decodes one request at a time,
while one llama_decode over many sequences is what makes a 2-core CPU fast (~107 tok/s for 16 sequences vs
~42 for one, measured here). It also needs no port, process or health check. A slot that finishes takes the
next prompt at once (continuous batching), and prompts are admitted only while their prompt + max_tokens fit
the shared KV cache, so long and short texts mix safely.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import random
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xinstruct.config import LlamaCppConfig
from xinstruct.models.base import (
    Backend,
    Completion,
    FatalBackendError,
    GenerationResult,
    OptionScores,
    SamplingParams,
    Score,
    truncate_at_stop,
)
from xinstruct.models.bundled import BUNDLED_MODEL_ID, bundled_gguf


@dataclass
class _Slot:
    job: tuple[int, int]  # (prompt index, sample index)
    pending: list[int]  # prompt tokens not yet decoded
    reserved: int  # KV cells reserved: prompt + max_tokens
    sampler: object
    pos: int = 0
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    logit_index: int = -1


class LlamaCppBackend(Backend):
    name = "llamacpp"
    capabilities = frozenset({"generate", "loglikelihood", "option_logprobs", "grammar"})

    def __init__(self, cfg: LlamaCppConfig, n_parallel: int | None = None):
        import llama_cpp as L

        self.L = L
        self.cfg = cfg
        self.model_path = str(bundled_gguf()) if cfg.model is None else cfg.model
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"no GGUF model at {self.model_path}")
        self.n_parallel = n_parallel or cfg.n_parallel
        threads = cfg.n_threads or max(1, len(os.sched_getaffinity(0)))
        L.llama_backend_init()
        L.llama_log_set(_QUIET_LOG, ctypes.c_void_p())
        mparams = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(self.model_path.encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {self.model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = cfg.n_ctx
        cparams.n_batch = cparams.n_ubatch = 512
        cparams.n_seq_max = self.n_parallel
        cparams.kv_unified = True
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context (n_ctx too large?)")
        self.n_ctx = L.llama_n_ctx(self.ctx)
        self.mem = L.llama_get_memory(self.ctx)
        self.adapter = None
        if cfg.lora:
            self.adapter = L.llama_adapter_lora_init(self.model, str(cfg.lora).encode())
            if not self.adapter:
                raise RuntimeError(f"llama.cpp could not load the LoRA adapter {cfg.lora}")
            adapters = (L.llama_adapter_lora_p_ctypes * 1)(self.adapter)
            L.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        self.batch = L.llama_batch_init(512, 0, 1)
        self.tree_batch = None  # score(): up to n_parallel sequences per token, made on first use
        self.tokens_generated = 0

    @property
    def model_id(self) -> str:
        base = BUNDLED_MODEL_ID if self.cfg.model is None else Path(self.model_path).name
        if self.cfg.lora:
            digest = hashlib.sha1(Path(self.cfg.lora).read_bytes()).hexdigest()[:8]
            return f"{base}+lora:{Path(self.cfg.lora).stem}@{digest}"
        return base

    # -- tokens ---------------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        raw = text.encode("utf-8")
        buf = (self.L.llama_token * (len(raw) + 8))()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_bos, False)
        if n < 0:
            buf = (self.L.llama_token * (-n))()
            n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_bos, False)
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def _sampler(self, params: SamplingParams, seed: int):
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if params.grammar:  # first, so that every later step only sees tokens the grammar allows
            grammar = L.llama_sampler_init_grammar(self.vocab, params.grammar.encode(), b"root")
            if not grammar:
                L.llama_sampler_free(chain)
                raise ValueError("llama.cpp rejected the GBNF grammar")
            L.llama_sampler_chain_add(chain, grammar)
        if params.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    # -- batched decoding --------------------------------------------------------------------------------------
    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1
        return i

    def generate(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        L = self.L
        results = [GenerationResult(completions=[None] * params.n) for _ in prompts]
        tokens = [self.tokenize(p) for p in prompts]
        base_seed = params.seed if params.seed is not None else random.randrange(2**31)
        queue = deque()
        for i, toks in enumerate(tokens):
            if len(toks) + params.max_tokens > self.n_ctx:
                results[i] = GenerationResult(error=f"prompt of {len(toks)} tokens + max_tokens exceeds n_ctx "
                                                    f"{self.n_ctx}")
                continue
            queue.extend((i, k) for k in range(params.n))
        slots: list[_Slot | None] = [None] * self.n_parallel
        used = 0
        while queue or any(slots):
            for s in range(self.n_parallel):  # admit new prompts into free slots while the KV cache has room
                if slots[s] is None and queue:
                    i, k = queue[0]
                    need = len(tokens[i]) + params.max_tokens
                    if used + need > self.n_ctx:
                        break
                    queue.popleft()
                    L.llama_memory_seq_rm(self.mem, s, -1, -1)
                    # per prompt, not per position in this call: the same prompt samples the same text however
                    # the work was split into calls, batches or tasks
                    seed = (base_seed * 1_000_003 + zlib.crc32(prompts[i].encode()) * 7919 + k) & 0x7FFFFFFF
                    slots[s] = _Slot((i, k), list(tokens[i]), need, self._sampler(params, seed))
                    used += need
            self.batch.n_tokens = 0
            budget = 512
            for s, slot in enumerate(slots):  # one new token per generating slot
                if slot is not None and not slot.pending:
                    slot.logit_index = self._add(slot.out[-1], slot.pos, s, True)
                    slot.pos += 1
                    budget -= 1
            for s, slot in enumerate(slots):  # then as much prompt as fits
                if slot is None or not slot.pending or budget <= 0:
                    continue
                take = slot.pending[:budget]
                del slot.pending[:len(take)]
                for j, tok in enumerate(take):
                    last = not slot.pending and j == len(take) - 1
                    idx = self._add(tok, slot.pos, s, last)
                    slot.pos += 1
                    if last:
                        slot.logit_index = idx
                budget -= len(take)
            if (rc := L.llama_decode(self.ctx, self.batch)) != 0:
                raise FatalBackendError(_decode_failed(rc))
            for s, slot in enumerate(slots):
                if slot is None or slot.pending or slot.logit_index < 0:
                    continue
                tok = L.llama_sampler_sample(slot.sampler, self.ctx, slot.logit_index)
                slot.logit_index = -1
                finish = None
                if L.llama_vocab_is_eog(self.vocab, tok):
                    finish = "stop"
                else:
                    slot.out.append(tok)
                    slot.text += self._piece(tok)
                    self.tokens_generated += 1
                    if params.stop and truncate_at_stop(slot.text.decode("utf-8", "ignore"), params.stop)[1]:
                        finish = "stop"
                    elif len(slot.out) >= params.max_tokens:
                        finish = "length"
                if finish:
                    text, _ = truncate_at_stop(slot.text.decode("utf-8", "ignore"), params.stop)
                    i, k = slot.job
                    results[i].completions[k] = Completion(text, finish, len(slot.out))
                    L.llama_sampler_free(slot.sampler)
                    L.llama_memory_seq_rm(self.mem, s, -1, -1)
                    used -= slot.reserved
                    slots[s] = None
        return results

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        """log p(continuation tokens | context) per request, with shared prefixes computed once.

        The workload repeats contexts (one text scored with several instructions; one empty-text prompt shared
        by every instruction), so requests are sorted by their tokens and packed, up to n_parallel at a time,
        into a prefix tree: a token shared by several requests is decoded once, in one cell of the unified
        KV cache that all their sequences read (a multi-sequence batch entry), and logits are asked for only
        at positions whose next token is scored. Equal to `score_sequential` within llama.cpp's kernel
        rounding, which moves with a batch's shape (see the tests and benchmarks/bench_scoring.py).
        """
        toks = [(self.tokenize(c), self.tokenize(x, add_bos=False)) for c, x in requests]
        scores: list[Score | None] = [None] * len(requests)
        todo = []
        for i, (ctx, cont) in enumerate(toks):
            if len(ctx) + len(cont) > self.n_ctx:
                scores[i] = Score(error=f"{len(ctx) + len(cont)} tokens exceed n_ctx {self.n_ctx}")
            elif not cont:
                scores[i] = Score(0.0, 0)
            else:
                todo.append(i)
        # Sorted by tokens, a request that is a prefix of another sits just before it and can ride on its
        # sequence: its scored positions are nodes of the longer request's path (a clause of an instruction,
        # the same pair twice). Only the others ("leaves") need a sequence of their own.
        todo.sort(key=lambda i: toks[i][0] + toks[i][1])
        fulls = [toks[i][0] + toks[i][1] for i in todo]
        wave: list[int] = []
        leaves = cells = 0
        for k, i in enumerate(todo):
            full = fulls[k]
            new_cells = len(full) - (_common_prefix(fulls[k - 1], full) if wave else 0)
            leaf = k + 1 == len(todo) or _common_prefix(full, fulls[k + 1]) < len(full)
            # +1: whichever request ends a wave needs a sequence, even one that would have ridden on the next
            if wave and (leaves + 1 > self.n_parallel or cells + new_cells > self.n_ctx):
                self._score_wave(wave, toks, scores)
                wave, leaves, cells, new_cells = [], 0, 0, len(full)
            wave.append(i)
            leaves += leaf
            cells += new_cells
        if wave:
            self._score_wave(wave, toks, scores)
        return scores

    def _score_wave(self, wave: list[int], toks: list[tuple[list[int], list[int]]], scores: list) -> None:
        """Decode the prefix tree of a wave of requests (sorted by tokens) and sum each request's scores.

        Every node (a token at a position after a given prefix) is one batch entry whose sequence ids are the
        leaves below it, so the KV cell it fills is read by all of them; a request that is a prefix of the
        next one is scored on that one's nodes."""
        L = self.L
        if self.tree_batch is None:
            self.tree_batch = L.llama_batch_init(512, 0, self.n_parallel)
        fulls = [toks[i][0] + toks[i][1] for i in wave]
        index: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        nodes: list[list] = []  # [token, pos, seq ids, wants logits]
        wanted: dict[int, list[tuple[int, int]]] = {}  # node -> [(request, next token)]
        seq = 0
        for k in range(len(wave) - 1, -1, -1):  # from the last, so a prefix request finds its leaf's seq
            i, full = wave[k], fulls[k]
            if k + 1 < len(wave) and _common_prefix(full, fulls[k + 1]) == len(full):
                seq_of = None  # rides on the next request's path
            else:
                seq_of = seq
                seq += 1
            n_ctx_toks = len(toks[i][0])
            parent = -1
            for pos, tok in enumerate(full):
                node = index.get((parent, tok))
                if node is None:
                    node = index[(parent, tok)] = len(nodes)
                    nodes.append([tok, pos, [], False])
                if seq_of is not None:
                    nodes[node][2].append(seq_of)
                if n_ctx_toks - 1 <= pos < len(full) - 1:
                    nodes[node][3] = True
                    wanted.setdefault(node, []).append((i, full[pos + 1]))
                parent = node
        totals = dict.fromkeys(wave, 0.0)
        b = self.tree_batch
        L.llama_memory_seq_rm(self.mem, -1, -1, -1)
        for start in range(0, len(nodes), 512):  # a node is made after its parent, so chunks stay causal
            chunk = range(start, min(start + 512, len(nodes)))
            b.n_tokens = 0
            for j, n in enumerate(chunk):
                tok, pos, seqs, logits = nodes[n]
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, len(seqs), logits
                for k, s in enumerate(seqs):
                    b.seq_id[j][k] = s
            b.n_tokens = len(chunk)
            rc = L.llama_decode(self.ctx, b)
            if rc != 0:
                raise FatalBackendError(_decode_failed(rc))
            for j, n in enumerate(chunk):
                if nodes[n][3]:
                    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, j), shape=(self.n_vocab,))
                    m = logits.max()
                    log_z = m + np.log(np.exp(logits - m).sum())
                    for i, nxt in wanted[n]:
                        totals[i] += float(logits[nxt] - log_z)
        L.llama_memory_seq_rm(self.mem, -1, -1, -1)
        for i in wave:
            scores[i] = Score(totals[i], len(toks[i][1]))

    def score_sequential(self, requests: list[tuple[str, str]]) -> list[Score]:
        """The reference path: one request at a time on sequence 0, nothing shared (tests and benchmarks)."""
        L = self.L
        scores = []
        for context, continuation in requests:
            ctx_toks = self.tokenize(context)
            cont_toks = self.tokenize(continuation, add_bos=False)
            full = ctx_toks + cont_toks
            if len(full) > self.n_ctx:
                scores.append(Score(error=f"{len(full)} tokens exceed n_ctx {self.n_ctx}"))
                continue
            L.llama_memory_seq_rm(self.mem, -1, -1, -1)
            total, pos = 0.0, 0
            while pos < len(full):
                self.batch.n_tokens = 0
                chunk = full[pos:pos + 512]
                for j, tok in enumerate(chunk):  # logits wanted where the next token is a continuation token
                    self._add(tok, pos + j, 0, pos + j >= len(ctx_toks) - 1 and pos + j < len(full) - 1)
                if (rc := L.llama_decode(self.ctx, self.batch)) != 0:
                    raise FatalBackendError(_decode_failed(rc))
                for j in range(len(chunk)):
                    p = pos + j
                    if self.batch.logits[j]:
                        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, j), shape=(self.n_vocab,))
                        m = logits.max()
                        total += float(logits[full[p + 1]] - m - np.log(np.exp(logits - m).sum()))
                pos += len(chunk)
            scores.append(Score(total, len(cont_toks)))
        L.llama_memory_seq_rm(self.mem, -1, -1, -1)
        return scores

    def option_logprobs(self, prompts: list[str], options: tuple[str, ...]) -> list[OptionScores]:
        """Single-token options: one prefill per prompt with logits at its last position only.

        One prompt per decode rather than several sequences packed together: prefill is compute-bound
        either way (same speed, measured), and this is simpler. Note that llama.cpp's CPU kernels round
        differently with the number of tokens in a batch: the same log-probability comes out up to ~0.3 nats
        apart between a 243- and a 244-token batch (measured), so scores are stable only to that level.
        """
        option_ids = [self.tokenize(o, add_bos=False) for o in options]
        if any(len(ids) != 1 for ids in option_ids):
            return super().option_logprobs(prompts, options)
        option_ids = [ids[0] for ids in option_ids]
        L = self.L
        out = []
        for prompt in prompts:
            tokens = self.tokenize(prompt)
            if len(tokens) > self.n_ctx:
                out.append(OptionScores(error=f"prompt of {len(tokens)} tokens exceeds n_ctx {self.n_ctx}"))
                continue
            L.llama_memory_seq_rm(self.mem, -1, -1, -1)
            for start in range(0, len(tokens), 512):
                self.batch.n_tokens = 0
                for pos in range(start, min(start + 512, len(tokens))):
                    self._add(tokens[pos], pos, 0, pos == len(tokens) - 1)
                if (rc := L.llama_decode(self.ctx, self.batch)) != 0:
                    raise FatalBackendError(_decode_failed(rc))
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            m = logits.max()
            log_z = m + np.log(np.exp(logits - m).sum())
            out.append(OptionScores([float(logits[t] - log_z) for t in option_ids]))
        L.llama_memory_seq_rm(self.mem, -1, -1, -1)
        return out

    def close(self) -> None:
        L = self.L
        for name in ("batch", "tree_batch"):
            if getattr(self, name, None) is not None:
                L.llama_batch_free(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "ctx", None):
            L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "adapter", None):
            L.llama_adapter_lora_free(self.adapter)
            self.adapter = None
        if getattr(self, "model", None):
            L.llama_model_free(self.model)
            self.model = None

    def __del__(self):  # at interpreter exit the library may already be unloaded; nothing left to free then
        with contextlib.suppress(Exception):
            self.close()


def _decode_failed(rc: int) -> str:
    """Why llama_decode failed. What one record can cause (a prompt longer than n_ctx) is refused per record
    before decoding, so a failure here is the backend's, not a record's."""
    why = {1: "no room in the KV cache (lower n_parallel or raise n_ctx)", 2: "aborted"}.get(
        rc, "invalid batch" if rc == -1 else "llama.cpp error")
    return f"llama_decode failed with code {rc}: {why}"


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _quiet(level, text, user_data):  # llama.cpp prints every tensor load otherwise
    if level >= 4 and os.environ.get("XINSTRUCT_LLAMA_LOG"):
        print(text.decode("utf-8", "ignore"), end="")


try:
    import llama_cpp as _L
    _QUIET_LOG = _L.llama_log_callback(_quiet)
except ImportError:  # pragma: no cover
    _QUIET_LOG = None
