"""Probe students end to end on tiny real models: LoRA training, generation, local judges, the
OpenAI-compatible judge client against a real local server, and the SmolLM2 base."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may download anything

from openai_server import Faults, TinyChatModel, openai_server
from prefleak.probes.base import build_tiny_base, smollm2_base
from prefleak.probes.generate import make_generator, vllm_max_lora_rank
from prefleak.probes.judges import Judgement, LocalJudge, parse_choice
from prefleak.probes.openai_judge import (
    BudgetExceeded,
    JudgeRequestError,
    OpenAIJudge,
    OpenAIJudgeOptions,
)
from prefleak.probes.train import TrainOptions, train_student
from probe_data import STYLES, corpus, marker_rate, probe_prompts, styled_pairs

pytest.importorskip("peft", reason="the probe extra is not installed")

# Enough for a random 2-layer model to learn a style marker (loss ~7 -> ~1): ~3 s on one core.
STUDENT_OPTIONS = TrainOptions(max_steps=150, learning_rate=1e-2, batch_size=8, device="cpu")
STUDENT_STYLES = ("terse", "bullets")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the CI machine's cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny") / "base", corpus(), seed=0)


@pytest.fixture(scope="session")
def students(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A student per style, each trained on 80 pairs of its generator's data."""
    root = tmp_path_factory.mktemp("students")
    return {
        style: train_student(
            tiny_base, styled_pairs(style, 80, seed=0), root / style, STUDENT_OPTIONS
        )
        for style in STUDENT_STYLES
    }


def both_orders(
    first_style: str, second_style: str, prompts: list[str]
) -> list[tuple[str, str, str]]:
    """Every prompt twice: first_style's answer shown first, then shown second."""
    a, b = STYLES[first_style], STYLES[second_style]
    return [(p, a.answer(p), b.answer(p)) for p in prompts] + [
        (p, b.answer(p), a.answer(p)) for p in prompts
    ]


def first_style_wins(verdicts: list[Judgement]) -> tuple[float, float]:
    """Win rate of the first style of `both_orders` when shown first and when shown second."""
    half = len(verdicts) // 2
    shown_first = sum(v.choice == "a" for v in verdicts[:half]) / half
    shown_second = sum(v.choice == "b" for v in verdicts[half:]) / half
    return shown_first, shown_second


# --- training ------------------------------------------------------------------------------------


def test_training_is_deterministic_and_reports_progress(tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pairs = styled_pairs("formal", 24, seed=1)
    options = TrainOptions(max_steps=6, batch_size=4, learning_rate=1e-2, device="cpu", seed=3)
    lines: list[str] = []
    first = train_student(tiny_base, pairs, tmp_path / "one", options, progress=lines.append)
    second = train_student(tiny_base, pairs, tmp_path / "two", options)
    other_seed = TrainOptions(max_steps=6, batch_size=4, learning_rate=1e-2, device="cpu", seed=4)
    third = train_student(tiny_base, pairs, tmp_path / "three", other_seed)

    weights = [load_file(path / "adapter_model.safetensors") for path in (first, second, third)]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])
    assert not all(weights[0][k].equal(weights[2][k]) for k in weights[0])
    assert lines and all(re.fullmatch(r"step \d+/6 loss \d+\.\d\d eta \d+ s", x) for x in lines)
    assert lines[-1].startswith("step 6/6 ")


def test_steps_follow_epochs_unless_capped() -> None:
    assert TrainOptions(epochs=2.0, batch_size=8).total_steps(20) == 6
    assert TrainOptions(epochs=0.5, batch_size=8).total_steps(20) == 2
    assert TrainOptions(max_steps=7).total_steps(1000) == 7


def test_training_needs_data(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        train_student(tiny_base, [], tmp_path / "none", TrainOptions(device="cpu"))


# --- generation ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_students_write_in_their_generators_style(
    tiny_base: Path, students: dict[str, Path]
) -> None:
    prompts = probe_prompts(12, seed=0)  # tasks no student saw in training
    generator = make_generator(tiny_base, backend="transformers", max_new_tokens=24, device="cpu")
    answers = generator.generate(students, prompts)

    assert list(answers) == list(students)
    assert all(len(texts) == len(prompts) and all(texts) for texts in answers.values())
    for style in STUDENT_STYLES:
        other = next(s for s in STUDENT_STYLES if s != style)
        assert marker_rate(style, answers[style]) >= 0.8
        assert marker_rate(style, answers[other]) <= 0.1


@pytest.mark.slow
def test_generation_is_aligned_and_repeatable(tiny_base: Path, students: dict[str, Path]) -> None:
    prompts = probe_prompts(3, seed=5)
    generator = make_generator(tiny_base, backend="transformers", max_new_tokens=8, device="cpu")
    single = generator.generate({"bullets": students["bullets"]}, prompts)
    both = generator.generate(students, prompts)
    # Batched greedy decoding: a student's answers do not depend on the other students loaded.
    assert both["bullets"] == single["bullets"]
    assert generator.generate({}, prompts) == {}


