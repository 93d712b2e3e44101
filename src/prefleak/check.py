"""Gate an evaluation before it runs: which judges are related to which candidates, and how badly.

Pure (no I/O): everything here works on a :class:`~prefleak.lineage.Lineage` that the caller
built from stored provenance events. ``prefleak check`` and ``POST /v1/check`` answer with
:meth:`CheckResult.to_json`, ``prefleak judges`` with :meth:`Panel.to_json`. Documented in
docs/check.md.

Every finding carries a ``source``: ``"declared"`` when the relation follows from provenance
events someone sent (``model``, ``dataset`` and ``training``), ``"inferred"`` when it comes from a
``relation`` event, such as a style fingerprint's (docs/fingerprints.md), together with that
event's ``confidence``. An inferred relation is flagged with its kind's severity like a declared
one: whoever gates an evaluation should see it, and can read the confidence and the evidence in
its path before overriding the gate.

Severity per relation kind, with the Preference Leakage Score (PLS) that Li et al. 2025 (arXiv
2502.01534) measured for students trained on the related generator's data:

============  ============  ================================================================
kind          severity      expected PLS
============  ============  ================================================================
same_model    high          about 24 %
inheritance   high          no single figure used here: assumed between same_series (9 %) and
                            same_model (24 %), since it is a chain of data or weights back to the
                            judge itself
same_series   medium        about 9 %
same_family   low           about 3 % (same family, different series)
============  ============  ================================================================

The figures are for students trained on the related model's data; the paper finds leakage grows
with the share of such data, so ``share`` is reported next to them but does not change severity.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from prefleak.lineage import Lineage, Relation, RelationKind, RelationSource

CHECK_SCHEMA: Final = "prefleak.check/1"
PANEL_SCHEMA: Final = "prefleak.judges/1"
UNKNOWN_NOTE: Final = "unknown to prefleak: no provenance seen"

Severity = Literal["low", "medium", "high"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)
"""Weakest first."""
DEFAULT_MIN_SEVERITY: Final[Severity] = "medium"
DEFAULT_PANEL_SIZE: Final = 3


@dataclass(frozen=True)
class Expectation:
    """What the paper leads one to expect from a judge related to a candidate in one way."""

    severity: Severity
    expected_pls: float | None
    """The paper's PLS as a fraction (0.24 = 24 %); None where it gives no figure used here."""
    label: str
    """``expected_pls`` for a table: ``~24%``."""
    basis: str


EXPECTATIONS: Final[Mapping[RelationKind, Expectation]] = MappingProxyType({
    RelationKind.SAME_MODEL: Expectation(
        "high", 0.24, "~24%", "Li et al. 2025: about 24 % when the judge generated the data"
    ),
    RelationKind.INHERITANCE: Expectation(
        "high",
        None,
        "assumed 9-24%",
        "assumption: no single figure from Li et al. 2025 is used; taken to lie between "
        "same_series (9 %) and same_model (24 %), as the chain leads back to the judge itself",
    ),
    RelationKind.SAME_SERIES: Expectation(
        "medium", 0.09, "~9%", "Li et al. 2025: about 9 % within the same series"
    ),
    RelationKind.SAME_FAMILY: Expectation(
        "low", 0.03, "~3%", "Li et al. 2025: about 3 % within a family, across series"
    ),
})  # fmt: skip


def severity_rank(severity: Severity) -> int:
    """0 for ``low`` up to 2 for ``high``."""
    return SEVERITIES.index(severity)


def parse_severity(value: object) -> Severity:
    """``value`` as a severity; ValueError naming the choices otherwise."""
    for severity in SEVERITIES:
        if value == severity:
            return severity
    raise ValueError(f"min_severity must be one of {', '.join(SEVERITIES)}, not {value!r}")


# -- check --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One related judge-candidate pair, with the evidence and what to expect from it."""

    judge: str
    candidate: str
    relation: Relation

    @property
    def source(self) -> RelationSource:
        """``declared`` or ``inferred``: where the relation comes from."""
        return self.relation.source

    @property
    def expectation(self) -> Expectation:
        return EXPECTATIONS[self.relation.kind]

    @property
    def severity(self) -> Severity:
        return self.expectation.severity

    def at_least(self, min_severity: Severity) -> bool:
        return severity_rank(self.severity) >= severity_rank(min_severity)

    def to_json(self, min_severity: Severity) -> dict[str, Any]:
        expectation = self.expectation
        return {
            "judge": self.judge,
            "candidate": self.candidate,
            "kind": self.relation.kind.value,
            "share": self.relation.share,
            "source": self.source,
            "confidence": self.relation.confidence,
            "path": list(self.relation.path),
            "severity": expectation.severity,
            "expected_pls": expectation.expected_pls,
            "expected_pls_basis": expectation.basis,
            "blocking": self.at_least(min_severity),
        }


