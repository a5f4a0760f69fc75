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
import os
import random
import zlib
from collections import deque
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from xinstruct.config import LlamaCppConfig
from xinstruct.models import llamacpp_lib
from xinstruct.models.base import (
    Backend,
    Completion,
    FatalBackendError,
    GenerationResult,
    SamplingParams,
    Score,
    Sources,
    truncate_at_stop,
)
from xinstruct.models.bundled import bundled_gguf
from xinstruct.models.identity import llamacpp_model_id

# score(): contexts are decoded in blocks of this many tokens, each block a cache entry that requests starting with
# the same tokens share. Changing it changes the scores' rounding (part of the code, so of every fingerprint).
SCORE_BLOCK = 64


@dataclass
class _Prompt:
    length: int  # its cache cells, shared by its samples
    samples: int  # samples still generating


@dataclass
class _Slot:
    job: tuple[int, int]  # (prompt index, sample index)
    prompt: _Prompt
    reserved: int  # KV cells reserved for what it generates (max_tokens)
    sampler: object
    pos: int = 0
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    logit_index: int = -1
    finish: str | None = None


class LlamaCppBackend(Backend):
    name = "llamacpp"
    capabilities = frozenset({"generate", "loglikelihood", "option_logprobs", "grammar"})

    def __init__(self, cfg: LlamaCppConfig, n_parallel: int | None = None):
        L = llamacpp_lib.load()
        self.L = L
        self.cfg = cfg
        self.model_path = str(bundled_gguf()) if cfg.model is None else cfg.model
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"no GGUF model at {self.model_path}")
        self.n_parallel = n_parallel or cfg.n_parallel
        threads = cfg.n_threads or max(1, len(os.sched_getaffinity(0)))
        self.model, self.weight_buffers = llamacpp_lib.load_model(L, self.model_path, cfg.cpu_repack)
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
        self.tokens_generated = 0

    @cached_property
    def model_id(self) -> str:
        """Computed once: it hashes the adapter file, and generation stamps it on every record."""
        return llamacpp_model_id(self.cfg)

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
        """n completions per prompt; see generate_candidates (batch_invariant) and _generate_together."""
        if self.cfg.batch_invariant:
            return self.generate_candidates(prompts, Sources(params))
        results = [GenerationResult(completions=[None] * params.n) for _ in prompts]
        tokens = [self.tokenize(p) for p in prompts]
        todo = [i for i, toks in enumerate(tokens) if not self._too_long(results, i, len(toks), params.max_tokens)]
        seeds = {i: [_seed(params, prompts[i], k) for k in range(params.n)] for i in todo}
        self._generate_together(todo, tokens, seeds, params, results)
        return results

    def generate_candidates(self, prompts: list[str], sources: Sources) -> list[GenerationResult]:
        """Samples, a greedy text and PMI-guided texts for each prompt (Sources), in that order.

        Every llama_decode call holds one prompt's streams only, on a cache that holds only that prompt's cells:
        the prompt but its last token is decoded once and shared by the streams (llama_memory_seq_cp), the prompt
        without its text likewise for the guided streams' partners; then each step decodes one token for every
        stream, finished ones included (their tokens are dropped), so each call's batch is the same function of
        the prompt and the sources. A prompt's texts then do not depend on the other prompts, the batch size,
        a resume or the shard split. (llama.cpp's CPU kernels round with a batch's shape and the cache's layout:
        7 of 24 greedy texts changed between 1 and 4 prompts a batch, measured.) Each sample's sampler is seeded
        from the prompt and the sample's index, never from its place in the call."""
        params = sources.sampled
        if not self.cfg.batch_invariant and not sources.greedy and not sources.guided:
            return self.generate(prompts, params)
        labels = sources.labels()
        uncond = self.tokenize(sources.unconditional) if sources.guided else []
        results = [GenerationResult(completions=[None] * len(labels)) for _ in prompts]
        for i, prompt in enumerate(prompts):
            tokens = self.tokenize(prompt)
            streams = [(k, label, _seed(params, prompt, k)) for k, label in enumerate(labels)]
            for group in _stream_groups(streams, self.n_parallel):
                rows = sum(2 if label.startswith("guided") else 1 for _, label, _ in group)
                if self._too_long(results, i, len(tokens) + (len(uncond) if sources.guided else 0),
                                  rows * params.max_tokens):
                    break
                self._decode_group(i, tokens, uncond, group, sources, results)
        return results

    def _too_long(self, results: list, i: int, n_prompt: int, n_generated: int) -> bool:
        if n_prompt + n_generated <= self.n_ctx:
            return False
        results[i] = GenerationResult(error=f"prompt of {n_prompt} tokens + max_tokens exceeds n_ctx {self.n_ctx}")
        return True

    def _decode_group(self, i: int, tokens: list[int], uncond: list[int], group: list, sources: Sources,
                      results: list) -> None:
        """One group of a prompt's streams, decoded together on an empty cache (see generate_candidates)."""
        L, params = self.L, sources.sampled
        guided = [j for j, (_, label, _) in enumerate(group) if label.startswith("guided")]
        n = len(group)
        slots = []
        for k, label, seed in group:
            if label == "sample":
                sampler = self._sampler(params, seed)
            elif label == "greedy":
                sampler = self._sampler(replace(params, temperature=0.0), seed)
            else:
                sampler = None
            slots.append(_Slot((i, k), _Prompt(len(tokens), 1), params.max_tokens, sampler))
        alphas = {j: float(group[j][1].split(":", 1)[1]) for j in guided}
        try:
            L.llama_memory_clear(self.mem, True)
            self._prefill(tokens[:-1], 0, logits=False)
            for seq in range(1, n):
                L.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
            if guided:  # the prompt without its text, after the prompt's cells, shared by the guided partners
                self._prefill(uncond[:-1], n, logits=False)
                for seq in range(n + 1, n + len(guided)):
                    L.llama_memory_seq_cp(self.mem, n, seq, -1, -1)
            feed, pos = [tokens[-1]] * n, len(tokens) - 1
            partner_feed, partner_pos = [uncond[-1] if uncond else 0] * len(guided), len(uncond) - 1
            while any(slot.finish is None for slot in slots):
                self.batch.n_tokens = 0
                for seq, tok in enumerate(feed):
                    self._add(tok, pos, seq, True)
                for g, tok in enumerate(partner_feed):
                    self._add(tok, partner_pos, n + g, True)
                if (rc := L.llama_decode(self.ctx, self.batch)) != 0:
                    raise FatalBackendError(_decode_failed(rc))
                for seq, slot in enumerate(slots):
                    if slot.sampler is not None:
                        feed[seq] = L.llama_sampler_sample(slot.sampler, self.ctx, seq)
                    else:
                        g = guided.index(seq)
                        feed[seq] = partner_feed[g] = self._guided_token(seq, n + g, alphas[seq],
                                                                         sources.plausibility)
                    if slot.finish is None:
                        self._accept(slot, feed[seq], params, results)
                pos, partner_pos = pos + 1, partner_pos + 1
        finally:
            for slot in slots:
                if slot.sampler is not None:
                    L.llama_sampler_free(slot.sampler)
            L.llama_memory_clear(self.mem, True)

    def _guided_token(self, row: int, partner_row: int, alpha: float, plausibility: float) -> int:
        """Among tokens with p ≥ plausibility × max p after the prompt (batch entry `row`), the one maximising
        (1+α)·log p(token | prompt) − α·log p(token | prompt without its text) (entry `partner_row`)."""
        conditional, log_z = self._logprobs(row)
        unconditional, log_z_u = self._logprobs(partner_row)
        lc = conditional.astype(np.float64) - log_z
        plausible = np.flatnonzero(lc >= lc.max() + np.log(plausibility))
        score = (1 + alpha) * lc[plausible] - alpha * (unconditional[plausible].astype(np.float64) - log_z_u)
        return int(plausible[int(np.argmax(score))])

    def _generate_together(self, todo: list[int], tokens: list[list[int]], seeds: dict, params: SamplingParams,
                           results: list) -> None:
        """Up to n_parallel sequences a step: each prompt prefilled alone and shared by its samples
        (llama_memory_seq_cp), then one token per generating sequence a call."""
        L = self.L
        queue: deque[tuple[int, list[int]]] = deque()  # (prompt, the samples to draw together)
        for i in todo:
            samples = list(range(params.n))
            queue.extend((i, samples[k:k + self.n_parallel]) for k in range(0, params.n, self.n_parallel))
        slots: list[_Slot | None] = [None] * self.n_parallel
        used = 0
        while queue or any(slots):
            while queue:  # admit prompts while there are free slots for all their samples and room in the cache
                i, ks = queue[0]
                free = [s for s, slot in enumerate(slots) if slot is None]
                need = len(tokens[i]) + len(ks) * params.max_tokens
                if len(free) < len(ks) or used + need > self.n_ctx:
                    break
                queue.popleft()
                used += need
                seqs = free[:len(ks)]
                for seq in seqs:
                    L.llama_memory_seq_rm(self.mem, seq, -1, -1)
                last = self._prefill(tokens[i], seqs[0])
                for seq in seqs[1:]:  # before any sample can end and free seqs[0]
                    L.llama_memory_seq_cp(self.mem, seqs[0], seq, -1, -1)
                shared = _Prompt(len(tokens[i]), len(ks))
                for seq, k in zip(seqs, ks):
                    slots[seq] = _Slot((i, k), shared, params.max_tokens, self._sampler(params, seeds[i][k]),
                                       pos=len(tokens[i]))
                    used -= self._step(slots, seq, last, params, results)
            if not any(slots):
                continue
            self.batch.n_tokens = 0
            for seq, slot in enumerate(slots):  # one new token per generating sequence
                if slot is not None:
                    slot.logit_index = self._add(slot.out[-1], slot.pos, seq, True)
                    slot.pos += 1
            if (rc := L.llama_decode(self.ctx, self.batch)) != 0:
                raise FatalBackendError(_decode_failed(rc))
            for seq, slot in enumerate(slots):
                if slot is not None:
                    used -= self._step(slots, seq, slot.logit_index, params, results)

    def _prefill(self, tokens: list[int], seq: int, logits: bool = True) -> int:
        """Decode a prompt alone on `seq`, 512 tokens a call from position 0; the batch index of its last logits."""
        for start in range(0, len(tokens), 512):
            self.batch.n_tokens = 0
            chunk = tokens[start:start + 512]
            for j, tok in enumerate(chunk):
                self._add(tok, start + j, seq, logits and start + j == len(tokens) - 1)
            if (rc := self.L.llama_decode(self.ctx, self.batch)) != 0:
                raise FatalBackendError(_decode_failed(rc))
        return self.batch.n_tokens - 1

    def _step(self, slots: list, seq: int, logit_index: int, params: SamplingParams, results: list) -> int:
        """Sample the sequence's next token; when that ends its completion, free the sequence and return the cache
        cells it gives back (else 0)."""
        slot = slots[seq]
        if not self._accept(slot, self.L.llama_sampler_sample(slot.sampler, self.ctx, logit_index), params, results):
            return 0
        self.L.llama_sampler_free(slot.sampler)
        self.L.llama_memory_seq_rm(self.mem, seq, -1, -1)
        slots[seq] = None
        slot.prompt.samples -= 1
        return slot.reserved + (slot.prompt.length if slot.prompt.samples == 0 else 0)

    def _accept(self, slot: _Slot, tok: int, params: SamplingParams, results: list) -> str | None:
        """Add a sampled token to the slot's text; when it ends the completion (end of generation, a stop
        string, max_tokens), record the completion and return why it ended."""
        if self.L.llama_vocab_is_eog(self.vocab, tok):
            slot.finish = "stop"
        else:
            slot.out.append(tok)
            slot.text += self._piece(tok)
            self.tokens_generated += 1
            if params.stop and truncate_at_stop(slot.text.decode("utf-8", "ignore"), params.stop)[1]:
                slot.finish = "stop"
            elif len(slot.out) >= params.max_tokens:
                slot.finish = "length"
        if slot.finish:
            text, _ = truncate_at_stop(slot.text.decode("utf-8", "ignore"), params.stop)
            i, k = slot.job
            results[i].completions[k] = Completion(text, slot.finish, len(slot.out))
        return slot.finish

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        """log p(continuation tokens | context) per request, each token's log-probability and where it starts.

        Batch-invariant by construction: every llama_decode call holds tokens of one request's own path only,
        on a KV cache that holds exactly that path's earlier tokens, so a request's score is a function of
        its own tokens (not of the other requests, their order, the batch size, a resume or a shard split).
        llama.cpp's CPU kernels round differently with a batch's shape and make (measured here, logits of one
        sequence: up to 2.4 apart when other sequences shared its batch), so sharing a batch would not be.

        What is shared is shared whole: a context is decoded in blocks of SCORE_BLOCK tokens from position 0
        and then its remainder, each block a function of the tokens up to its end, so requests that start alike
        (one text with several instructions, one reference text with every instruction) reuse those cells; the
        continuation is decoded on top, alone, and removed. Requests are sorted by tokens so the cells a
        request needs are mostly there already.
        """
        toks = [(self.tokenize(c), self.tokenize(x, add_bos=False)) for c, x in requests]
        scores: list[Score | None] = [None] * len(requests)
        todo = []
        for i, (ctx, cont) in enumerate(toks):
            if len(ctx) + len(cont) > self.n_ctx:
                scores[i] = Score(error=f"{len(ctx) + len(cont)} tokens exceed n_ctx {self.n_ctx}")
            elif not cont:
                scores[i] = Score(0.0, 0, [], [])
            else:
                todo.append(i)
        todo.sort(key=lambda i: toks[i][0] + toks[i][1])
        L = self.L
        L.llama_memory_seq_rm(self.mem, -1, -1, -1)
        chain: list[tuple[tuple[int, ...], bool]] = []  # the blocks in the cache, cells [0, their length)
        first = (None, 0.0)  # (logits, log_z) after the chain's last block, which ends a context
        try:
            for i in todo:
                ctx, cont = toks[i]
                blocks = _context_blocks(ctx)
                keep = 0
                while keep < min(len(chain), len(blocks)) and chain[keep] == blocks[keep]:
                    keep += 1
                if keep < len(chain):
                    L.llama_memory_seq_rm(self.mem, 0, sum(len(b) for b, _ in chain[:keep]), -1)
                    del chain[keep:]
                pos = sum(len(b) for b, _ in chain)
                for block, ends_context in blocks[keep:]:
                    self._decode_alone(block, pos, range(pos + len(block) - 1, pos + len(block)) if ends_context
                                       else range(0))
                    if ends_context:
                        logits, log_z = self._logprobs(len(block) - 1)
                        first = (logits.copy(), log_z)
                    pos += len(block)
                    chain.append((block, ends_context))
                values = [float(first[0][cont[0]]) - first[1]]
                for start in range(0, len(cont) - 1, 512):  # the continuation on top, alone, then removed
                    chunk = cont[start:start + 512]
                    if start + len(chunk) == len(cont):
                        chunk = chunk[:-1]  # the last token is only a target
                    self._decode_alone(chunk, pos + start, range(pos + start, pos + start + len(chunk)))
                    for j in range(len(chunk)):
                        logits, log_z = self._logprobs(j)
                        values.append(float(logits[cont[start + j + 1]]) - log_z)
                if len(cont) > 1:
                    L.llama_memory_seq_rm(self.mem, 0, pos, -1)
                scores[i] = Score(float(sum(values)), len(cont), values, self._offsets(requests[i][1], cont))
        finally:
            L.llama_memory_seq_rm(self.mem, -1, -1, -1)
        return scores

    def _decode_alone(self, tokens, start: int, logits_at: range) -> None:
        """One llama_decode of `tokens` at positions start.. on sequence 0, logits where asked."""
        self.batch.n_tokens = 0
        for j, tok in enumerate(tokens):
            self._add(tok, start + j, 0, start + j in logits_at)
        if (rc := self.L.llama_decode(self.ctx, self.batch)) != 0:
            raise FatalBackendError(_decode_failed(rc))

    def _logprobs(self, j: int) -> tuple[np.ndarray, float]:
        """(logits, log of their normaliser) at batch entry j: log p(token) = logits[token] − log_z."""
        logits = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, j), shape=(self.n_vocab,))
        m = logits.max()
        return logits, float(m + np.log(np.exp(logits - m).sum()))

    def _offsets(self, text: str, tokens: list[int]) -> list[int]:
        """Where each token starts in `text`, in characters (from the tokens' bytes)."""
        raw, out, at = text.encode("utf-8"), [], 0
        for tok in tokens:
            out.append(len(raw[:at].decode("utf-8", "ignore")))
            at += len(self._piece(tok))
        return out

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

    def close(self) -> None:
        L = self.L
        if getattr(self, "batch", None) is not None:
            L.llama_batch_free(self.batch)
            self.batch = None
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


