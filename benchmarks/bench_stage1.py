"""Stage I throughput, one summary line each:

1. generation: the whole xinstruct generation stage (prompting, llama.cpp, output checks, journal commits)
   against raw llama.cpp on the same prompts at its best batch setting (a static batch through the
   low-level API, swept over sizes). Ratio of generated tokens per second; target >= 0.95.
2. corpus: the corpus stage (read, NFC, length, quality, language ID, near-dedup) in documents/second on
   one core, over every text file in ../shared/data.

    .venv/bin/python benchmarks/bench_stage1.py [--docs 48] [--max-tokens 64] [--cpu-repack auto|true|false]

--cpu-repack sets llama.cpp's extra weight layouts for both sides (auto: on, but off on CPUs with AMX; the lines say
which CPU variant and weight buffers were used).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


CPU_REPACK: dict = {"value": None}


def raw_llamacpp(prompts: list[str], n_seq: int, max_tokens: int, seed: int = 0) -> tuple[int, float]:
    """Plain llama-cpp-python: groups of n_seq prompts, prefilled then decoded in lock-step. (tokens, secs)"""
    import os

    from xinstruct.models import llamacpp_lib
    from xinstruct.models.bundled import bundled_gguf

    L = llamacpp_lib.load()
    model, buffers = llamacpp_lib.load_model(L, str(bundled_gguf()), CPU_REPACK["value"])
    print(f"  llama.cpp kernels {llamacpp_lib.loaded_variant() or 'built in'}, weights in {', '.join(buffers)}")
    vocab = L.llama_model_get_vocab(model)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max, cp.kv_unified = 16384, 512, 512, n_seq, True
    cp.n_threads = cp.n_threads_batch = len(os.sched_getaffinity(0))
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(512, 0, 1)

    def tok(text):
        raw = text.encode()
        buf = (L.llama_token * (len(raw) + 8))()
        return list(buf[:L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)])

    def add(t, pos, seq, logits):
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, pos, 1, logits
        batch.seq_id[i][0] = seq
        batch.n_tokens += 1
        return i

    generated, start = 0, time.perf_counter()
    for g in range(0, len(prompts), n_seq):
        group = [tok(p) for p in prompts[g:g + n_seq]]
        L.llama_memory_clear(mem, True)
        samplers, last_idx = [], {}
        for s, toks in enumerate(group):
            chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(0.9, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(0.7))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed + g + s))
            samplers.append(chain)
            for c in range(0, len(toks), 512):  # prefill, one sequence at a time in 512-token chunks
                batch.n_tokens = 0
                chunk = toks[c:c + 512]
                for j, t in enumerate(chunk):
                    idx = add(t, c + j, s, c + j == len(toks) - 1)
                L.llama_decode(ctx, batch)
            last_idx[s] = idx
            # sample the first token now, before the next prefill overwrites the logits
            last_idx[s] = L.llama_sampler_sample(chain, ctx, idx)
        pos = {s: len(t) for s, t in enumerate(group)}
        nxt = dict(last_idx)
        done = {s for s, t in nxt.items() if L.llama_vocab_is_eog(vocab, t)}
        counts = {s: 1 for s in nxt}
        generated += len(nxt) - len(done)
        while len(done) < len(group):
            batch.n_tokens = 0
            rows = {}
            for s in range(len(group)):
                if s not in done:
                    rows[s] = add(nxt[s], pos[s], s, True)
                    pos[s] += 1
            L.llama_decode(ctx, batch)
            for s, i in rows.items():
                t = L.llama_sampler_sample(samplers[s], ctx, i)
                counts[s] += 1
                if L.llama_vocab_is_eog(vocab, t) or counts[s] > max_tokens:
                    done.add(s)
                else:
                    nxt[s] = t
                    generated += 1
        for chain in samplers:
            L.llama_sampler_free(chain)
    secs = time.perf_counter() - start
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return generated, secs


def xinstruct_stage(docs: list[dict], n_parallel: int, max_tokens: int, batch_invariant: bool) -> tuple[int, float, dict]:
    from xinstruct.config import GenerateConfig, model_config
    from xinstruct.generate.candidates import generate_candidates
    from xinstruct.models.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(model_config(n_ctx=16384, n_parallel=n_parallel, cpu_repack=CPU_REPACK["value"],
                                          batch_invariant=batch_invariant))
    # no stop strings: both sides then decode to EOS or max_tokens, so they do the same amount of work
    cfg = GenerateConfig(max_tokens=max_tokens, batch_docs=len(docs), n_per_doc=1, stop=[])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        stats = {}
        for lang in sorted({d["lang"] for d in docs}):
            for k, v in generate_candidates([d for d in docs if d["lang"] == lang], lang, backend, cfg,
                                            Path(out)).items():
                stats[k] = stats.get(k, 0) + v if isinstance(v, (int, float)) else v
        secs = time.perf_counter() - start
    tokens = backend.tokens_generated
    backend.close()
    return tokens, secs, stats


def bench_generation(n_docs: int, max_tokens: int) -> None:
    from xinstruct.prompts import generation_prompt

    docs = []
    for lang in ("sw", "th", "hi"):
        rows = [json.loads(line) for line in (SHARED / "text" / "flores_sib200" / f"{lang}.jsonl").read_text().splitlines()]
        docs += [{"id": r["id"], "text": r["text"], "lang": lang, "source": "flores"} for r in rows[:n_docs // 3]]
    prompts = [generation_prompt(d["text"]) for d in docs]
    best = (0.0, 0)
    for n_seq in (16, 32):
        tokens, secs = raw_llamacpp(prompts, n_seq, max_tokens)
        print(f"  raw llama.cpp, {n_seq:2d} sequences/batch: {tokens} tokens in {secs:.1f}s = "
              f"{tokens / secs:.1f} tok/s", flush=True)
        best = max(best, (tokens / secs, n_seq))
    # the stage runs language by language; its slot count is raw llama.cpp's best batch size. Two modes: the
    # default (batch_invariant: one prompt's samples a call, texts that do not move with the batch) and batched
    for invariant in (True, False):
        tokens, secs, _ = xinstruct_stage(docs, best[1], max_tokens, invariant)
        ours = tokens / secs
        mode = "batch_invariant (default)" if invariant else f"batched, {best[1]} slots"
        print(f"  xinstruct generate stage, {mode}: {tokens} tokens in {secs:.1f}s = {ours:.1f} tok/s", flush=True)
        print(f"GENERATION [{mode}]: xinstruct {ours:.1f} tok/s vs raw llama.cpp best {best[0]:.1f} tok/s "
              f"({best[1]} seqs) on {len(docs)} prompts -> ratio {ours / best[0]:.3f}", flush=True)


def bench_corpus() -> None:
    from xinstruct.config import CorpusConfig, ExecutorConfig, InputSpec
    from xinstruct.core.executors import quiet_datatrove
    from xinstruct.corpus.pipeline import run_corpus

    quiet_datatrove()
    files = sorted((SHARED / "text").glob("*/*.jsonl"))
    n_docs = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    inputs = [InputSpec(path=str(f), lang=f.stem) for f in files]
    langs = sorted({f.stem for f in files})
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = run_corpus(CorpusConfig(inputs=inputs), Path(out), langs, ExecutorConfig(workers=1))
        secs = time.perf_counter() - start
    kept = sum(v["kept"] for v in summary.values())
    print(f"CORPUS: {n_docs} documents ({len(files)} files, {len(langs)} languages) in {secs:.1f}s on 1 core "
          f"-> {n_docs / secs:.0f} documents/s per core ({kept} kept)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=96, help="split evenly over sw, th, hi")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--only", choices=["generation", "corpus"])
    ap.add_argument("--cpu-repack", choices=["auto", "true", "false"], default="auto")
    args = ap.parse_args()
    CPU_REPACK["value"] = {"auto": None, "true": True, "false": False}[args.cpu_repack]
    if not SHARED.is_dir():
        sys.exit(f"skipped: {SHARED} is absent")
    if args.only != "corpus":
        bench_generation(args.docs, args.max_tokens)
    if args.only != "generation":
        bench_corpus()
