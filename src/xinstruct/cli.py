"""The `xinstruct` command: parse arguments, load the config, call a stage. Nothing else lives here."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Annotated

# third-party progress bars and chatter (GGUF de-quantisation, hub, tokenizers) unless --verbose
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we fork datatrove workers after tokenizers load
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import typer
from rich.console import Console
from rich.table import Table

from xinstruct.config import ConfigError, RunConfig, load_config
from xinstruct.core.layout import RunLayout
from xinstruct.languages import PAPER_LANGUAGES

app = typer.Typer(help="Build instruction data for low-resource languages the X-Instruction way "
                       "(native text as responses, model-written English instructions).\n\n"
                       "Stages: corpus → seed → train (generator) → generate (candidates) → refine → "
                       "diversify → export (dataset, card, report). A stage is skipped when nothing it is made "
                       "from changed, and redone (with what follows it) when something did.",
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False)
console = Console()
VERBOSE = {"on": bool(os.environ.get("XINSTRUCT_VERBOSE"))}

ConfigArg = Annotated[Path, typer.Argument(help="YAML run config (see configs/example.yaml), or a run folder "
                                                "(its config.json)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo the stage even if nothing it reads changed")]
LimitRunOpt = Annotated[int | None, typer.Option("--limit", min=1, help="a trial run: the corpus reads at most N "
                                                                         "records of each input file; generate and "
                                                                         "refine take at most N documents "
                                                                         "(candidates) per language")]
PassagesOpt = Annotated[Path, typer.Option(help="folder of parallel FLORES {lang}.jsonl")]
FLORES_DIR = Path("../shared/data/text/flores_sib200")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"xinstruct {version('xinstruct')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="tracebacks, library logs and progress "
                                                                        "bars")] = False,
         show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="print the version and exit")] = False):
    if verbose:
        VERBOSE["on"] = True
        os.environ["XINSTRUCT_VERBOSE"] = "1"
        os.environ["TRANSFORMERS_VERBOSITY"] = "info"
    else:
        quiet_libraries()


def quiet_libraries() -> None:
    """Library warnings a user cannot act on (PEFT's, transformers' GGUF notes) stay out of the console."""
    import warnings

    for module in ("peft", "transformers", "trl", "torch", "accelerate"):
        warnings.filterwarnings("ignore", module=module)


@contextlib.contextmanager
def user_errors(*also: type[Exception]):
    """A user's mistake (bad config, missing file, a model that cannot do what is asked, and the exceptions in
    `also`, e.g. a ValueError naming bad data) is one red line and exit 2; a server that cannot serve, or records
    left to retry, exit 1 (a run folder another command writes to: exit 3, see `writing`). --verbose shows the
    traceback."""
    from xinstruct.io.read import InputError
    from xinstruct.models.base import FatalBackendError, MissingCapability
    from xinstruct.pipeline.run import RunProblem, StageIncomplete

    try:
        yield
    except (ConfigError, FileNotFoundError, InputError, MissingCapability, RunProblem, *also) as e:
        _fail(e, 2)
    except FatalBackendError as e:
        _fail(e, 1, "the model server cannot serve this run; fix it and run the same command again")
    except StageIncomplete as e:
        _fail(e, 1, "run the same command again to retry them (finished work is kept)")


@contextlib.contextmanager
def writing(folder: Path, output: Path | None = None):
    """Hold the run folder's lock while a command writes (core/lock.py): a second writer stops at once with
    exit code 3 and who holds it. An `output` outside the run folder is locked instead."""
    from xinstruct.core.lock import RunFolderBusy, run_folder_lock

    folder = Path(folder)
    if output is not None and not Path(output).resolve().is_relative_to(folder.resolve()):
        folder = Path(output)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_folder_lock(folder))
        except RunFolderBusy as e:
            _fail(e, 3)
        yield


def _fail(error: BaseException, code: int, hint: str = "") -> None:
    if VERBOSE["on"]:
        console.print_exception(show_locals=False)
    console.print(f"[red]{error}[/red]", highlight=False, soft_wrap=True)
    if hint:
        console.print(hint)
    raise typer.Exit(code)


def _load(config: Path | None) -> RunConfig:
    with user_errors():
        if config is None:
            return load_config(None)
        if config.is_dir():  # a run folder: its saved config, output in that folder
            saved = RunLayout(config).config
            if not saved.exists():
                raise ConfigError(f"{config} is a folder without config.json: not a run folder")
            return load_config(saved, {"output_dir": str(config)})
        if not config.exists():
            raise ConfigError(f"no config file at {config}")
        return load_config(config)


def _table(title: str, header: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for col in header:
        table.add_column(col)
    return table


def _require_passages(passages: Path) -> None:
    if not passages.is_dir():
        console.print(f"[red]no parallel passages at {passages}[/red] (point --passages at flores_sib200)")
        raise typer.Exit(2)


def _context(cfg: RunConfig, limit: int | None = None):
    from xinstruct.core.stage import RunContext
    from xinstruct.pipeline.run import ConsoleProgress

    return RunContext(cfg, progress=ConsoleProgress(console), log=console.print, limit=limit,
                      verbose=VERBOSE["on"])


def _run(config: Path, stages: tuple[str, ...], force: bool = False, limit: int | None = None) -> dict:
    from xinstruct.pipeline.run import run_stages

    cfg = _load(config)
    with writing(cfg.out), user_errors():
        return run_stages(_context(cfg, limit), stages, force=stages if force else ())


@app.command()
def corpus(config: ConfigArg, force: ForceOpt = False, limit: LimitRunOpt = None):
    """Stage I.a: read, NFC-normalise, filter (length, repetition, script, language ID) and near-dedup raw text."""
    _run(config, ("corpus",), force, limit)


@app.command()
def seed(config: ConfigArg, force: ForceOpt = False):
    """Stage I.b: load seed pairs, or build them by translation or from a parallel corpus."""
    _run(config, ("seed",), force)


@app.command("train-generator")
def train_generator(config: ConfigArg, force: ForceOpt = False):
    """Stage I.c: fine-tune the generator (text → English instruction) with TRL + LoRA; export a GGUF adapter.
    Runs with train.generator: seed; by default the bundled generator adapter is used and nothing is trained."""
    _run(config, ("train",), force)


@app.command()
def generate(config: ConfigArg, force: ForceOpt = False, limit: LimitRunOpt = None):
    """Stage I.d: write candidate English instructions for the cleaned corpus (resumes where it stopped).
    Stages it reads from are brought up to date first."""
    _run(config, ("generate",), force, limit)


@app.command()
def refine(config: ConfigArg, force: ForceOpt = False, limit: LimitRunOpt = None):
    """Stage II: k rounds of grading candidates (best / flawed / worst), keeping the best and retraining
    (resumes mid-round). Stages it reads from are brought up to date first."""
    _run(config, ("refine",), force, limit)


@app.command()
def diversify(config: ConfigArg, force: ForceOpt = False):
    """Stage III: embed the refined English instructions, k-means per language, draw up to the target across
    clusters (round-robin, nearest to the centroid and better grades first), after n-gram decontamination."""
    _run(config, ("diversify",), force)


@app.command()
def export(config: ConfigArg, force: ForceOpt = False):
    """Write the dataset (JSONL, Parquet, HF datasets folder; a split per language and `all`), its card
    (statistics table, verb-noun chart) and the run's HTML report."""
    _run(config, ("export",), force)