def _seed(params: SamplingParams, prompt: str, k: int) -> int:
    """Sample k's seed: from the prompt and k, so it does not depend on the prompt's place in a call."""
    base = params.seed if params.seed is not None else random.randrange(2**31)
    return (base * 1_000_003 + zlib.crc32(prompt.encode()) * 7919 + k) & 0x7FFFFFFF


def _stream_groups(streams: list, limit: int) -> list[list]:
    """Streams in order, split into groups of at most `limit` sequences (a guided stream takes two)."""
    groups, rows = [[]], 0
    for stream in streams:
        need = 2 if stream[1].startswith("guided") else 1
        if groups[-1] and rows + need > limit:
            groups.append([])
            rows = 0
        groups[-1].append(stream)
        rows += need
    return groups


def _decode_failed(rc: int) -> str:
    """Why llama_decode failed. What one record can cause (a prompt longer than n_ctx) is refused per record
    before decoding, so a failure here is the backend's, not a record's."""
    why = {1: "no room in the KV cache (lower n_parallel or raise n_ctx)", 2: "aborted"}.get(
        rc, "invalid batch" if rc == -1 else "llama.cpp error")
    return f"llama_decode failed with code {rc}: {why}"


def _context_blocks(ctx: list[int]) -> list[tuple[tuple[int, ...], bool]]:
    """A context's tokens as score() decodes them: SCORE_BLOCK-token blocks from position 0, then the rest
    (1 to SCORE_BLOCK tokens, ending the context: its last token's logits are the first continuation token's)."""
    n = (len(ctx) - 1) // SCORE_BLOCK
    return ([(tuple(ctx[k * SCORE_BLOCK:(k + 1) * SCORE_BLOCK]), False) for k in range(n)]
            + [(tuple(ctx[n * SCORE_BLOCK:]), True)])