def blocking(findings: Iterable[Finding], min_severity: Severity) -> tuple[Finding, ...]:
    """The findings at or above ``min_severity``: the gate fails when there is any (exit 1)."""
    return tuple(finding for finding in findings if finding.at_least(min_severity))


@dataclass(frozen=True)
class CheckResult:
    """Every relation between the judges and the candidates, and the models nobody described."""

    judges: tuple[str, ...]
    candidates: tuple[str, ...]
    findings: tuple[Finding, ...]
    unknown_judges: tuple[str, ...]
    unknown_candidates: tuple[str, ...]

    def blocking(self, min_severity: Severity) -> tuple[Finding, ...]:
        return blocking(self.findings, min_severity)

    def warnings(self) -> list[str]:
        """One line per problem a person should look at, besides the relations themselves."""
        unknown = [f"{m} (judge)" for m in self.unknown_judges]
        unknown += [f"{m} (candidate)" for m in self.unknown_candidates]
        if not unknown:
            return []
        return [
            f"{UNKNOWN_NOTE}: {', '.join(unknown)}; relations of these models cannot be checked "
            "(send their model, dataset and training events)"
        ]

    def to_json(self, min_severity: Severity) -> dict[str, Any]:
        """The ``prefleak.check/1`` document (docs/check.md), as ``check --json`` prints it."""
        return {
            "schema": CHECK_SCHEMA,
            "min_severity": min_severity,
            "blocking": bool(self.blocking(min_severity)),
            "judges": list(self.judges),
            "candidates": list(self.candidates),
            "relations": [finding.to_json(min_severity) for finding in self.findings],
            "unknown": {
                "judges": list(self.unknown_judges),
                "candidates": list(self.unknown_candidates),
                "note": UNKNOWN_NOTE,
            },
            "warnings": self.warnings(),
        }


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def is_known(lineage: Lineage, model: str, known: set[str] | None = None) -> bool:
    """Whether any provenance event mentions ``model``; people need none (they are never LLMs)."""
    return model in (lineage.models() if known is None else known) or lineage.is_human(model)


def check(lineage: Lineage, judges: Iterable[str], candidates: Iterable[str]) -> CheckResult:
    """Every related (judge, candidate) pair, judges in the order given, then candidates.

    Unknown models are not an error: they are unrelated to everything but themselves (a judge
    judging itself is ``same_model`` even if never registered) and are listed apart.
    """
    judge_list, candidate_list = _unique(judges), _unique(candidates)
    findings = []
    for judge in judge_list:
        for candidate in candidate_list:
            relation = lineage.relation(judge, candidate)
            if relation.related:
                findings.append(Finding(judge, candidate, relation))
    known = lineage.models()
    return CheckResult(
        judges=judge_list,
        candidates=candidate_list,
        findings=tuple(findings),
        unknown_judges=tuple(m for m in judge_list if not is_known(lineage, m, known)),
        unknown_candidates=tuple(m for m in candidate_list if not is_known(lineage, m, known)),
    )


# -- the HTTP request -----------------------------------------------------------------------------


class CheckRequestError(ValueError):
    """A ``POST /v1/check`` body that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class CheckRequest:
    judges: tuple[str, ...]
    candidates: tuple[str, ...]
    min_severity: Severity


_REQUEST_KEYS = ("judges", "candidates", "min_severity")


def parse_check_request(body: bytes, default_min_severity: Severity) -> CheckRequest:
    """``{"judges": [...], "candidates": [...], "min_severity": "medium"}``, the last optional."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckRequestError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckRequestError(
            'body must be a JSON object like {"judges": ["j"], "candidates": ["a", "b"]}'
        )
    extra = sorted(set(data) - set(_REQUEST_KEYS))
    if extra:
        raise CheckRequestError(
            f"unknown field(s) {', '.join(map(repr, extra))}; expected {', '.join(_REQUEST_KEYS)}"
        )
    judges = _names(data, "judges")
    candidates = _names(data, "candidates")
    try:
        severity = parse_severity(data.get("min_severity", default_min_severity))
    except ValueError as exc:
        raise CheckRequestError(str(exc)) from None
    return CheckRequest(judges, candidates, severity)


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        raise CheckRequestError(f"{key!r} is required: a non-empty list of model ids")
    if not isinstance(value, list) or not value:
        raise CheckRequestError(f"{key!r} must be a non-empty list of model ids")
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise CheckRequestError(f"{key!r} must hold non-empty strings, not {item!r}")
        names.append(item.strip())
    return _unique(names)