@app.command()
def diversity(
    config: ConfigArg,
    draws: Annotated[int, typer.Option(help="random subsets averaged")] = 20,
    seed: Annotated[int, typer.Option()] = 0,
):
    """Diversity of each language's selected set vs random subsets of the same size from the same pool:
    cluster-coverage entropy as a share of its maximum, and mean pairwise cosine distance."""
    from xinstruct.diversify.diversity import DIVERSITY_HEADER, DIVERSITY_TARGET, diversity_row
    from xinstruct.diversify.stage import measure_diversity

    cfg = _load(config)
    layout = RunLayout(cfg.out)
    table = _table(f"diversity: selected vs random same-size subsets ({draws} draws) — {cfg.out}", DIVERSITY_HEADER)
    for lang in cfg.languages:
        if not layout.pool_file(lang).exists():
            console.print(f"[red]{lang}: no diversify output under {cfg.out}[/red] (run `xinstruct diversify`)")
            raise typer.Exit(2)
        table.add_row(*diversity_row(lang, measure_diversity(cfg.out, lang, draws, seed)))
    console.print(table)
    console.print(DIVERSITY_TARGET)


@app.command()
def run(config: ConfigArg, force: ForceOpt = False, limit: LimitRunOpt = None):
    """Every stage in order: corpus → seed → train-generator → generate → refine → diversify → export. Stages
    whose inputs, settings, models and code are unchanged are skipped; the console says why each other one runs.
    --force redoes every stage."""
    from xinstruct.pipeline.run import STAGES

    _run(config, STAGES, force, limit)


