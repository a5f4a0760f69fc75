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


# How each template continues a conversation: the next user turn, after the previous answer (which follows the
# template's RESPONSE_SEPARATOR, as the model wrote it).
NEXT_TURN = {"alpaca": "\n\n### Instruction:\n{instruction}\n\n### Response:",
             "assistant": "\nUSER: {instruction}\nASSISTANT:",
             "none": "\n\n{instruction}"}


def conversation_prompt(instructions: list[str], answers: list[str], template_name: str,
                        language: str | None = None) -> str:
    """The prompt for the last of `instructions`, with every earlier turn and its answer before it, in the
    template's own turn format (one answer fewer than instructions). One instruction: answer_prompt's prompt."""
    if len(answers) != len(instructions) - 1:
        raise ValueError(f"a conversation needs one answer fewer than instructions, got {len(instructions)} "
                         f"instructions and {len(answers)} answers")
    prompt = answer_prompt(instructions[0], template_name, language)
    for answer, instruction in zip(answers, instructions[1:]):
        prompt += RESPONSE_SEPARATOR[template_name] + answer.strip()
        prompt += NEXT_TURN[template_name].format(instruction=instruction.strip())
    return prompt


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


def judge_request(language: str, in_english: bool = True) -> str:
    """What the judge is told of the user's request: an English question answered in the language (the paper's
    setting), or a question written in the language."""
    if in_english:
        return f"The user asked in English and asked for the answer in {language}."
    return f"The user asked in {language}, and the answer should be in {language}."


def transcript(turns: list[str], answers: list[str], assistant: str = "Assistant") -> str:
    """A conversation as the judge reads it: each user turn, then the assistant's answer."""
    parts = []
    for question, answer in zip(turns, answers, strict=True):
        parts += [f"### User:\n{question.strip()}", f"### {assistant}:\n{answer.strip()}"]
    return "\n\n".join(parts)


def pairwise_judge_prompt(question: str | list[str], answer1: str | list[str], answer2: str | list[str],
                          language: str, in_english: bool = True) -> str:
    """The paper's pairwise protocol: the question, two answers in the target language, two 0-10 scores. Lists
    (the turns so far and each assistant's answers to them): the two conversations, the last answers judged."""
    request = judge_request(language, in_english)
    if isinstance(question, str):
        return template("judge_answers").format(question=question.strip(), answer1=answer1.strip(),
                                                answer2=answer2.strip(), language=language, request=request)
    if len(question) == 1:
        return pairwise_judge_prompt(question[0], answer1[0], answer2[0], language, in_english)
    return template("judge_answers_turns").format(
        conversation1=transcript(question, answer1, "Assistant 1"),
        conversation2=transcript(question, answer2, "Assistant 2"), language=language, request=request)


GRADE_PREFILL = "[["  # the single-answer prompt ends with "Rating: [[", so even a small model starts with the grade
GRADE_GRAMMAR = '''root ::= score "]]"
score ::= "10" | [1-9]'''


def single_grade_prompt(turns: list[str], answers: list[str], language: str, in_english: bool = True,
                        reference: tuple[str, ...] | list[str] = ()) -> str:
    """MT-Bench's single-answer grading, 1-10, for the last of `answers` (one per turn so far): the question and
    answer alone on turn 1, the whole conversation after it; the reference answers of the turns so far, where the
    question has them, shown to compare against."""
    reference = [r for r in reference[:len(turns)] if r and r.strip()]
    fields = {"request": judge_request(language, in_english), "language": language, "reference": "",
              "reference_note": ""}
    if reference:
        fields["reference_note"] = (" Compare the answer with the reference answer below, and count every mistake "
                                    "in it against the answer.")
        shown = (reference[0] if len(reference) == 1
                 else "\n\n".join(f"Turn {i}:\n{r.strip()}" for i, r in enumerate(reference, 1)))
        fields["reference"] = f"\n[The Start of the Reference Answer]\n{shown.strip()}\n[The End of the Reference Answer]\n"
    if len(turns) == 1:
        return template("grade_answer").format(question=turns[0].strip(), answer=answers[0].strip(), **fields)
    return template("grade_answer_turns").format(conversation=transcript(turns, answers), **fields)
