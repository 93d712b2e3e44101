"""Answers of probe students to the probe prompts: one base model, one LoRA adapter per student.

Two backends behind one small protocol: vllm's offline engine on a GPU (every adapter served by one
engine, switched per request), and transformers + peft everywhere else (adapters loaded once into
one model and switched per student).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping, Sequence
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

Backend = Literal["auto", "vllm", "transformers"]

# Share of the GPU's memory vllm may take (its default is 0.9): a probe base is small, and the same
# process still trains students and runs local judges on that GPU.
VLLM_GPU_MEMORY_UTILIZATION = 0.5


class AnswerGenerator(Protocol):
    def generate(
        self, adapters: Mapping[str, Path], prompts: Sequence[str]
    ) -> dict[str, list[str]]:
        """Answers of every student (name -> LoRA adapter dir) to every prompt, aligned with
        prompts."""
        ...


def make_generator(
    base_model: Path,
    *,
    backend: Backend = "auto",
    max_new_tokens: int = 128,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
    temperature: float = 0.0,
    batch_size: int = 16,
) -> AnswerGenerator:
    """ "auto" picks vllm when it is importable and the device is a GPU, else transformers.
    temperature 0 is greedy decoding; above 0, sampling seeded by `seed`."""
    resolved = resolve_device(device)
    if backend == "auto":
        has_vllm = importlib.util.find_spec("vllm") is not None
        backend = "vllm" if has_vllm and resolved.startswith("cuda") else "transformers"
    if backend == "vllm":
        return VllmGenerator(base_model, max_new_tokens, seed, temperature, progress)
    return TransformersGenerator(
        base_model, max_new_tokens, seed, resolved, temperature, batch_size, progress
    )


def adapter_rank(adapter: Path) -> int:
    """The LoRA rank peft wrote into the adapter's config."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    return int(config["r"])


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vllm accepts that fits `rank`: vllm takes a fixed set of values
    (8, 16, 32, 64, ...), not any number."""
    return max(8, 1 << (rank - 1).bit_length())


class TransformersGenerator:
    """Batched generation with transformers; each student's adapter is loaded into the same model
    once and made active while its answers are generated."""

    def __init__(
        self,
        base_model: Path,
        max_new_tokens: int,
        seed: int,
        device: str,
        temperature: float,
        batch_size: int,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.base_model = base_model
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.device = device
        self.temperature = temperature
        self.batch_size = batch_size
        self.progress = progress

    def generate(
        self, adapters: Mapping[str, Path], prompts: Sequence[str]
    ) -> dict[str, list[str]]:
        if not adapters:
            return {}
        from peft import PeftModel

        tokenizer = load_tokenizer(self.base_model, padding_side="left")
        names = list(adapters)
        # peft turns adapter names into module names, where "." is not allowed (gemini-1.5-pro)
        slots = {name: f"student{index}" for index, name in enumerate(names)}
        model = PeftModel.from_pretrained(
            load_causal_lm(self.base_model, self.device),
            str(adapters[names[0]]),
            adapter_name=slots[names[0]],
        )
        for name in names[1:]:
            model.load_adapter(str(adapters[name]), adapter_name=slots[name])
        model.eval()
        answers: dict[str, list[str]] = {}
        for name in names:
            model.set_adapter(slots[name])
            answers[name] = self._answers(model, tokenizer, prompts)
            if self.progress is not None:
                self.progress(f"generated {len(prompts)} answers for {name}")
        return answers

    def _answers(self, model: Any, tokenizer: Any, prompts: Sequence[str]) -> list[str]:
        import torch

        # Reseeding per student makes a student's answers independent of the students before it.
        torch.manual_seed(self.seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False}
        )
        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [prompt_text(tokenizer, p) for p in prompts[start : start + self.batch_size]]
            batch = tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                add_special_tokens=adds_special_tokens(tokenizer),
            )
            batch = batch.to(self.device)
            with torch.no_grad():
                output = model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **sampling,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            answers.extend(
                text.strip()
                for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            )
        return answers


class VllmGenerator:
    """vllm's offline engine with LoRA enabled: the base model is loaded once and each student is
    a LoRARequest, so many students cost one engine. Prompts are passed as token ids made by the
    HF tokenizer exactly as in training, so vllm adds no second BOS or template of its own."""

    def __init__(
        self,
        base_model: Path,
        max_new_tokens: int,
        seed: int,
        temperature: float,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.base_model = base_model
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.temperature = temperature
        self.progress = progress

    def generate(
        self, adapters: Mapping[str, Path], prompts: Sequence[str]
    ) -> dict[str, list[str]]:
        if not adapters:
            return {}
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        tokenizer = load_tokenizer(self.base_model)
        tokens = [{"prompt_token_ids": prompt_ids(tokenizer, prompt)} for prompt in prompts]
        engine = LLM(
            model=str(self.base_model),
            enable_lora=True,
            max_loras=len(adapters),
            max_lora_rank=vllm_max_lora_rank(max(adapter_rank(p) for p in adapters.values())),
            seed=self.seed,
            dtype="bfloat16",  # as load_causal_lm on a GPU: the same numbers on both backends
            gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION,
        )
        sampling = SamplingParams(
            temperature=self.temperature, max_tokens=self.max_new_tokens, seed=self.seed
        )
        answers: dict[str, list[str]] = {}
        # LoRA ids must be positive integers, unique per adapter within the engine.
        for lora_id, (name, path) in enumerate(adapters.items(), start=1):
            outputs = engine.generate(
                tokens, sampling, lora_request=LoRARequest(name, lora_id, str(path))
            )
            answers[name] = [output.outputs[0].text.strip() for output in outputs]
            if self.progress is not None:
                self.progress(f"generated {len(prompts)} answers for {name}")
        return answers