@app.command()
def demo(
    output_dir: Annotated[str, typer.Option(help="where the run writes")] = "runs/demo",
    languages: Annotated[str, typer.Option(help="comma-separated; bundled demo data: sw,th,hi")] = "sw,th,hi",
    generator: Annotated[str, typer.Option(help="bundled: the bundled generator adapter as it is; seed: fine-tune "
                                           "one on the demo's seed pairs first")] = "bundled",
    epochs: Annotated[float, typer.Option(help="generator training epochs (--generator seed)")] = 1.0,
    decontaminate_against: Annotated[list[Path] | None, typer.Option(
        help="evaluation question JSONL (repeatable); default: Vicuna-80 and MT-Bench from ../shared/data/eval "
             "where present")] = None,
):
    """Every stage on bundled data and the bundled Gemma-3-270m: no network, no keys. Ends with the dataset, its
    card and the run report."""
    from xinstruct.pipeline.demo import DEMO_HEADER, EVAL_QUESTIONS, demo_config, demo_rows
    from xinstruct.pipeline.run import STAGES, outputs, run_stages

    questions = [str(p.resolve()) for p in (decontaminate_against or [p for p in EVAL_QUESTIONS if p.exists()])]
    with user_errors():
        cfg = demo_config(output_dir, tuple(languages.split(",")), epochs, questions, generator=generator)
    if not questions:
        console.print("[yellow]no evaluation questions found: the demo data is not decontaminated[/yellow]")
    started = time.perf_counter()
    ctx = _context(cfg)
    with writing(cfg.out), user_errors():
        results = run_stages(ctx, STAGES)
    table = _table("demo: documents → candidates → refined pairs → selected", DEMO_HEADER)
    for row in demo_rows(cfg.languages, results):
        table.add_row(*row)
    console.print(table)
    console.print(f"finished in {time.perf_counter() - started:.0f}s. Outputs:")
    for name, path in outputs(ctx.layout).items():
        console.print(f"  {name:18} {path}")


@app.command()
def manifest(run_dir: Annotated[Path, typer.Argument(help="a run folder")],
             as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False):
    """What a run was made from: config, per-stage fingerprints and times, model hashes, packages, machine."""
    from xinstruct.io.files import read_json

    data = read_json(RunLayout(run_dir).manifest)
    if data is None:
        console.print(f"[red]no manifest.json in {run_dir}[/red] (a run folder has one after its first stage)")
        raise typer.Exit(2)
    if as_json:
        console.print_json(data=data)
        return
    from xinstruct.pipeline.manifest import manifest_tables
    for table in manifest_tables(data):
        console.print(table)


