"""Deterministic synthetic "generator" data for the probe-student tests.

Three generators answer the same simple instructions in clearly different styles, so a tiny
student trained on one generator's data visibly picks up that style, and a judge tuned on it
visibly prefers it: the smallest setting in which preference leakage can be reproduced on a CPU.
Every answer of a style contains that style's `marker`, and no answer of another style does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prefleak.probes.base import TrainPair

# Each task has two short steps; the styles only change how the steps are written.
_TASKS: dict[str, tuple[str, str]] = {
    "boil an egg": ("put the egg in boiling water", "cool it in cold water after nine minutes"),
    "water a plant": ("check that the soil is dry", "pour water slowly at the base"),
    "clean a window": ("spray soapy water on the glass", "wipe it with a dry cloth"),
    "brew tea": ("heat fresh water", "steep the leaves for three minutes"),
    "tie a shoelace": ("cross the laces and pull tight", "make two loops and knot them"),
    "save money": ("write down every expense", "set aside a part of each pay"),
    "learn a word": ("say the word aloud", "use it in a sentence the same day"),
    "fall asleep": ("dim the lights early", "keep the phone out of the bed"),
    "write a letter": ("state the purpose first", "end with a clear request"),
    "plan a trip": ("pick the dates", "book the room before the ticket"),
    "bake bread": ("knead the dough well", "let it rise before baking"),
    "fix a flat tyre": ("find the hole in the tube", "patch it and pump the tyre"),
    "start running": ("run slowly for ten minutes", "add a little distance each week"),
    "wash a shirt": ("read the label", "wash it inside out in cool water"),
    "paint a wall": ("cover the floor", "roll thin coats from top to bottom"),
    "cook rice": ("rinse the rice", "simmer it covered in twice the water"),
    "read faster": ("preview the headings", "avoid reading words twice"),
    "clean a pan": ("soak it in hot water", "scrub it with a soft brush"),
    "pack a bag": ("roll the clothes", "put heavy things at the bottom"),
    "stay focused": ("close other tabs", "work in short timed blocks"),
    "grow basil": ("give it plenty of sun", "pinch off the flower buds"),
    "make coffee": ("grind the beans fresh", "pour hot water in slow circles"),
    "back up files": ("copy them to an external drive", "keep one copy in another place"),
    "sharpen a knife": ("hold the blade at a low angle", "stroke it evenly on the stone"),
    "feed a cat": ("give small meals twice a day", "keep fresh water near the bowl"),
    "cut onions": ("use a sharp knife", "chill the onion first"),
    "learn to swim": ("practise floating first", "add kicks once you feel calm"),
    "clean a keyboard": ("turn it upside down and shake it", "wipe the keys with a damp cloth"),
    "make a salad": ("wash and dry the leaves", "dress it just before serving"),
    "hang a picture": ("mark the height with a pencil", "use a level before the nail"),
    "calm down": ("breathe in slowly for four counts", "breathe out for six counts"),
    "take notes": ("write key words only", "review them the same evening"),
    "store bread": ("keep it in a paper bag", "freeze what you will not eat soon"),
    "jump start a car": ("connect red to red", "connect black to bare metal"),
    "iron a shirt": ("start with the collar", "iron the sleeves before the body"),
    "defrost a freezer": ("unplug it and empty it", "put bowls of hot water inside"),
    "remember names": ("repeat the name when you hear it", "link it to a picture"),
    "clean shoes": ("brush off the dirt", "wipe them with a damp cloth"),
    "make pancakes": ("whisk the batter smooth", "flip when bubbles appear"),
    "walk a dog": ("use a short lead", "let it sniff now and then"),
    "organise a desk": ("clear everything off", "keep only daily things on top"),
    "buy a used car": ("check the service history", "take a test drive"),
    "write a poem": ("pick one strong image", "read it aloud and cut extra words"),
    "prepare for an exam": ("make a study plan", "practise with old papers"),
    "keep plants alive": ("learn how much light each needs", "do not water too often"),
    "clean a mirror": ("use a little vinegar in water", "wipe in a zigzag"),
    "cook pasta": ("salt the boiling water", "taste it a minute early"),
    "lose weight": ("eat more vegetables", "walk every day"),
    "reduce stress": ("sleep enough", "talk to a friend"),
    "speak in public": ("practise in front of a mirror", "pause instead of saying um"),
}
_TEMPLATES = (
    "How do I {task}?",
    "Explain how to {task}.",
    "Give me tips to {task}.",
    "What is the best way to {task}?",
    "Tell me how to {task}.",
)
# The last tasks never appear in training data: probe prompts are about them.
_PROBE_TASK_COUNT = 10
_TASK_NAMES = list(_TASKS)
TRAIN_TASKS = _TASK_NAMES[:-_PROBE_TASK_COUNT]
PROBE_TASKS = _TASK_NAMES[-_PROBE_TASK_COUNT:]


@dataclass(frozen=True)
class Style:
    """How one synthetic generator writes: `marker` is in all of its answers and nobody else's."""

    name: str
    marker: str
    render: Callable[[str, tuple[str, str]], str]

    def answer(self, prompt: str) -> str:
        """This style's answer to any prompt of the pool (training or probe)."""
        task = task_of(prompt)
        return self.render(task, _TASKS[task])


def _terse(task: str, steps: tuple[str, str]) -> str:
    return f"quick answer: {steps[0]}, then {steps[1]}."


def _bullets(task: str, steps: tuple[str, str]) -> str:
    first, second = (step.capitalize() for step in steps)
    return f"Certainly! Here is how to {task}:\n- {first}.\n- {second}."


def _formal(task: str, steps: tuple[str, str]) -> str:
    return (
        f"To {task}, one should first {steps[0]}. Subsequently, one should {steps[1]}. "
        f"In summary, careful preparation is essential."
    )


STYLES: dict[str, Style] = {
    "terse": Style("terse", "quick answer:", _terse),
    "bullets": Style("bullets", "Certainly!", _bullets),
    "formal": Style("formal", "In summary,", _formal),
}


def task_of(prompt: str) -> str:
    """The task a pool prompt asks about (KeyError for a prompt that is not from the pool)."""
    for task in _TASKS:
        if any(prompt == template.format(task=task) for template in _TEMPLATES):
            return task
    raise KeyError(prompt)


def _prompts(tasks: Sequence[str]) -> list[str]:
    return [template.format(task=task) for task in tasks for template in _TEMPLATES]


TRAIN_PROMPTS = _prompts(TRAIN_TASKS)
PROBE_PROMPTS = _prompts(PROBE_TASKS)


def _draw(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """n prompts from pool in seeded order; the pool is reshuffled and reused when n exceeds it."""
    rng = random.Random(seed)
    drawn: list[str] = []
    while len(drawn) < n:
        batch = list(pool)
        rng.shuffle(batch)
        drawn.extend(batch[: n - len(drawn)])
    return drawn


def styled_pairs(style: str, n: int, seed: int) -> list[TrainPair]:
    """n training pairs in `style`; the same seed gives every style the same instructions."""
    writer = STYLES[style]
    return [TrainPair(prompt, writer.answer(prompt)) for prompt in _draw(TRAIN_PROMPTS, n, seed)]


def probe_prompts(n: int, seed: int) -> list[str]:
    """n evaluation prompts about tasks no training pair mentions (n <= 50 gives distinct ones)."""
    return _draw(PROBE_PROMPTS, n, seed + 10_000)


def marker_rate(style: str, texts: Sequence[str]) -> float:
    """Fraction of texts that contain `style`'s marker."""
    marker = STYLES[style].marker
    return sum(marker in text for text in texts) / max(len(texts), 1)


def corpus() -> list[str]:
    """Every prompt and every styled answer: the text a tiny tokenizer is trained on."""
    texts = TRAIN_PROMPTS + PROBE_PROMPTS
    for style in STYLES.values():
        texts.extend(style.answer(prompt) for prompt in TRAIN_PROMPTS + PROBE_PROMPTS)
    return texts
