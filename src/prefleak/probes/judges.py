"""Pairwise judges: which of two shown answers to a prompt is better.

Verdicts are relative to the shown order ("a" is the answer shown first) because position bias is
one of the habits prefleak separates from leakage; the caller knows which student was shown first.
An answer that cannot be read is returned as choice None and counted, never guessed: a guessed
verdict would look like a real preference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from prefleak.probes.base import (
    adds_special_tokens,
    load_causal_lm,
    load_tokenizer,
    prompt_ids,
    prompt_text,
    resolve_device,
)

Choice = Literal["a", "b", "tie"]

# Pairwise comparison in the AlpacaEval style, as the paper's judges were asked: the instruction,
# two outputs in shown order, and an answer restricted to a fixed vocabulary so it can be parsed.
PAIRWISE_PROMPT = """You are a helpful assistant that compares the outputs of AI models.

Select the output that answers the instruction better. Judge helpfulness, accuracy and how well \
the output follows the instruction; do not let the order of the outputs or their length influence \
you. If the two are equally good, answer Tie.

# Instruction:
{instruction}

# Output (a):
{output_a}

# Output (b):
{output_b}

# Which is best, Output (a), Output (b) or Tie? Answer with exactly one of "Output (a)", \
"Output (b)" or "Tie" and nothing else."""

REMINDER = 'Your previous answer could not be read. Reply with exactly "Output (a)", "Output (b)" \
or "Tie".'

_ALONE = re.compile(r"^(?:output\s*)?\(?\s*(a|b|tie)\s*\)?$")
_MENTION = re.compile(r"output\s*\(\s*(a|b)\s*\)")


@dataclass(frozen=True)
class Judgement:
    """One verdict: the choice (None when unreadable after retries), the judge's raw text and how
    many attempts it took."""

    choice: Choice | None
    raw: str
    attempts: int


class PairwiseJudge(Protocol):
    name: str  # the judge's model id, as written into verdict events

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        """(prompt, first_shown_answer, second_shown_answer) -> one Judgement each, in order."""
        ...


def pairwise_prompt(prompt: str, first: str, second: str) -> str:
    """PAIRWISE_PROMPT filled in for one comparison."""
    return PAIRWISE_PROMPT.format(instruction=prompt, output_a=first, output_b=second)


def parse_choice(text: str) -> Choice | None:
    """Read a judge's answer: a bare 'Output (a)', '(b)', 'a', 'Tie' (any case, quotes, markdown
    and trailing punctuation allowed), or a sentence that names exactly one of Output (a) and
    Output (b). Anything else, including an answer naming both, is None."""
    normal = text.strip().strip("\"'`*#:.![] \n\t").lower()
    alone = _ALONE.match(normal)
    if alone:
        return _as_choice(alone.group(1))
    named = set(_MENTION.findall(normal))
    if len(named) == 1:
        return _as_choice(named.pop())
    return None


def _as_choice(token: str) -> Choice:
    if token == "a":
        return "a"
    if token == "b":
        return "b"
    return "tie"


class LocalJudge:
    """A transformers causal LM (+ optional LoRA adapter dir) as a pairwise judge.

    "likelihood" prefers the answer with the higher mean per-token log-likelihood given the prompt
    under the judge's own model. A judge fine-tuned on generator X's data then prefers X-style
    answers, which is exactly preference leakage, and it works with models far too small to follow
    a judging prompt. "prompt" asks PAIRWISE_PROMPT and parses the reply, retrying with a reminder.
    """

    def __init__(
        self,
        name: str,
        model: Path,
        *,
        adapter: Path | None = None,
        mode: Literal["likelihood", "prompt"] = "likelihood",
        tie_margin: float = 0.0,
        device: str = "auto",
        max_retries: int = 2,
        batch_size: int = 16,
        max_new_tokens: int = 16,
    ) -> None:
        self.name = name
        self.mode = mode
        self.tie_margin = tie_margin
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._device = resolve_device(device)
        self._model_path = model
        self._adapter = adapter
        self._loaded: tuple[Any, Any] | None = None

    def _model(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded on first use so that building a judge is cheap."""
        if self._loaded is None:
            model = load_causal_lm(self._model_path, self._device)
            if self._adapter is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(self._adapter)).eval()
            self._loaded = (model, load_tokenizer(self._model_path))
        return self._loaded

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        if self.mode == "likelihood":
            return self._by_likelihood(items)
        return [self._by_prompt(*item) for item in items]

    def _by_likelihood(self, items: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        # Each (prompt, answer) is scored once, however often and in whichever order it is shown.
        unique = list(dict.fromkeys((p, answer) for p, a, b in items for answer in (a, b)))
        scores = dict(zip(unique, self.mean_log_likelihoods(unique), strict=True))
        verdicts = []
        for prompt, first, second in items:
            score_a, score_b = scores[(prompt, first)], scores[(prompt, second)]
            choice: Choice
            if abs(score_a - score_b) <= self.tie_margin:
                choice = "tie"
            else:
                choice = "a" if score_a > score_b else "b"
            raw = f"mean log-likelihood a={score_a:.4f} b={score_b:.4f}"
            verdicts.append(Judgement(choice=choice, raw=raw, attempts=1))
        return verdicts

    def mean_log_likelihoods(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean per-token log-likelihood of each answer given its prompt (the per-token mean keeps
        longer answers from losing merely for being long)."""
        import torch

        model, tokenizer = self._model()
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            rows = []
            for prompt, answer in pairs[start : start + self.batch_size]:
                continuation = tokenizer(answer, add_special_tokens=False).input_ids
                rows.append((prompt_ids(tokenizer, prompt), continuation))
            width = max(len(c) + len(a) for c, a in rows)
            ids = torch.full((len(rows), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for row, (context_ids, answer_ids) in enumerate(rows):
                length = len(context_ids) + len(answer_ids)
                ids[row, :length] = torch.tensor(context_ids + answer_ids)
                mask[row, :length] = 1
                answer_mask[row, len(context_ids) : length] = True
            with torch.no_grad():
                logits = model(
                    input_ids=ids.to(self._device), attention_mask=mask.to(self._device)
                ).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = ids[:, 1:].to(self._device)
            token_scores = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            counted = answer_mask[:, 1:].to(self._device)
            totals = (token_scores * counted).sum(dim=1)
            counts = counted.sum(dim=1).clamp(min=1)
            scores.extend((totals / counts).tolist())
        return scores

    def _by_prompt(self, prompt: str, first: str, second: str) -> Judgement:
        import torch

        model, tokenizer = self._model()
        question = pairwise_prompt(prompt, first, second)
        raw = ""
        for attempt in range(1, self.max_retries + 2):
            text = question if attempt == 1 else f"{question}\n\n{REMINDER}"
            batch = tokenizer(
                prompt_text(tokenizer, text),
                return_tensors="pt",
                add_special_tokens=adds_special_tokens(tokenizer),
            ).to(self._device)
            with torch.no_grad():
                output = model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[0, batch["input_ids"].shape[1] :]
            raw = tokenizer.decode(new_tokens, skip_special_tokens=True)
            choice = parse_choice(raw)
            if choice is not None:
                return Judgement(choice=choice, raw=raw, attempts=attempt)
        return Judgement(choice=None, raw=raw, attempts=self.max_retries + 1)
