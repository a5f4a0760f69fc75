"""The bundled generator: its training recipe and its held-out scores. Run from the repository root.

    .venv/bin/python scripts/bundled_generator.py train [--epochs 1]   # ~1 h on 2 cores with AVX512-BF16
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
    shutil.copytree(summary["adapter_dir"], OUT / "adapter",
                    ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json", "chat_template*"))
    recipe = {"data_fingerprint": data_fingerprint(pairs), "pairs": len(pairs),
              "by_source": dict(Counter(p["source"].split(":")[0] + ":" + Path(p["source"]).parent.name
                                        if p["source"].startswith("parallel") else p["source"] for p in pairs)),
              "by_language": dict(sorted(Counter(p["lang"] for p in pairs).items())),
              "train": cfg.model_dump(mode="json", exclude={"save_steps"}),
              "steps": summary["steps"], "train_loss": summary["train_loss"],
              "seconds": round(time.perf_counter() - started), "machine": machine(),
              "command": f"scripts/bundled_generator.py train --epochs {args.epochs:g} --lr {args.lr:g}"}
    (OUT / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: recipe[k] for k in ("pairs", "steps", "train_loss", "seconds")}))


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
    from xinstruct.generate.quality import pick_shots, score, write_instructions
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.seed.parallel import generator_pairs

    heldout, train_pairs = generator_pairs(SHARED, "heldout"), generator_pairs(SHARED, "train")
    systems = {"base few-shot": (model_config(), True), "demo-trained": (model_config(lora=str(demo_trained())), False),
               "bundled": (model_config(lora=str(OUT / "generator-lora.gguf")), False)}
    report: dict = {}
    for system, (cfg, few_shot) in systems.items():
        with LlamaCppBackend(cfg) as backend:
            for corpus in ("flores", "xquad"):
                for lang in sorted({p["lang"] for p in heldout if corpus in p["source"]}):
                    rows = [p for p in heldout if p["lang"] == lang and corpus in p["source"]]
                    shots = pick_shots([p for p in train_pairs if p["lang"] == lang and corpus in p["source"]])
                    hyps = write_instructions(backend, [p["output"] for p in rows], shots if few_shot else None)
                    result = score(hyps, [p["instruction"] for p in rows])
                    result["samples"] = [[h, p["instruction"]] for h, p in zip(hyps[:4], rows[:4])]
                    report[f"{system}/{corpus}/{lang}"] = result
                    print(system, corpus, lang, result["chrf"], result["cosine"], flush=True)
    (WORK / "heldout.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    for corpus in ("flores", "xquad"):
        langs = sorted({k.split("/")[2] for k in report if f"/{corpus}/" in k})
        print(f"\n{corpus} held out: chrF / MiniLM cosine")
        print("| system | " + " | ".join(langs) + " | mean |")
        print("|---|" + "---|" * (len(langs) + 1))
        for system in systems:
            cells = [report[f"{system}/{corpus}/{lang}"] for lang in langs]
            print(f"| {system} | " + " | ".join(f"{c['chrf']:.1f} / {c['cosine']:.2f}" for c in cells)
                  + f" | {sum(c['chrf'] for c in cells) / len(cells):.1f} / "
                    f"{sum(c['cosine'] for c in cells) / len(cells):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=2e-4)
    sub.add_parser("eval")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"no shared data at {SHARED}: the recipe reads its passages there")
    {"train": train, "eval": evaluate}[args.command](args)


if __name__ == "__main__":
    main()
