"""The bundled generator: its training recipe and its held-out scores. Run from the repository root.

    .venv/bin/python scripts/bundled_generator.py train [--epochs 0.5]   # ~45 min on 2 cores with AVX512-BF16
    .venv/bin/python scripts/bundled_generator.py eval                 # base few-shot, demo-trained, bundled

Training data (seed/parallel.py: generator_pairs): the project's English instructions for FLORES-200 passages
(398 train ids, the 10 paper languages) and for XQuAD paragraphs (192 train ids; hi, th, tr, vi), paired with the
passages in ../shared/data/text (read there, never copied into the repository), and the bundled demo seed pairs.
Held out: 37 FLORES ids in 10 languages and 48 XQuAD ids in 4. The LoRA adapter (PEFT and GGUF) and
recipe.json (the data fingerprint, settings, loss, time, machine) are written to src/xinstruct/data/generator/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "text"
OUT = ROOT / "src" / "xinstruct" / "data" / "generator"
WORK = ROOT / "runs" / "bundled-generator"


def data_fingerprint(pairs: list[dict]) -> str:
    """sha256 of the (language, instruction, response) triples, in order: what the adapter was made from."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p["lang"], p["instruction"], p["output"]], ensure_ascii=False).encode())
    return h.hexdigest()


def train(args) -> None:
    from collections import Counter

    from xinstruct.config import TrainConfig
    from xinstruct.core.machine import machine
    from xinstruct.seed.parallel import generator_pairs
    from xinstruct.train.sft import set_cpu_threads, train_generator

    pairs = generator_pairs(SHARED, "train")
    cfg = TrainConfig(epochs=args.epochs, max_length=512, batch_size=4, learning_rate=args.lr, save_steps=100)
    set_cpu_threads()
    started = time.perf_counter()
    summary = train_generator(pairs, cfg, WORK / "train")
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(summary["gguf_lora"], OUT / "generator-lora.gguf")
    if (OUT / "adapter").exists():
        shutil.rmtree(OUT / "adapter")
    shutil.copytree(summary["adapter_dir"], OUT / "adapter", ignore=shutil.ignore_patterns(
        "tokenizer*", "special_tokens_map.json", "chat_template*", "README.md"))
    ship_adapter_config(OUT / "adapter" / "adapter_config.json")
    recipe = {"data_fingerprint": data_fingerprint(pairs), "pairs": len(pairs),
              "by_source": dict(Counter(p["source"].split(":")[0] + ":" + Path(p["source"]).parent.name
                                        if p["source"].startswith("parallel") else p["source"] for p in pairs)),
              "by_language": dict(sorted(Counter(p["lang"] for p in pairs).items())),
              "train": cfg.model_dump(mode="json", exclude={"save_steps"}),
              "too_long": summary["too_long"], "steps": summary["steps"], "train_loss": summary["train_loss"],
              "seconds": round(time.perf_counter() - started), "machine": machine(),
              "command": f"scripts/bundled_generator.py train --epochs {args.epochs:g} --lr {args.lr:g}"}
    (OUT / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: recipe[k] for k in ("pairs", "steps", "train_loss", "seconds")}))


def ship_adapter_config(path: Path) -> None:
    """The base model by its hub name, not this machine's dequantized copy (loading passes the base anyway)."""
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = "google/gemma-3-270m"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def demo_trained() -> Path:
    """The generator the demo trains (its seed pairs, its settings), as a reference point."""
    from xinstruct.io.files import read_jsonl
    from xinstruct.pipeline.demo import demo_config
    from xinstruct.seed import bundled_path
    from xinstruct.train.sft import set_cpu_threads, train_generator

    cfg = demo_config().train
    pairs = [{**r, "lang": lang} for lang in ("sw", "th", "hi")
             for r in read_jsonl(bundled_path(f"demo/{lang}/seed.jsonl"))]
    set_cpu_threads()
    return Path(train_generator(pairs, cfg, WORK / "demo-trained", progress=False)["gguf_lora"])


def evaluate(args) -> None:
    from xinstruct.config import model_config
    from xinstruct.experiments.eval_generator import pick_shots, score, write_instructions
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.seed.parallel import generator_pairs

    heldout, train_pairs = generator_pairs(SHARED, "heldout"), generator_pairs(SHARED, "train")
    # greedy texts batched across prompts (llamacpp.batch_invariant off): ~2.5x faster, and a measurement needs
    # no byte-for-byte reruns
    fast = {"batch_invariant": False, "n_parallel": 16}
    systems = {"base few-shot": lambda: (model_config(**fast), True),
               "demo-trained": lambda: (model_config(lora=str(demo_trained()), **fast), False),
               "bundled": lambda: (model_config(lora=str(OUT / "generator-lora.gguf"), **fast), False)}
    path = WORK / "heldout.json"
    report: dict = json.loads(path.read_text()) if path.exists() else {}  # systems not asked for stay as they were
    for system in args.systems.split(","):
        cfg, few_shot = systems[system]()
        with LlamaCppBackend(cfg) as backend:
            for corpus in args.corpora.split(","):
                for lang in sorted({p["lang"] for p in heldout if corpus in p["source"]}):
                    rows = [p for p in heldout if p["lang"] == lang and corpus in p["source"]]
                    shots = pick_shots([p for p in train_pairs if p["lang"] == lang and corpus in p["source"]])
                    hyps = write_instructions(backend, [p["output"] for p in rows], shots if few_shot else None)
                    result = score(hyps, [p["instruction"] for p in rows])
                    result["samples"] = [[h, p["instruction"]] for h, p in zip(hyps[:4], rows[:4])]
                    report[f"{system}/{corpus}/{lang}"] = result
                    print(system, corpus, lang, result["chrf"], result["cosine"], flush=True)
            path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    for corpus in ("flores", "xquad"):
        langs = sorted({k.split("/")[2] for k in report if f"/{corpus}/" in k})
        print(f"\n{corpus} held out: chrF / MiniLM cosine")
        print("| system | " + " | ".join(langs) + " | mean |")
        print("|---|" + "---|" * (len(langs) + 1))
        for system in systems:
            if not all(f"{system}/{corpus}/{lang}" in report for lang in langs):
                continue
            cells = [report[f"{system}/{corpus}/{lang}"] for lang in langs]
            print(f"| {system} | " + " | ".join(f"{c['chrf']:.1f} / {c['cosine']:.2f}" for c in cells)
                  + f" | {sum(c['chrf'] for c in cells) / len(cells):.1f} / "
                    f"{sum(c['cosine'] for c in cells) / len(cells):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=float, default=0.5)
    t.add_argument("--lr", type=float, default=2e-4)
    e = sub.add_parser("eval")
    e.add_argument("--systems", default="base few-shot,demo-trained,bundled")
    e.add_argument("--corpora", default="flores,xquad")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"no shared data at {SHARED}: the recipe reads its passages there")
    {"train": train, "eval": evaluate}[args.command](args)


if __name__ == "__main__":
    main()
