"""Probe runs in a process of their own, one at a time, on a schedule.

Training and judging take minutes to hours and gigabytes; in the daemon's process they would
stall ingestion and scrapes (the GIL, memory), and a crash or an OOM kill would take the daemon
with them. So :class:`ProbeRunner` plans a run in the calling process (cheap, reads the store),
records it ``running``, and executes it in a ``spawn``-ed child that imports torch on its own.
The parent waits with a deadline: a child that exceeds ``probe.max_run_s`` is killed (hung), one
that dies without a word (a signal, the OOM killer) or reports an exception is recorded failed
with the reason, and the caller carries on. :class:`ProbeScheduler` decides when the next run
starts: by interval, or when a generator has enough new samples.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from prefleak.config import ProbeSettings
from prefleak.daemon.commands import LOG_FORMAT
from prefleak.models.events import DatasetEvent, SampleEvent
from prefleak.probes.runs import PlanError, ProbePlan, execute, plan_cycle
from prefleak.store import EventStore

log = logging.getLogger(__name__)

HEAVY_MODULES = frozenset({"torch", "transformers", "peft", "accelerate", "safetensors", "vllm",
                           "gguf", "numpy", "sklearn"})  # fmt: skip
"""Modules of the ``probe`` extra: a run without them fails with that reason, nothing else."""
INTERRUPTED = "interrupted: the process running it stopped before it finished"
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended, as recorded in ``probe_runs``."""

    run_id: int
    succeeded: bool
    duration_s: float
    verdicts: int = 0
    unparseable: int = 0
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """The ``outcome`` label of ``prefleak_probe_runs_total``."""
        if self.succeeded:
            return "success"
        reason = self.reason or ""
        for kind in ("hung", "killed", "interrupted", "no data", "probe extra"):
            if reason.startswith(kind):
                return kind.replace(" ", "_")
        return "error"


def recover_interrupted(db: Path) -> int:
    """Mark runs left ``running`` by a process that died failed; at start, before any run."""
    with EventStore(db) as store:
        count = store.interrupt_probe_runs(time.time(), INTERRUPTED)
    if count:
        log.warning("probe: %d run(s) left running by a stopped process marked failed", count)
    return count


def last_success(db: Path) -> float | None:
    """When the last successful run ended, as recorded in the store (None: never)."""
    with EventStore(db) as store:
        ended = [run.ended for run in store.probe_runs() if run.status == "succeeded"]
    return max((end for end in ended if end is not None), default=None)