def test_vllm_gets_a_lora_rank_it_accepts() -> None:
    assert [vllm_max_lora_rank(rank) for rank in (1, 8, 9, 16, 33)] == [8, 8, 16, 16, 64]


# --- local judges --------------------------------------------------------------------------------


@pytest.mark.slow
def test_judge_tuned_on_a_style_prefers_it_in_both_positions(
    tiny_base: Path, students: dict[str, Path]
) -> None:
    items = both_orders("terse", "bullets", probe_prompts(20, seed=0))
    terse_judge = LocalJudge("terse-judge", tiny_base, adapter=students["terse"], device="cpu")
    bullets_judge = LocalJudge(
        "bullets-judge", tiny_base, adapter=students["bullets"], device="cpu"
    )

    assert first_style_wins(terse_judge.judge_many(items)) >= (0.9, 0.9)
    assert max(first_style_wins(bullets_judge.judge_many(items))) <= 0.1


def test_untuned_judge_has_no_style_preference(tiny_base: Path) -> None:
    items = both_orders("terse", "bullets", probe_prompts(20, seed=0))
    verdicts = LocalJudge("base", tiny_base, device="cpu").judge_many(items)

    shown_first, shown_second = first_style_wins(verdicts)
    assert 0.2 <= (shown_first + shown_second) / 2 <= 0.8
    assert all(v.attempts == 1 and v.raw.startswith("mean log-likelihood") for v in verdicts)


def test_tie_margin_turns_close_calls_into_ties(tiny_base: Path) -> None:
    items = both_orders("terse", "formal", probe_prompts(4, seed=0))
    verdicts = LocalJudge("base", tiny_base, tie_margin=1e6, device="cpu").judge_many(items)
    assert {v.choice for v in verdicts} == {"tie"}


def test_prompt_mode_counts_unreadable_replies_instead_of_guessing(tiny_base: Path) -> None:
    """An untrained model cannot follow the judging prompt: every retry is spent, no guess made."""
    judge = LocalJudge("base", tiny_base, mode="prompt", device="cpu", max_retries=1)
    verdicts = judge.judge_many(both_orders("terse", "bullets", probe_prompts(1, seed=0)))
    assert [(v.choice, v.attempts) for v in verdicts] == [(None, 2), (None, 2)]


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("Output (a)", "a"),
        ("output (b)", "b"),
        ('"Output (b)".', "b"),
        ("**Output (a)**", "a"),
        ("(a)", "a"),
        ("b", "b"),
        ("Tie", "tie"),
        ("tie.", "tie"),
        ("I prefer Output (b) because it is clearer.", "b"),
        ("Output (a) is better than Output (b)", None),
        ("tie a shoelace", None),
        ("Both are fine.", None),
        ("", None),
    ],
)
def test_parse_choice(text: str, choice: str | None) -> None:
    assert parse_choice(text) == choice


# --- OpenAI-compatible judge ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat(tiny_base: Path) -> TinyChatModel:
    return TinyChatModel(tiny_base)


def judge_for(base_url: str, **overrides: object) -> OpenAIJudge:
    settings: dict[str, object] = {"backoff_s": 0.01, "timeout_s": 30.0, "model": "tiny-judge"}
    settings.update(overrides)
    return OpenAIJudge(OpenAIJudgeOptions(base_url=base_url, **settings))  # type: ignore[arg-type]


ITEMS = both_orders("terse", "formal", probe_prompts(2, seed=3))


def test_openai_judge_reads_verdicts_in_order(chat: TinyChatModel) -> None:
    with openai_server(chat) as server:
        judge = judge_for(server.base_url, concurrency=3, name="tiny-judge@local")
        verdicts = judge.judge_many(ITEMS)
    assert judge.name == "tiny-judge@local"
    assert all(v.choice is not None and v.attempts == 1 for v in verdicts)
    assert judge.requests_made == len(ITEMS) == len(server.seen.bodies)
    shown = {body["messages"][0]["content"] for body in server.seen.bodies}
    assert all(any(a in text and b in text for text in shown) for _, a, b in ITEMS)


def test_openai_judge_retries_rate_limits_and_server_errors(chat: TinyChatModel) -> None:
    with openai_server(chat, Faults(fail_429=2, fail_500=2)) as server:
        judge = judge_for(server.base_url, concurrency=1)
        verdicts = judge.judge_many(ITEMS)
    assert all(v.choice is not None for v in verdicts)
    assert judge.requests_made == len(ITEMS) + 4


