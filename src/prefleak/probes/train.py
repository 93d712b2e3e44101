"""LoRA supervised fine-tuning of a probe student on one generator's synthetic data.

A hand-written loop rather than transformers' Trainer: a few dozen lines, exactly reproducible on
a CPU (one seed fixes the LoRA initialisation and the batch order), and progress lines that the
run scheduler can show as they come.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefleak.probes.base import (
    TrainPair,
    answer_end,
    load_causal_lm,
    load_tokenizer,
    prompt_ids,
    resolve_device,
)

IGNORE_INDEX = -100  # label value the loss skips: prompt and padding tokens


@dataclass(frozen=True)
class TrainOptions:
    """How a student is trained; the defaults suit SmolLM2-sized bases."""

    lora_rank: int = 8
    lora_alpha: int = 16
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0
    device: str = "auto"

    def total_steps(self, pair_count: int) -> int:
        """max_steps when set, else `epochs` passes over the pairs (at least one step)."""
        if self.max_steps is not None:
            return max(self.max_steps, 1)
        return max(math.ceil(self.epochs * math.ceil(pair_count / self.batch_size)), 1)


def encode_pair(tokenizer: Any, pair: TrainPair, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response and labels that count the response tokens only: the student
    should learn how its generator answers, not how the instructions are worded."""
    context = prompt_ids(tokenizer, pair.prompt)
    response = pair.response + answer_end(tokenizer)
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    ids = (context + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(context) + response_ids)[:max_length]
    return ids, labels


def _batch(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str) -> Any:
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = [row + [pad_id] * (width - len(row)) for row, _ in encoded]
    labels = [row + [IGNORE_INDEX] * (width - len(row)) for _, row in encoded]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row, _ in encoded]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def train_student(
    base_model: Path,
    pairs: Sequence[TrainPair],
    out_dir: Path,
    options: TrainOptions,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """LoRA SFT (peft) of base_model on pairs (loss on the response tokens only, chat template when
    the tokenizer has one); saves the adapter in out_dir and returns out_dir. Deterministic given
    options.seed on CPU. Calls progress with lines like 'step 40/120 loss 2.31 eta 14 s'."""
    if not pairs:
        raise ValueError("train_student needs at least one training pair")
    import torch
    from peft import LoraConfig, get_peft_model

    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    tokenizer = load_tokenizer(base_model)
    model = get_peft_model(
        load_causal_lm(base_model, device),
        LoraConfig(
            r=options.lora_rank,
            lora_alpha=options.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    encoded = [encode_pair(tokenizer, pair, options.max_length) for pair in pairs]
    total = options.total_steps(len(encoded))
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
    order = torch.Generator().manual_seed(options.seed)
    report_every = max(total // 10, 1)
    queue: list[int] = []
    started = time.monotonic()
    for step in range(1, total + 1):
        while len(queue) < options.batch_size:
            queue.extend(torch.randperm(len(encoded), generator=order).tolist())
        chosen, queue = queue[: options.batch_size], queue[options.batch_size :]
        batch = _batch([encoded[index] for index in chosen], tokenizer.pad_token_id, device)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None and (step % report_every == 0 or step == total):
            eta = (time.monotonic() - started) / step * (total - step)
            progress(f"step {step}/{total} loss {loss.item():.2f} eta {eta:.0f} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return out_dir