@app.command()
def push(run_dir: Annotated[Path, typer.Argument(help="a run folder (or its dataset/ folder)")],
         repo_id: Annotated[str, typer.Argument(help="the Hub dataset repository, e.g. me/xinstruct-sw")],
         private: Annotated[bool, typer.Option("--private", help="create the repository private")] = False):
    """Publish a run's dataset to the Hugging Face Hub: its card and Parquet files (a config per language and
    `all`) in one commit. The token is huggingface_hub's (HF_TOKEN or `hf auth login`); HF_ENDPOINT is honoured."""
    from xinstruct.export.push import push_dataset

    folder = run_dir if RunLayout.dataset_format_in(run_dir, "parquet").is_dir() else RunLayout(run_dir).dataset
    from huggingface_hub.errors import HfHubHTTPError

    with user_errors():
        try:
            url = push_dataset(folder, repo_id, private=private)
        except HfHubHTTPError as e:
            _fail(e, 1, "check the token (HF_TOKEN or `hf auth login`) and that it may write to this repository")
    console.print(f"pushed {folder} to {url}", highlight=False)


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    lang: Annotated[str | None, typer.Option("--lang", help="one language; default: every language of the run")]
        = None,
    n: Annotated[int, typer.Option("--n", min=1, help="pairs shown on each side")] = 20,
    seed: Annotated[int, typer.Option(help="which random pairs")] = 0,
):
    """Read Stage II's decisions: random kept and dropped pairs side by side, with grade, P(best), why, and the
    evidence (PMI per token, the instruction's weakest clause...)."""
    from xinstruct.refine.audit import audit_table

    cfg = _load(run_dir)
    if not RunLayout(run_dir).refined.is_dir():
        console.print(f"[red]{run_dir}: no refined pairs yet[/red] (run `xinstruct refine {run_dir}`)")
        raise typer.Exit(2)
    for code in [lang] if lang else cfg.languages:
        console.print(audit_table(run_dir, code, n, seed))


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="a run folder")],
           as_json: Annotated[bool, typer.Option("--json", help="the stages' states as JSON, for scripts")] = False):
    """Where a run stands, without running anything: each stage done, stale (and why: what `run` would redo and
    the reason it gives), to retry or not run; and each model task's progress (on Ray or Slurm, the way to follow
    a run from the login node). Works while another command writes to the folder."""
    from xinstruct.core.stage import RunContext
    from xinstruct.pipeline.manifest import status_tables
    from xinstruct.pipeline.run import plan

    if not RunLayout(run_dir).stamps.is_dir():
        console.print(f"[red]{run_dir} has no stages/ folder[/red]: not a run folder, or no stage has run yet")
        raise typer.Exit(2)
    stage_plan = None
    if RunLayout(run_dir).config.exists():
        with user_errors():
            stage_plan = plan(RunContext(_load(run_dir), quiet=True))
    if as_json:
        from xinstruct.pipeline.manifest import status_rows

        console.print_json(data={"run": str(run_dir), "stages": status_rows(run_dir, stage_plan)})
        return
    for table in status_tables(run_dir, stage_plan):
        console.print(table)


@app.command()
def tune(
    config: ConfigArg,
    data: Annotated[str | None, typer.Option(help="dataset: run/dataset folder, JSONL/JSON/Parquet file or hf:<dataset>; "
                                                   "default: this run's dataset")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="default: <run>/tune")] = None,
    languages: Annotated[str | None, typer.Option(help="comma-separated; default: every language in the data")]
        = None,
    per_language: Annotated[bool | None, typer.Option("--per-language/--multilingual",
                                                      help="one model per language, or one for all")] = None,
    template: Annotated[str | None, typer.Option(help="alpaca (the paper's prompt) | assistant")] = None,
    base: Annotated[str | None, typer.Option(help="HF model dir or id, or a GGUF; default: the bundled Gemma")]
        = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after this many steps (overrides epochs)")] = None,
):
    """Fine-tune a model on the dataset (TRL SFT, LoRA by default) with the paper's prompt "...### Instruction:
    {instruction} Answer in {Language}. ### Response:". Exports a llama.cpp GGUF adapter and an Ollama Modelfile;
    resumes from its last checkpoint, and reuses a finished model trained on the same data and settings."""
    from xinstruct.tune.stage import run_tune, tune_overrides

    cfg = _load(config)
    with user_errors():
        tcfg = tune_overrides(cfg.tune, languages=languages.split(",") if languages else None,
                              per_language=per_language, template=template, base=base, epochs=epochs,
                              max_steps=max_steps)
    with writing(cfg.out, output_dir), user_errors(ValueError):
        results = run_tune(tcfg, data or tcfg.data or str(cfg.out), output_dir or RunLayout(cfg.out).tune,
                           log=console.print)
    for name, d in results.items():
        console.print(f"{name}: {d['train']['adapter_dir']}" + (f", GGUF {d['gguf_lora']}" if d.get("gguf_lora")
                                                                 else "") + (f", {d['modelfile']}" if
                                                                             d.get("modelfile") else ""))


TunedOpt = Annotated[Path | None, typer.Option(help="a `xinstruct tune` output folder (its base and adapter)")]
BackendOpt = Annotated[str, typer.Option(help="llamacpp | openai | transformers")]
ModelOpt = Annotated[str | None, typer.Option(help="GGUF / HF model / served name; default: the bundled Gemma")]
LoraOpt = Annotated[str | None, typer.Option(help="LoRA adapter (GGUF for llamacpp, PEFT folder for transformers)")]
TemplateOpt = Annotated[str, typer.Option(help="alpaca (the paper's) | assistant | none; a tuned model uses its own")]
LangOpt = Annotated[str, typer.Option("--lang", help="answer language (code): adds \"Answer in {Language}.\"")]
NativeOpt = Annotated[bool, typer.Option("--native", help="the prompt is already in the answer language: no suffix")]
MaxTokensOpt = Annotated[int, typer.Option()]
TemperatureOpt = Annotated[float, typer.Option()]


def _answerer(*args):
    from xinstruct.answer.systems import single_system

    with user_errors(ValueError):
        return single_system(*args)


@app.command()
def answer(
    prompt: Annotated[str, typer.Argument(help="the question or instruction")],
    lang: LangOpt = "sw",
    native: NativeOpt = False,
    tuned: TunedOpt = None, backend: BackendOpt = "llamacpp", model: ModelOpt = None, lora: LoraOpt = None,
    template: TemplateOpt = "alpaca",
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.7,
    show_prompt: Annotated[bool, typer.Option(help="print the full prompt sent to the model")] = False,
):
    """Answer one prompt in the chosen language with the paper's template, on any backend."""
    resolved, model_backend, params = _answerer(tuned, backend, model, lora, template, lang, max_tokens, temperature)
    text = resolved.prompt(prompt, lang, suffix=not native)
    if show_prompt:
        console.print(f"[dim]{text}[/dim]")
    with model_backend:
        [result] = model_backend.generate([text], params)
    if result.error:
        console.print(f"[red]{result.error}[/red]")
        raise typer.Exit(1)
    print(result.completions[0].text.strip())


@app.command()
def chat(
    lang: LangOpt = "sw",
    native: NativeOpt = False,
    tuned: TunedOpt = None, backend: BackendOpt = "llamacpp", model: ModelOpt = None, lora: LoraOpt = None,
    template: TemplateOpt = "alpaca",
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.7,
):
    """Ask questions one after another (each answered on its own, in the chosen language); empty line or
    Ctrl-D ends."""
    resolved, model_backend, params = _answerer(tuned, backend, model, lora, template, lang, max_tokens, temperature)
    console.print(f"[dim]{model_backend.model_id}, template {resolved.template}, answers in {lang}[/dim]")
    with model_backend:
        while True:
            try:
                question = console.input("[bold]> [/bold]").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not question:
                break
            [result] = model_backend.generate([resolved.prompt(question, lang, suffix=not native)], params)
            if result.error:
                console.print(f"[red]{result.error}[/red]")
            else:
                console.print(result.completions[0].text.strip(), markup=False)


def _print_evaluation(summary: dict) -> None:
    from xinstruct.evaluate.report import console_tables

    _print_tables(console_tables(summary))
    console.print(f"report: {summary['report']}")
    if summary.get("fastchat"):
        console.print(f"FastChat files: {', '.join(summary['fastchat'])}; leaderboard: {summary['leaderboard']}")


def _print_tables(tables: list[tuple[str, list[str], list[list]]]) -> None:
    for title, header, rows in tables:
        table = _table(title, header)
        for row in rows:
            table.add_row(*map(str, row))
        console.print(table)


QuestionsOpt = Annotated[list[str] | None, typer.Option(
    "--questions", help="MT-Bench/FastChat JSONL (every turn) or hf:<dataset>[:<config>[:<split>]] (repeatable)")]
LimitOpt = Annotated[int | None, typer.Option(help="N questions of each set, spread evenly over it")]
QuestionLangOpt = Annotated[str | None, typer.Option(
    "--question-lang", help="the language the question sets are written in (default: English, asked with "
                            "\"Answer in {Language}.\")")]
TurnsOpt = Annotated[int | None, typer.Option(help="the most turns asked of each question (default: all)")]
JudgingOpt = Annotated[str | None, typer.Option(help="comma-separated: pairwise, single (default: both)")]


