"""Prompt templates, kept as data (one .txt file each) so they can be read and changed without touching code."""

from __future__ import annotations

from functools import cache
from importlib import resources

# Where a generated English instruction ends: the next section header or a blank line.
INSTRUCTION_STOPS = ("\n\n", "\n###", "###")


@cache
def template(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def generation_prompt(text: str) -> str:
    """The paper's Stage I prompt: foreign text in, English instruction out."""
    return template("generate_instruction").format(text=text.strip())


def scoring_prompt(text: str) -> str:
    """What the likelihood grader scores an instruction after: the text, then a cue that an English request
    follows. Measured against the generation prompt on held-out Swahili pairs, it separates an instruction
    written for the text from others better (docs/RESULTS.md). Without a text: the cue alone, the baseline."""
    text = text.strip()
    return template("score_instruction").format(text=text) if text else "In English, a request:"


def few_shot_generation_prompt(text: str, examples: list[tuple[str, str]]) -> str:
    """The same prompt preceded by solved (text, instruction) examples: how an untuned base model is asked."""
    shots = [generation_prompt(t) + " " + instr.strip() for t, instr in examples]
    return "\n\n\n".join(shots + [generation_prompt(text)])


def translation_prompt(text: str, language: str) -> str:
    return template("translate").format(text=text.strip(), language=language)


def grade_prompt(instruction: str, response: str, language: str) -> str:
    """The trained evaluator's prompt; the model answers with one grade word (best / flawed / worst)."""
    return template("grade_pair").format(instruction=instruction.strip(), response=response.strip(),
                                         language=language)


def judge_prompt(instruction: str, response: str, language: str) -> str:
    """The prompted judge's rubric (Humpback-style): a one-line reason, then "Score: <grade>"."""
    return template("judge_pair").format(instruction=instruction.strip(), response=response.strip(),
                                         language=language)


def assistant_system_prompt(language: str) -> str:
    """The AI-assistant variant's system message: English request, answer in `language`."""
    return template("assistant_system").strip().format(language=language)


# Where an answer ends: the next prompt section, for models that run on past their response.
ANSWER_STOPS = ("\n### ", "\nUSER:", "\n[Instruction]")
# Between the prompt and the response in training rows (the model's first generated token at inference).
RESPONSE_SEPARATOR = {"alpaca": "\n", "assistant": " ", "none": "\n"}


def answer_prompt(instruction: str, template_name: str, language: str | None = None) -> str:
    """The paper's prompts for tuning and answering. `instruction` is complete (any "Answer in X." suffix
    included); `language` names the answer language for the assistant variant's system message."""
    instruction = instruction.strip()
    if template_name == "alpaca":
        return template("alpaca").format(instruction=instruction)
    if template_name == "assistant":
        system = assistant_system_prompt(language) if language else "You are a helpful AI assistant."
        return template("assistant").format(system=system, instruction=instruction)
    if template_name == "none":
        return instruction
    raise ValueError(f"unknown prompt template {template_name!r}: use alpaca, assistant or none")


JUDGE_PREFILL = "<score1>"  # the judge prompt ends inside the answer format, so even a small model starts there
# The rest of the judge's answer, as a GBNF grammar: where the backend supports it (llama.cpp), a small judge
# can write nothing but two integer scores. No free-text reason: a grammar that admits any text checks every
# one of Gemma's 262k tokens at every step (measured: ~0.7 s a token on 2 cores).
JUDGE_GRAMMAR = '''root ::= score "</score1><score2>" score "</score2>"
score ::= "10" | [0-9]'''


def pairwise_judge_prompt(question: str, answer1: str, answer2: str, language: str) -> str:
    """The paper's pairwise protocol: English question, two answers in the target language, two 0-10 scores."""
    return template("judge_answers").format(question=question.strip(), answer1=answer1.strip(),
                                            answer2=answer2.strip(), language=language)