def test_openai_judge_honours_retry_after(chat: TinyChatModel) -> None:
    with openai_server(chat, Faults(fail_429=1, retry_after="1")) as server:
        judge = judge_for(server.base_url, backoff_s=0.001)
        started = time.monotonic()
        judge.judge_many(ITEMS[:1])
    assert time.monotonic() - started >= 1.0


def test_openai_judge_retries_a_timeout(chat: TinyChatModel) -> None:
    with openai_server(chat, Faults(slow=1, slow_s=1.5)) as server:
        judge = judge_for(server.base_url, timeout_s=0.5)
        verdicts = judge.judge_many(ITEMS[:1])
    assert verdicts[0].choice is not None
    assert judge.requests_made == 2


def test_openai_judge_gives_up_after_its_retries(chat: TinyChatModel) -> None:
    with openai_server(chat, Faults(fail_500=10)) as server:
        judge = judge_for(server.base_url, max_retries=2)
        with pytest.raises(JudgeRequestError, match="gave up after 3 attempts"):
            judge.judge_many(ITEMS[:1])
    assert judge.requests_made == 3


def test_openai_judge_fails_at_once_on_client_errors(chat: TinyChatModel) -> None:
    with openai_server(chat) as server:
        judge = judge_for(server.base_url.replace("/v1", "/v2"))
        with pytest.raises(JudgeRequestError, match="HTTP 404"):
            judge.judge_many(ITEMS[:1])
    assert judge.requests_made == 1


def test_openai_judge_enforces_its_budget(chat: TinyChatModel) -> None:
    with openai_server(chat, Faults(fail_500=5)) as server:
        judge = judge_for(server.base_url, max_requests=3)
        with pytest.raises(BudgetExceeded):
            judge.judge_many(ITEMS)  # four comparisons cannot fit in three requests
        assert server.seen.bodies == []
        with pytest.raises(BudgetExceeded):
            judge.judge_many(ITEMS[:1])  # retries of server errors spend the rest
    assert judge.requests_made == 3


def test_openai_judge_counts_unreadable_verdicts_after_retries(chat: TinyChatModel) -> None:
    with openai_server(chat, Faults(garbage=3)) as server:
        judge = judge_for(server.base_url, max_retries=2, max_tokens=8, concurrency=1)
        verdicts = judge.judge_many(ITEMS[:2])
    assert verdicts[0] == Judgement(choice=None, raw=verdicts[0].raw, attempts=3)
    assert verdicts[1].choice is not None
    assert judge.unparseable == 1
    reminders = server.seen.bodies[2]["messages"]
    assert [m["role"] for m in reminders] == ["user", "assistant", "user", "assistant", "user"]


def test_openai_judge_sends_the_key_as_bearer_and_never_logs_it(
    chat: TinyChatModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("PROBE_JUDGE_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with openai_server(chat, Faults(fail_429=1, fail_500=1, garbage=3)) as server:
        judge = judge_for(
            server.base_url,
            api_key_env="PROBE_JUDGE_KEY",
            max_tokens=8,
            max_retries=2,
            concurrency=1,
        )
        judge.judge_many(ITEMS[:2])
        with pytest.raises(JudgeRequestError) as refused:
            judge_for(
                server.base_url.replace("/v1", "/v2"), api_key_env="PROBE_JUDGE_KEY"
            ).judge_many(ITEMS[:1])
    assert set(server.seen.authorizations) == {f"Bearer {secret}"}
    assert "retry" in caplog.text and "unreadable" in caplog.text
    assert secret not in caplog.text and secret not in str(refused.value)


def test_openai_judge_without_its_key_sends_nothing(
    chat: TinyChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROBE_JUDGE_KEY", raising=False)
    with openai_server(chat) as server:
        judge = judge_for(server.base_url, api_key_env="PROBE_JUDGE_KEY")
        with pytest.raises(JudgeRequestError, match="PROBE_JUDGE_KEY"):
            judge.judge_many(ITEMS[:1])
    assert server.seen.bodies == []


# --- packaging and the SmolLM2 base --------------------------------------------------------------


def test_probe_modules_import_without_torch() -> None:
    """The event-log side of prefleak must not need the `probe` extra to import these modules."""
    modules = ["base", "train", "generate", "judges", "openai_judge"]
    code = (
        "import sys\n"
        + "".join(f"import prefleak.probes.{name}\n" for name in modules)
        + "heavy = {'torch', 'transformers', 'peft', 'vllm'} & set(sys.modules)\n"
        + "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_smollm2_base_is_converted_once_and_generates(tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="GGUF conversion needs the gguf package")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        started = time.monotonic()
        folder = smollm2_base(tmp_path)
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    converted_s = time.monotonic() - started
    started = time.monotonic()
    assert smollm2_base(tmp_path) == folder
    assert time.monotonic() - started < 0.5 < converted_s
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no staging folder left

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply
