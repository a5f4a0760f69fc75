"""A system = a model on a backend + a prompt template. Resolves tuned-model folders to backend settings and
gives each system a fingerprint (models/identity.model_fingerprint + template), so cached answers are reused exactly
when the model and prompt are the same."""

from __future__ import annotations

from dataclasses import dataclass

from xinstruct.config import ModelConfig, SystemConfig, model_config, validated_copy
from xinstruct.languages import answer_suffix, get_language
from xinstruct.models.base import SamplingParams, load_backend
from xinstruct.models.identity import model_fingerprint
from xinstruct.prompts import ANSWER_STOPS, answer_prompt, conversation_prompt


@dataclass(frozen=True)
class ResolvedSystem:
    name: str
    model: ModelConfig
    template: str

    def prompt(self, question: str, lang: str, suffix: bool = True) -> str:
        """English question + "Answer in {Language}." (suffix=False: a question already in the target language)."""
        return answer_prompt(self.instruction(question, lang, suffix), self.template, get_language(lang).name)

    def instruction(self, question: str, lang: str, suffix: bool = True) -> str:
        return f"{question.strip()} {answer_suffix(lang)}" if suffix else question.strip()

    def turn_prompt(self, turns: list[str], answers: list[str], lang: str, suffix: bool = True) -> str | list[dict]:
        """The prompt for the last of `turns`, after the earlier turns and this system's answers to them; the
        "Answer in {Language}." rule on every English turn. A chat model asked with the bare question (template
        none) gets the conversation as chat messages; every other system gets it in its template's text (a chat
        model with the alpaca or assistant template: as one user message, as on the first turn)."""
        instructions = [self.instruction(t, lang, suffix) for t in turns]
        if len(instructions) == 1:
            return self.prompt(turns[0], lang, suffix)
        if self.template == "none" and getattr(self.model, "chat", False):
            messages = []
            for instruction, answer in zip(instructions, [*answers, None]):
                messages.append({"role": "user", "content": instruction})
                if answer is not None:
                    messages.append({"role": "assistant", "content": answer.strip()})
            return messages
        return conversation_prompt(instructions, answers, self.template, get_language(lang).name)

    def fingerprint(self) -> str:
        return model_fingerprint(self.model) + ":" + self.template


def resolve_system(system: SystemConfig, lang: str | None = None) -> ResolvedSystem:
    """Settings for `system` answering in `lang`: a tuned folder supplies its base, adapter and template."""
    if system.tuned is None:
        return ResolvedSystem(system.name, system.model, system.template)
    from xinstruct.tune.stage import base_gguf, find_tuned

    tuned = find_tuned(system.tuned, lang)
    model = system.model
    if model.backend == "llamacpp":
        if not tuned.get("gguf_lora"):
            raise ValueError(f"{system.tuned}: no GGUF adapter (full fine-tune or unsupported architecture); "
                             "use backend: transformers for this system")
        base = model.model or (None if tuned["base"] is None else base_gguf(tuned["base"]))
        if tuned["base"] is not None and base is None:
            raise ValueError(f"{system.tuned}: tuned from {tuned['base']}, which is not a GGUF; set the system's "
                             "model.model to a GGUF of that model, or use backend: transformers")
        model = validated_copy(model, model=None if base is None else str(base), lora=tuned["gguf_lora"])
    elif model.backend == "transformers":
        model = validated_copy(model, model=tuned["base"], lora=tuned["adapter_dir"])
    # any other backend serves the tuned model itself (e.g. vLLM with the adapter): only the template is taken
    return ResolvedSystem(system.name, model, tuned["template"])


def answer_params(temperature: float, top_p: float, max_tokens: int, seed: int | None) -> SamplingParams:
    return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=ANSWER_STOPS,
                          seed=seed)


def single_system(tuned: str | None, backend: str, model: str | None, lora: str | None, template: str, lang: str,
                  max_tokens: int, temperature: float):
    """(the resolved system, its backend not yet opened, sampling) for `xinstruct answer` and `chat`: a tuned
    folder, or a model on a backend with a template. Raises FileNotFoundError / ValueError on a bad one."""
    system = SystemConfig(name="cli", model=model_config(backend=backend, model=model, lora=lora),
                          tuned=str(tuned) if tuned else None, template=template)
    resolved = resolve_system(system, lang)
    return resolved, load_backend(resolved.model), answer_params(temperature, 0.9, max_tokens, None)