class ProbeRunner:
    """Runs probe cycles one at a time, each in a spawned child process with a deadline."""

    def __init__(self, settings: ProbeSettings, db: Path, *, hash_texts: bool = False) -> None:
        self.settings, self.db, self.hash_texts = settings, db, hash_texts
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None

    @property
    def worker_pid(self) -> int | None:
        """The child's pid while a run executes."""
        process = self._process
        return None if process is None else process.pid

    def run_once(self, stop: threading.Event | None = None) -> RunOutcome:
        """Plan, execute and record one run; never raises for a failed run. ``stop`` ends a
        run early (killed, recorded failed) when the daemon shuts down."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("a probe run is already running")
        try:
            return self._run(stop or threading.Event())
        finally:
            self._lock.release()

    def _run(self, stop: threading.Event) -> RunOutcome:
        started = time.time()
        with EventStore(self.db) as store:
            try:
                plan: ProbePlan | None = plan_cycle(store, self.settings)
                reason = None
            except PlanError as exc:
                plan, reason = None, f"no data: {exc}"
            detail = self._detail(plan)
            run_id = store.start_probe_run(started, store.last_seq() if plan is None
                                           else plan.sample_seq, json.dumps(detail))  # fmt: skip
        log.info("probe run %d started: %s", run_id, _summary(detail))
        report: dict[str, Any] = {}
        if plan is not None:
            report, reason = self._execute(run_id, plan, stop)
        detail["artifacts"] = report.get("artifacts", {})
        outcome = RunOutcome(
            run_id=run_id,
            succeeded=reason is None,
            duration_s=time.time() - started,
            verdicts=int(report.get("verdicts", 0)),
            unparseable=sum(report.get("unparseable", {}).values()),
            reason=reason,
            detail=detail | {"unparseable_by_judge": report.get("unparseable", {})},
        )
        with EventStore(self.db) as store:
            store.finish_probe_run(
                run_id, status="succeeded" if outcome.succeeded else "failed",
                ended=started + outcome.duration_s, detail=json.dumps(outcome.detail),
                verdicts=outcome.verdicts, unparseable=outcome.unparseable, reason=reason,
            )  # fmt: skip
        if outcome.succeeded:
            log.info("probe run %d succeeded in %.0f s: %d verdicts, %d unparseable judgements",
                     run_id, outcome.duration_s, outcome.verdicts, outcome.unparseable)  # fmt: skip
        else:
            log.error("probe run %d failed after %.0f s: %s", run_id, outcome.duration_s, reason)
        return outcome

    def _detail(self, plan: ProbePlan | None) -> dict[str, Any]:
        settings = self.settings
        return {
            **(plan.describe() if plan is not None else {}),
            "base_model": settings.base_model,
            "base_name": settings.base_name,
            "judges": [judge.model_dump(mode="json") for judge in settings.judges],
        }

    def _execute(
        self, run_id: int, plan: ProbePlan, stop: threading.Event
    ) -> tuple[dict[str, Any], str | None]:
        """Run the plan in a child; returns its report and why it failed (None: it did not)."""
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        workdir = self.settings.artifacts_dir / f"run-{run_id}"
        process = context.Process(
            target=_child,
            args=(plan, self.settings.model_dump(mode="json"), str(self.db), str(workdir),
                  self.hash_texts, sender, os.getpid()),
            name=f"prefleak-probe-{run_id}",
            daemon=True,
        )  # fmt: skip
        process.start()
        sender.close()
        self._process = process
        try:
            return self._wait(process, receiver, stop)
        finally:  # also on Ctrl-C: a worker never outlives the run that started it
            _kill(process)
            self._process = None
            receiver.close()

    def _wait(
        self,
        process: multiprocessing.process.BaseProcess,
        receiver: Connection,
        stop: threading.Event,
    ) -> tuple[dict[str, Any], str | None]:
        deadline = time.monotonic() + self.settings.max_run_s
        while time.monotonic() < deadline and not stop.is_set():
            if receiver.poll(0.2):
                try:
                    message: dict[str, Any] = receiver.recv()
                except EOFError:  # the child died before it could say anything
                    break
                process.join(KILL_GRACE_S)
                _kill(process)
                return message, message.get("error")
            if not process.is_alive() and not receiver.poll(0):
                break
        if stop.is_set() and process.is_alive():
            _kill(process)
            return {}, "interrupted: asked to stop (SIGTERM or SIGINT) during the run"
        # A worker that closed its end of the pipe is exiting: give it the moment that takes.
        process.join(KILL_GRACE_S if time.monotonic() < deadline else 0)
        if process.is_alive():
            _kill(process)
            return (
                {},
                f"hung: still running after probe.max_run_s = {self.settings.max_run_s} s; killed",
            )
        return {}, _death(process.exitcode)


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join()


def _death(exitcode: int | None) -> str:
    """Why a child that sent no report ended."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = (
            " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        )
        return f"killed by {name}{hint}"
    return f"the worker exited with code {exitcode} without a report"


def _summary(detail: dict[str, Any]) -> str:
    if "generators" not in detail:
        return "nothing to plan"
    sizes = detail["sizes"]
    return (
        f"generators {', '.join(detail['generators'])} ({sizes['samples']} samples), "
        f"{sizes['prompts']} prompts, {len(detail['judges'])} judges, base {detail['base_model']}"
    )


def _child(
    plan: ProbePlan,
    settings: dict[str, Any],
    db: str,
    workdir: str,
    hash_texts: bool,
    report: Connection,
    parent: int,
) -> None:
    """The worker process: execute the plan and send one report (the error, if any)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    _exit_with_parent(parent)
    progress = logging.getLogger("prefleak.probes").info
    try:
        directory = Path(workdir)
        directory.mkdir(parents=True, exist_ok=True)
        with EventStore(db) as store:
            result = execute(plan, ProbeSettings.model_validate(settings), store, directory,
                             hash_texts=hash_texts, progress=progress)  # fmt: skip
        report.send({
            "verdicts": result.verdicts,
            "unparseable": result.unparseable,
            "artifacts": result.artifacts,
            "stored": {"accepted": result.stored.accepted, "duplicate": result.stored.duplicate,
                       "rejected": result.stored.rejected},
        })  # fmt: skip
    except BaseException as exc:  # every failure, KeyboardInterrupt too, must reach the record
        log.debug("probe worker failed", exc_info=True)
        report.send({"error": describe_failure(exc)})
        traceback.print_exc()
        raise SystemExit(1) from None


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this worker when the process that started it (``parent``, passed in: it may have
    died before this line ran) is gone: nobody would read the report, and the worker would hold
    the memory and cores the next run needs."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def describe_failure(exc: BaseException) -> str:
    """One line for the run record: what failed, in terms an operator can act on."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in HEAVY_MODULES:
        return f"probe extra not installed: {exc} (pip install 'prefleak[probe]')"
    if isinstance(exc, MemoryError):
        return "out of memory in the worker (smaller batch_size, max_length or model)"
    return f"{type(exc).__name__}: {exc}"


class ProbeScheduler:
    """Starts a run when the schedule says so, one at a time, until ``stop`` is set."""

    def __init__(
        self,
        runner: ProbeRunner,
        *,
        on_outcome: Callable[[RunOutcome], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runner = runner
        self.schedule = runner.settings.schedule
        self._on_outcome = on_outcome
        self._clock = clock
        self._since_seq = self._counted_seq = -1
        self._new_samples: Counter[str] = Counter()
        """New instruction samples per dataset since the last run's plan."""

    def run(self, stop: threading.Event) -> None:
        """The scheduler loop (a daemon thread of ``serve``, or ``probe run`` in the foreground)."""
        recover_interrupted(self.runner.db)
        while not stop.is_set():
            try:
                self._maybe_run(stop)
            except Exception:  # a store error must not end the schedule (nor the daemon)
                log.exception("probe: the scheduler failed; trying again")
            stop.wait(self.schedule.poll_interval_s)

    def _maybe_run(self, stop: threading.Event) -> None:
        why = self.due()
        if why is not None:
            log.info("probe: starting a run (%s)", why)
            outcome = self.runner.run_once(stop)
            if self._on_outcome is not None:
                self._on_outcome(outcome)

    def due(self) -> str | None:
        """Why a run should start now, or None."""
        with EventStore(self.runner.db) as store:
            runs = store.probe_runs(limit=1)
            last = runs[0] if runs else None
            interval = self.schedule.interval_s
            if interval is not None and (last is None or self._clock() - last.started >= interval):
                return "first run" if last is None else f"interval of {interval} s passed"
            every = self.schedule.every_new_samples
            if every is not None:
                generator, count = self._most_new_samples(
                    store, 0 if last is None else last.sample_seq
                )
                if count >= every:
                    return f"{count} new samples of {generator}"
        return None

    def _most_new_samples(self, store: EventStore, since_seq: int) -> tuple[str, int]:
        """The generator with the most new instruction samples since ``since_seq``, counted
        incrementally: only samples stored since the last check are read."""
        if since_seq != self._since_seq:
            self._since_seq = self._counted_seq = since_seq
            self._new_samples.clear()
        for seq, event in store.events_after(self._counted_seq, ["sample"]):
            self._counted_seq = seq
            if isinstance(event, SampleEvent) and event.prompt is not None and event.model is None:
                self._new_samples[event.dataset] += 1
        per_generator: Counter[str] = Counter()
        for event in store.events(types=["dataset"]):
            if isinstance(event, DatasetEvent) and event.role == "training" and event.generator:
                per_generator[event.generator] += self._new_samples.get(event.dataset, 0)
        return max(per_generator.items(), key=lambda item: item[1], default=("", 0))
