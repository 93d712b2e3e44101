"""GPU check: LoRA-train two probe students on a real small model, generate, judge locally, time it.

Issue "LoRA-train two probe students on a real small model, generate with vllm, judge locally,
print timings". Two generators with different styles (tests/probe_data.py: terse, bullets) each
get a student trained on --pairs of their synthetic data; both students answer --prompts held-out
prompts; each student's own adapter then judges the two students' answers in both shown orders by
mean log-likelihood: the "same model" relation of the paper, so each judge should favour its own
generator's student.

    PYTHONPATH=src python bench/probe_gpu.py                     # GPU: SmolLM2, vllm when present
    PYTHONPATH=src python bench/probe_gpu.py --device cpu --backend transformers \
        --pairs 40 --prompts 8

Prints one line per stage as it finishes, then a JSON summary: timings (s), each student's style
marker rate on its answers, and each judge's win rate for the terse student (in both orders).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # probe_data

from prefleak.probes.base import resolve_device, smollm2_base
from prefleak.probes.generate import make_generator
from prefleak.probes.judges import LocalJudge
from prefleak.probes.train import TrainOptions, train_student
from probe_data import STYLES, marker_rate, probe_prompts, styled_pairs

STUDENTS = ("terse", "bullets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, help="HF model folder (default: SmolLM2-135M)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "prefleak")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto")
    parser.add_argument("--pairs", type=int, default=400, help="training pairs per student")
    parser.add_argument(
        "--prompts", type=int, default=50, help="probe prompts (at most 50 distinct)"
    )
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, help="keep adapters here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    device = resolve_device(args.device)
    timings: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        timings[name] = round(time.monotonic() - started, 2)
        print(f"{name}: {timings[name]:.2f} s", flush=True)

    started = time.monotonic()
    base = args.base or smollm2_base(args.cache)
    stage("base", started)

    with tempfile.TemporaryDirectory(prefix="probe-gpu-") as scratch:
        out = args.out or Path(scratch)
        options = TrainOptions(
            epochs=args.epochs, learning_rate=args.learning_rate, device=device, seed=0
        )
        adapters: dict[str, Path] = {}
        for style in STUDENTS:
            started = time.monotonic()
            pairs = styled_pairs(style, args.pairs, seed=0)
            adapters[style] = train_student(base, pairs, out / style, options, progress=print)
            stage(f"train_{style}", started)

        started = time.monotonic()
        prompts = probe_prompts(args.prompts, seed=0)
        generator = make_generator(
            base, backend=args.backend, max_new_tokens=args.max_new_tokens, device=device
        )
        answers = generator.generate(adapters, prompts)
        stage("generate", started)

        started = time.monotonic()
        items = [
            (p, a, b) for p, a, b in zip(prompts, answers["terse"], answers["bullets"], strict=True)
        ]
        items += [(p, b, a) for p, a, b in items]
        half = len(prompts)
        judges: dict[str, Any] = {}
        for style in STUDENTS:
            judge = LocalJudge(f"{style}-judge", base, adapter=adapters[style], device=device)
            verdicts = judge.judge_many(items)
            judges[style] = {
                "terse_wins_shown_first": sum(v.choice == "a" for v in verdicts[:half]) / half,
                "terse_wins_shown_second": sum(v.choice == "b" for v in verdicts[half:]) / half,
            }
        stage("judge", started)

    summary = {
        "base": str(base),
        "device": device,
        "backend": type(generator).__name__,
        "pairs_per_student": args.pairs,
        "prompts": len(prompts),
        "timings_s": timings,
        "marker_rate": {
            student: {style: marker_rate(style, answers[student]) for style in STYLES}
            for student in STUDENTS
        },
        "judge_win_rate_of_terse_student": judges,
        "sample_answers": {student: answers[student][:2] for student in STUDENTS},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