# -- judge panel ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    """A model that was not put on the panel, and why."""

    model: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"model": self.model, "reason": self.reason}


@dataclass(frozen=True)
class Panel:
    """Judges proposed for a set of candidates (see :func:`propose_panel`)."""

    candidates: tuple[str, ...]
    size: int
    judges: tuple[str, ...]
    alternates: tuple[str, ...]
    """Unrelated to every candidate and every judge proposed, but beyond ``size`` (they may be
    related to each other)."""
    excluded: tuple[Exclusion, ...]
    notes: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return len(self.judges) >= self.size

    def to_json(self) -> dict[str, Any]:
        """The ``prefleak.judges/1`` document (docs/check.md), as ``judges --json`` prints it."""
        return {
            "schema": PANEL_SCHEMA,
            "candidates": list(self.candidates),
            "size": self.size,
            "complete": self.complete,
            "judges": list(self.judges),
            "alternates": list(self.alternates),
            "excluded": [exclusion.to_json() for exclusion in self.excluded],
            "notes": list(self.notes),
        }


def describe(relation: Relation) -> str:
    """``same_series (share 0.3): a trained on ...; ...``: a relation in one line."""
    why = "; ".join(relation.path)
    return f"{relation.kind.value} (share {relation.share:g})" + (f": {why}" if why else "")


def _related(lineage: Lineage, a: str, b: str) -> Relation | None:
    """The stronger of the two directions' relations, or None when unrelated both ways."""
    best = max(
        (lineage.relation(a, b), lineage.relation(b, a)), key=lambda r: (r.kind.strength, r.share)
    )
    return best if best.related else None


def propose_panel(
    lineage: Lineage, candidates: Sequence[str], size: int = DEFAULT_PANEL_SIZE
) -> Panel:
    """Up to ``size`` judges, each unrelated to every candidate and to each other.

    Eligible: every model any provenance event mentions that is not a candidate and not a person
    (prefleak does not know which models can judge; pick among the proposal). Judges on one panel
    must be *unrelated* to each other by :meth:`Lineage.relation`, in both directions: that means
    no shared family or series and no chain of data or weights, so each comes from a different
    family. A model without a declared family (on itself or the weights it came from) cannot be
    placed in one, so it counts as a family of its own: declare families in model events for this
    to mean something. Models are tried in name order, so the answer is deterministic (greedy, so
    not always the largest possible panel); eligible models left over are ``alternates``.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    wanted = _unique(candidates)
    known = lineage.models()
    notes: list[str] = []
    unknown = [c for c in wanted if not is_known(lineage, c, known)]
    if unknown:
        notes.append(
            f"{UNKNOWN_NOTE}: {', '.join(unknown)} (candidate); no judge can be checked against "
            "these, so their relation to the panel is not known"
        )
    excluded: list[Exclusion] = []
    eligible: list[str] = []
    skipped_people = 0
    for model in sorted(known - set(wanted)):
        if lineage.is_human(model):
            skipped_people += 1
            continue
        related = [(c, r) for c in wanted if (r := _related(lineage, model, c)) is not None]
        if related:
            candidate, relation = max(related, key=lambda cr: (cr[1].kind.strength, cr[1].share))
            reason = f"related to candidate {candidate}: {describe(relation)}"
            excluded.append(Exclusion(model, reason))
        else:
            eligible.append(model)
    panel: list[str] = []
    alternates: list[str] = []
    for model in eligible:
        clash = next(
            ((p, r) for p in panel if (r := _related(lineage, model, p)) is not None), None
        )
        if clash is not None:
            excluded.append(
                Exclusion(model, f"related to panel judge {clash[0]}: {describe(clash[1])}")
            )
        elif len(panel) < size:
            panel.append(model)
        else:
            alternates.append(model)
    if len(panel) < size:
        by_candidate = sum(1 for e in excluded if e.reason.startswith("related to candidate"))
        notes.append(
            f"only {len(panel)} of {size} judges available: of {len(known)} known model(s), "
            f"{len(set(wanted) & known)} are candidates, {skipped_people} are people, "
            f"{by_candidate} are related to a candidate and {len(excluded) - by_candidate} are "
            "related to (e.g. in the family of) a judge already chosen; register more models "
            "(model events with their family) or ask for a smaller panel"
        )
    return Panel(
        candidates=wanted,
        size=size,
        judges=tuple(panel),
        alternates=tuple(alternates),
        excluded=tuple(excluded),
        notes=tuple(notes),
    )