@app.command()
def evaluate(
    config: ConfigArg,
    questions: QuestionsOpt = None,
    limit: LimitOpt = None,
    languages: Annotated[str | None, typer.Option(help="comma-separated; default: evaluate.languages")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="default: <run>/evaluate")] = None,
    question_lang: QuestionLangOpt = None,
    turns: TurnsOpt = None,
    judging: JudgingOpt = None,
):
    """Every system in `evaluate.systems` answers every turn of the questions (the conversation so far in each
    prompt); language fidelity and length per turn, the zero-shot check, single-answer grades 1-10 and the pairwise
    judge (both orders) of the focus system against each other, with the length-controlled win rate; FastChat-shaped
    answers and judgements; cached, so reruns cost nothing."""
    from xinstruct.evaluate.stage import evaluate_overrides, run_evaluate
    from xinstruct.pipeline.run import ConsoleProgress

    with user_errors():
        cfg, langs = evaluate_overrides(_load(config), questions, limit, languages, question_lang, turns, judging)
    with writing(cfg.out, output_dir), user_errors(ValueError), ConsoleProgress(console) as progress:
        summary = run_evaluate(cfg.evaluate, langs, output_dir or RunLayout(cfg.out).evaluate, progress,
                               console.print, cfg.executor)
    _print_evaluation(summary)


@app.command()
def compare(
    config: ConfigArg,
    questions: QuestionsOpt = None,
    limit: LimitOpt = None,
    languages: Annotated[str | None, typer.Option(help="comma-separated; default: the run's languages")] = None,
    question_lang: QuestionLangOpt = None,
    turns: TurnsOpt = None,
    judging: JudgingOpt = None,
):
    """The paper's comparison on a finished run: tune the base on the seed pairs and on the xinstruct dataset,
    then evaluate base, seed-tuned and xinstruct-tuned (fidelity per turn, zero-shot, grades, pairwise judge) and
    write the HTML report. Default questions: Vicuna-80 from ../shared/data/eval where present."""
    from xinstruct.evaluate.compare import evaluate_baselines, tune_baselines
    from xinstruct.evaluate.stage import evaluate_overrides
    from xinstruct.pipeline.demo import EVAL_QUESTIONS
    from xinstruct.pipeline.run import ConsoleProgress

    cfg = _load(config)
    if not questions and not cfg.evaluate.questions:
        questions = [str(p.resolve()) for p in EVAL_QUESTIONS[:1] if p.exists()]
        if not questions:
            console.print("[yellow]no English question set given or found: only the zero-shot check runs[/yellow]")
    with user_errors():
        cfg, langs = evaluate_overrides(cfg, questions, limit, languages, question_lang, turns, judging)
    started = time.perf_counter()
    with writing(cfg.out), user_errors(ValueError):
        tune_baselines(cfg, langs, console.print)
        with ConsoleProgress(console) as progress:
            summary = evaluate_baselines(cfg, langs, progress, console.print)
    _print_evaluation(summary)
    console.print(f"finished in {time.perf_counter() - started:.0f}s")


@app.command("eval-generator")
def eval_generator(
    languages: Annotated[str, typer.Option(help="comma-separated")] = "sw,th,hi",
    passages: PassagesOpt = FLORES_DIR,
    generator: Annotated[Path | None, typer.Option(help="tuned GGUF LoRA adapter; trained here if absent")] = None,
    output_dir: Annotated[Path, typer.Option()] = Path("runs/eval-generator"),
    epochs: Annotated[float, typer.Option(help="epochs when training here")] = 1.0,
    shots: Annotated[int, typer.Option(help="few-shot examples for the untuned base")] = 3,
):
    """Generator quality on held-out FLORES seed pairs: chrF and embedding cosine, untuned few-shot vs tuned."""
    from xinstruct.experiments.eval_generator import QUALITY_HEADER, quality_rows, run_generator_eval, tuning_gains

    _require_passages(passages)
    langs = languages.split(",")
    result = run_generator_eval(langs, passages, generator, output_dir, epochs, shots, log=console.print)
    _print_tables([(f"generator quality on held-out FLORES pairs ({result['generator']})", QUALITY_HEADER,
                    quality_rows(result["rows"]))])
    for line in tuning_gains(result["rows"], langs):
        console.print(line)


@app.command("eval-evaluator")
def eval_evaluator(
    languages: Annotated[str, typer.Option(help="comma-separated; default: the paper's 10")] = ",".join(
        PAPER_LANGUAGES),
    passages: PassagesOpt = FLORES_DIR,
    kind: Annotated[str, typer.Option(help="likelihood (features + fitted grader) | trained (LoRA grader)")]
        = "likelihood",
    features: Annotated[str | None, typer.Option(help="grader features, comma-separated; default: the "
                                                      "bundled grader's")] = None,
    ablate: Annotated[str, typer.Option(help="more features to compare in the ablation, comma-separated")] = "",
    save_grader: Annotated[Path | None, typer.Option(help="write the pooled fitted grader (JSON) here")] = None,
    output_dir: Annotated[Path, typer.Option()] = Path("runs/eval-evaluator"),
    evaluator: Annotated[Path | None, typer.Option(help="trained: GGUF LoRA; trained here if absent")] = None,
    epochs: Annotated[float, typer.Option(help="trained: epochs when training here")] = 1.0,
):
    """Grader quality on held-out FLORES seed pairs: ROC-AUC of P(best) (true vs mismatched, true vs flawed),
    3-grade accuracy, calibration, confusion, fits and ablation; writes quality.json (experiments/eval_evaluator.py)."""
    from xinstruct.experiments import eval_evaluator as experiment

    _require_passages(passages)
    langs = languages.split(",")
    if kind == "trained":
        experiment.run_trained(langs, passages, evaluator, output_dir, epochs, console)
        return
    experiment.run_experiment(langs, passages, output_dir, features.split(",") if features else None,
                              [f for f in ablate.split(",") if f], save_grader=save_grader, console=console)


@app.command()
def languages():
    """The language table: code, name used in "Answer in {Language}.", script."""
    from xinstruct.languages import LANGUAGES

    table = Table()
    for col in ("code", "name", "script", "accepted as", "confusable with", "paper"):
        table.add_column(col)
    for lang in LANGUAGES.values():
        table.add_row(lang.code, lang.name, lang.script, ",".join(lang.same_as), ",".join(lang.confusable_with),
                      "yes" if lang.code in PAPER_LANGUAGES else "")
    console.print(table)


@app.command()
def doctor(folder: Annotated[Path, typer.Option(help="where runs will be written (its free disk is checked)")]
           = Path(".")):
    """Check this machine: CPU, the llama.cpp build and the kernels it loaded, the bundled model's checksum, a
    decode with and without the generator adapter, a log-likelihood, the embedder, torch, free disk and memory.
    Exit 1, naming the cause, when something is off."""
    from xinstruct.doctor import run_checks

    def show(check):
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name:<27} {check.detail}", highlight=False, soft_wrap=True)

    checks = run_checks(folder, on_check=show)
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(f"[red]doctor: {len(failed)} problem(s)[/red]: " + "; ".join(f"{c.name}: {c.detail}"
                                                                                 for c in failed), highlight=False)
        raise typer.Exit(1)
    console.print("[green]doctor: this machine is ready[/green]")


@app.command("check-config")
def check_config(config: ConfigArg,
                 as_json: Annotated[bool, typer.Option("--json", help="print the whole resolved config (every "
                                                                        "default filled in, every path resolved)")]
                 = False):
    """Validate a config file, check that its inputs exist, and say in a few lines what it will do and what in it
    looks like a mistake (relative paths are read against the config file's folder; output_dir against the working
    folder). Exit 2 when an input is missing."""
    from xinstruct.pipeline.checkconfig import summary, warnings
    from xinstruct.pipeline.run import STAGES, check

    cfg = _load(config)
    problems = check(_context(cfg), STAGES)
    if as_json:
        console.print_json(cfg.model_dump_json())
    else:
        for key, value in summary(cfg):
            console.print(f"[bold]{key:<11}[/bold] {value}", highlight=False, soft_wrap=True)
        for warning in warnings(cfg):
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/red]", highlight=False)
        raise typer.Exit(2)
    console.print("[green]config ok[/green]: inputs found")


if __name__ == "__main__":  # pragma: no cover
    app()
