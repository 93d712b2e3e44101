"""The leakage model: a paired-comparison fit that sees leakage in any comparison graph (pure).

PLS needs two related students compared head to head by two judges. Real streams compare students
with shared baselines, and judges have position and length habits of their own. This model fits
all verdicts at once (docs/statistics.md). For judge J comparing candidates x and y::

    eta = s_x - s_y                                   strengths, shared by all judges
        + sum_k beta_k * (r_k(J, x) - r_k(J, y))      leakage per relation kind
        + gamma_J * ([x = J] - [y = J])               self-preference of judge J
        + pi_J * pos                                  position: +1 x shown first, -1 y first
        + lambda_J * (ln(len_x + 1) - ln(len_y + 1))  length
    P(x wins) = sigmoid(eta - tau),  P(y wins) = sigmoid(-eta - tau),  P(tie) = the rest

``r_k(J, x)`` is the share of x's training data behind its relation of kind k to J (or 1 with
``scale_by_share=False``), from :class:`~prefleak.lineage.Lineage`. Ties get their own threshold
``tau`` (Rao-Kupper / ordered logit), so a tie is neither a win nor half of one.

Fitted by Fisher scoring on verdict counts grouped by (judge, pair, position, length bin), with a
weak ridge on strengths so that candidates in separate comparison graphs stay identifiable.
Intervals come from a one-step prompt bootstrap (the estimating-function bootstrap of Hu and
Kalbfleisch 2000): each resample re-weights prompts and takes one Fisher step from the full fit,
so a thousand resamples cost one bootstrap of a linear statistic instead of a thousand fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse

from prefleak.lineage import Lineage
from prefleak.stats.cells import Cells, FloatArray, IntArray, composite_key
from prefleak.stats.estimate import bootstrap_sums
from prefleak.stats.relations import KINDS, RelationTable, relation_table

STRENGTH_RIDGE = 0.01
"""Penalty on squared strengths: a N(0, 10²) prior, negligible next to any real evidence."""
OTHER_RIDGE = 1e-4
"""Penalty on the other coefficients (a N(0, 100²) prior): keeps a judge that always sided with
its relative, or a term no verdict separates from another, finite instead of singular."""
LENGTH_BIN = 0.1
"""Verdicts whose mean log length ratios differ by less than this share a group."""
MAX_ITERATIONS = 100
TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Parameter:
    """One fitted coefficient (log-odds) with its bootstrap draws."""

    name: str
    value: float
    draws: FloatArray
    n_verdicts: int
    """Verdicts whose covariate for this coefficient is not zero: the evidence behind it."""


@dataclass(frozen=True)
class LeakageFit:
    """A fitted model: leakage per relation kind, per-judge habits, strengths and tie threshold."""

    kinds: dict[str, Parameter]
    self_preference: dict[str, Parameter]
    position: dict[str, Parameter]
    length: dict[str, Parameter]
    strengths: dict[str, float]
    tau: float
    tau_draws: FloatArray
    n_verdicts: int
    n_prompts: int
    converged: bool
    comparisons: dict[str, int] = field(default_factory=dict)
    """Verdicts per candidate, for picking a leaderboard reference."""

    def win_rate(self, x: str, y: str) -> float:
        """Expected win rate of x against y with no judge habit: wins plus half the ties."""
        eta = self.strengths[x] - self.strengths[y]
        return float(_sigmoid(eta - self.tau) + _tie(eta, self.tau) / 2)


def effect_pp(log_odds: npt.ArrayLike, tau: npt.ArrayLike) -> FloatArray:
    """Win-rate points a fully related candidate gains against an equal one (ties are losses).

    ``100 * (sigmoid(beta - tau) - sigmoid(-tau))``: the leakage coefficient on the scale of the
    paper's win rates.
    """
    beta, threshold = np.asarray(log_odds, dtype=np.float64), np.asarray(tau, dtype=np.float64)
    return np.asarray(100 * (_sigmoid(beta - threshold) - _sigmoid(-threshold)))


def _sigmoid(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(0.5 * (1 + np.tanh(np.asarray(x, dtype=np.float64) / 2)))


def _tie(eta: npt.ArrayLike, tau: float) -> FloatArray:
    return np.maximum(1 - _sigmoid(np.asarray(eta) - tau) - _sigmoid(-np.asarray(eta) - tau), 0)


@dataclass(frozen=True)
class _Observations:
    """Verdict counts split by known position, with their group of identical covariates."""

    cell: IntArray
    position: FloatArray
    counts: FloatArray
    group: IntArray
    n_groups: int


def _observations(cells: Cells) -> _Observations:
    """Every cell's verdicts as up to three observations: lo first, hi first, order unknown."""
    unknown = np.maximum(cells.verdicts - cells.lo_first - cells.hi_first, 0)
    n = len(cells)
    index = np.arange(n)
    cell = np.concatenate([index, index, index])
    position = np.concatenate([np.ones(n), -np.ones(n), np.zeros(n)])
    counts = np.concatenate([cells.lo_first, cells.hi_first, unknown])
    keep = np.flatnonzero(counts.sum(axis=1) > 0)  # take: boolean indexing of (n, 3) is slow
    cell, position, counts = cell.take(keep), position.take(keep), counts.take(keep, axis=0)
    bins = np.round(cells.length[cell] / LENGTH_BIN).astype(np.int64)
    columns = [cells.judge[cell], cells.lo[cell], cells.hi[cell], position.astype(np.int64) + 1]
    _, group = np.unique(composite_key([*columns, bins - bins.min(initial=0)]), return_inverse=True)
    group = group.reshape(-1)
    return _Observations(cell, position, counts, group, int(group.max(initial=-1)) + 1)


@dataclass
class _Design:
    """The model matrix of the groups and what each column means."""

    matrix: sparse.csr_matrix
    names: list[str]
    candidates: list[int]
    kinds: dict[str, int]
    selves: dict[int, int]
    positions: dict[int, int]
    lengths: dict[int, int]
    support: FloatArray
    """Per column: verdicts whose covariate is not zero."""


def _design(
    cells: Cells,
    obs: _Observations,
    relations: RelationTable,
    *,
    scale_by_share: bool,
    relation_terms: bool,
) -> _Design:
    n_groups = obs.n_groups
    first = np.zeros(n_groups, dtype=np.int64)
    first[obs.group] = np.arange(obs.group.size)  # one observation standing for its group
    cell = obs.cell[first]
    judge, lo, hi = cells.judge[cell], cells.lo[cell], cells.hi[cell]
    position = obs.position[first]
    weight = obs.counts.sum(axis=1)
    n_in_group = np.bincount(obs.group, weights=weight, minlength=n_groups)
    length = np.bincount(obs.group, weights=weight * cells.length[obs.cell], minlength=n_groups)
    length = np.divide(length, n_in_group, out=np.zeros(n_groups), where=n_in_group > 0)
    has_length = (
        np.bincount(obs.group, weights=cells.has_length[obs.cell] * weight, minlength=n_groups) > 0
    )

    judges = np.unique(judge).tolist()
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    values: list[FloatArray] = []
    names: list[str] = []

    def add_column(name: str, group_rows: IntArray, column_values: FloatArray) -> int | None:
        nonzero = column_values != 0
        if not nonzero.any():
            return None
        index = len(names)
        names.append(name)
        rows.append(group_rows[nonzero])
        cols.append(np.full(int(nonzero.sum()), index))
        values.append(column_values[nonzero])
        return index

    all_rows = np.arange(n_groups)
    present, index_of = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    candidates = present.tolist()
    names.extend(f"strength:{cells.models[c]}" for c in candidates)
    rows.append(np.concatenate([all_rows, all_rows]))
    cols.append(index_of.reshape(-1))
    values.append(np.repeat([1.0, -1.0], n_groups))
    kinds: dict[str, int] = {}
    selves: dict[int, int] = {}
    if relation_terms:
        covariates = np.zeros((n_groups, len(KINDS)))
        for side, sign in ((lo, 1.0), (hi, -1.0)):
            kind_index = relations.kind[judge, side]
            hit = (kind_index >= 0) & (judge != side)  # the judge itself: self-preference's term
            amount = relations.share[judge, side] if scale_by_share else np.ones(n_groups)
            np.add.at(covariates, (np.flatnonzero(hit), kind_index[hit]), sign * amount[hit])
        for k, kind in enumerate(KINDS):
            index = add_column(f"leakage:{kind.value}", all_rows, covariates[:, k])
            if index is not None:
                kinds[kind.value] = index
        for j in judges:
            mine = judge == j
            index = add_column(
                f"self:{cells.models[j]}",
                all_rows[mine],
                (lo[mine] == j).astype(np.float64) - (hi[mine] == j),
            )
            if index is not None:
                selves[j] = index
    positions: dict[int, int] = {}
    lengths: dict[int, int] = {}
    for j in judges:
        mine = judge == j
        index = add_column(f"position:{cells.models[j]}", all_rows[mine], position[mine])
        if index is not None:
            positions[j] = index
        mine_length = mine & has_length
        index = add_column(f"length:{cells.models[j]}", all_rows[mine_length], length[mine_length])
        if index is not None:
            lengths[j] = index
    matrix = sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_groups, len(names)),
    )
    support = np.asarray(abs(matrix).T @ n_in_group).ravel()
    return _Design(matrix, names, candidates, kinds, selves, positions, lengths, support)


def _probabilities(eta: FloatArray, tau: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    p_lo, p_hi = _sigmoid(eta - tau), _sigmoid(-eta - tau)
    return p_lo, p_hi, np.maximum(1 - p_lo - p_hi, 1e-12)


_Triple = tuple[FloatArray, FloatArray, FloatArray]
"""One array per outcome: lo wins, hi wins, tie."""


def _log_likelihood(counts: FloatArray, probabilities: _Triple) -> float:
    stacked = np.stack(probabilities, axis=1)
    return float((counts * np.log(np.maximum(stacked, 1e-300))).sum())


def _derivatives(probabilities: _Triple, tau: float) -> tuple[_Triple, _Triple]:
    """Per row: the derivatives of the outcome probabilities by eta and by log tau."""
    p_lo, p_hi, _ = probabilities
    d_lo, d_hi = p_lo * (1 - p_lo), p_hi * (1 - p_hi)
    by_eta = (d_lo, -d_hi, d_hi - d_lo)
    by_t = (-d_lo * tau, -d_hi * tau, (d_lo + d_hi) * tau)
    return by_eta, by_t


def _gather(columns: _Triple, rows: IntArray) -> _Triple:
    return columns[0][rows], columns[1][rows], columns[2][rows]


def _score_sums(
    counts: FloatArray, probabilities: _Triple, by_eta: _Triple, by_t: _Triple
) -> tuple[FloatArray, FloatArray]:
    """Per row: d loglik / d eta and d loglik / d log tau of its verdict counts."""
    score_eta = sum(counts[:, o] * by_eta[o] / probabilities[o] for o in range(3))
    score_t = sum(counts[:, o] * by_t[o] / probabilities[o] for o in range(3))
    return np.asarray(score_eta), np.asarray(score_t)


def _scores(
    counts: FloatArray, probabilities: _Triple, tau: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per row: d loglik / d eta, d loglik / d log tau, and the three Fisher weights.

    The weights are the expected information of one verdict for (eta, eta), (eta, log tau) and
    (log tau, log tau); times the row's verdicts they make the information matrix.
    """
    by_eta, by_t = _derivatives(probabilities, tau)
    score_eta, score_t = _score_sums(counts, probabilities, by_eta, by_t)
    w_ee = sum(by_eta[o] ** 2 / probabilities[o] for o in range(3))
    w_et = sum(by_eta[o] * by_t[o] / probabilities[o] for o in range(3))
    w_tt = sum(by_t[o] ** 2 / probabilities[o] for o in range(3))
    return score_eta, score_t, np.asarray(w_ee), np.asarray(w_et), np.asarray(w_tt)


@dataclass
class _Solution:
    beta: FloatArray
    log_tau: float | None
    information_inverse: FloatArray
    converged: bool


def _fit(design: _Design, group_counts: FloatArray, with_ties: bool) -> _Solution:
    """Fisher scoring with step halving; ``log_tau`` is None when no verdict was a tie."""
    x = design.matrix
    n_params = x.shape[1]
    ridge = np.full(n_params, OTHER_RIDGE)
    ridge[: len(design.candidates)] = STRENGTH_RIDGE
    beta = np.zeros(n_params)
    log_tau = np.log(0.3) if with_ties else None
    n = group_counts.sum(axis=1)

    def objective(b: FloatArray, t: float | None) -> tuple[float, _Triple]:
        """The penalised log-likelihood, and the probabilities the next step starts from."""
        tau = 0.0 if t is None else float(np.exp(t))
        probabilities = _probabilities(x @ b, tau)
        return _log_likelihood(group_counts, probabilities) - float(ridge @ b**2) / 2, probabilities

    current, probabilities = objective(beta, log_tau)
    converged = False
    information = np.eye(n_params + 1)
    for _ in range(MAX_ITERATIONS):
        tau = 0.0 if log_tau is None else float(np.exp(log_tau))
        score_eta, score_t, w_ee, w_et, w_tt = _scores(group_counts, probabilities, tau)
        gradient = np.append(x.T @ score_eta - ridge * beta, score_t.sum())
        information = np.zeros((n_params + 1, n_params + 1))
        information[:n_params, :n_params] = (x.T @ sparse.diags(n * w_ee) @ x).toarray()
        information[:n_params, :n_params] += np.diag(ridge)
        information[:n_params, n_params] = information[n_params, :n_params] = x.T @ (n * w_et)
        information[n_params, n_params] = (n * w_tt).sum()
        if log_tau is None:
            information[n_params, n_params], gradient[n_params] = 1.0, 0.0
        step = _solve(information, gradient)
        scale = 1.0
        while True:
            candidate_beta = beta + scale * step[:n_params]
            candidate_t = None if log_tau is None else log_tau + scale * step[n_params]
            value, candidate_probabilities = objective(candidate_beta, candidate_t)
            if value >= current - 1e-12 or scale < 1e-6:
                break
            scale /= 2
        beta, log_tau, probabilities = candidate_beta, candidate_t, candidate_probabilities
        improvement, current = value - current, value
        if np.max(np.abs(scale * step)) < TOLERANCE or abs(improvement) < TOLERANCE * (
            1 + abs(current)
        ):
            converged = True
            break
    if log_tau is None:
        information[n_params, :] = information[:, n_params] = 0.0
        information[n_params, n_params] = 1.0
    try:
        inverse = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(information, hermitian=True)
    return _Solution(beta, log_tau, np.asarray(inverse, np.float64), converged)


def _solve(information: FloatArray, gradient: FloatArray) -> FloatArray:
    """The Fisher step; least squares where the information is (numerically) singular."""
    try:
        return np.asarray(np.linalg.solve(information, gradient), np.float64)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.lstsq(information, gradient, rcond=None)[0], np.float64)


def _bootstrap(
    design: _Design,
    obs: _Observations,
    cells: Cells,
    solution: _Solution,
    interest: Sequence[int],
    n_bootstrap: int,
    seed: int,
) -> FloatArray:
    """One-step bootstrap draws (n_bootstrap, len(interest)), plus the draws of log tau last."""
    if n_bootstrap == 0:  # the leaderboard's naive fit: no per-prompt scores to compute
        return np.zeros((0, len(interest) + 1))
    n_params = design.matrix.shape[1]
    tau = 0.0 if solution.log_tau is None else float(np.exp(solution.log_tau))
    eta = design.matrix @ solution.beta
    # the derivatives are functions of eta alone: computed once per group, not per observation
    # (a horizon has five times more observations than groups), and the weights not at all
    probabilities = _probabilities(eta, tau)
    by_eta, by_t = _derivatives(probabilities, tau)
    score_eta, score_t = _score_sums(
        obs.counts, _gather(probabilities, obs.group), _gather(by_eta, obs.group),
        _gather(by_t, obs.group),
    )  # fmt: skip
    rows = [*interest, n_params]
    inverse = solution.information_inverse[rows]  # (m, K + 1)
    through_eta = design.matrix @ inverse[:, :n_params].T  # (groups, m)
    prompts = cells.prompt[obs.cell]
    # per prompt: sum over its verdicts of score x (information^-1 x design row); grouping the
    # eta scores by (prompt, group) first makes it one sparse product instead of m passes
    by_group = sparse.csr_matrix(
        (score_eta, (prompts, obs.group)), shape=(cells.n_prompts, obs.n_groups)
    )
    summed = np.asarray(by_group @ through_eta) + np.outer(
        np.bincount(prompts, weights=score_t, minlength=cells.n_prompts), inverse[:, n_params]
    )
    present = np.any(summed != 0, axis=1)
    per_prompt: FloatArray = np.asarray(summed[present], dtype=np.float64)
    keys = cells.prompt_keys[present]
    draws = bootstrap_sums(per_prompt, n_bootstrap, seed, keys) - per_prompt.sum(axis=0)
    centre = np.append(solution.beta[list(interest)], solution.log_tau or 0.0)
    return np.asarray(centre + draws)


def fit_leakage(
    cells: Cells,
    lineage: Lineage,
    *,
    scale_by_share: bool = True,
    relation_terms: bool = True,
    n_bootstrap: int = 200,
    seed: int = 0,
    relations: RelationTable | None = None,
) -> LeakageFit | None:
    """Fit the model to the cells; None when they hold no verdict. ``relations`` (of the cells'
    vocabulary) saves asking the lineage again when the caller fits many slices."""
    obs = _observations(cells)
    if obs.n_groups == 0:
        return None
    if relations is None:
        relations = relation_table(lineage, cells.models, np.unique(cells.judge).tolist())
    design = _design(
        cells, obs, relations, scale_by_share=scale_by_share, relation_terms=relation_terms
    )
    group_counts = np.zeros((obs.n_groups, 3))
    for o in range(3):
        group_counts[:, o] = np.bincount(
            obs.group, weights=obs.counts[:, o], minlength=obs.n_groups
        )
    solution = _fit(design, group_counts, with_ties=bool(group_counts[:, 2].sum() > 0))
    named = [
        *design.kinds.values(),
        *design.selves.values(),
        *design.positions.values(),
        *design.lengths.values(),
    ]
    draws = _bootstrap(design, obs, cells, solution, named, n_bootstrap, seed)
    column = {index: k for k, index in enumerate(named)}

    def parameter(index: int, name: str) -> Parameter:
        return Parameter(
            name,
            float(solution.beta[index]),
            draws[:, column[index]],
            int(design.support[index]),
        )

    models = cells.models
    strengths = solution.beta[: len(design.candidates)]
    strengths = strengths - strengths.mean()
    verdicts = cells.verdicts.sum(axis=1)
    comparisons = np.bincount(cells.lo, weights=verdicts, minlength=len(models))
    comparisons += np.bincount(cells.hi, weights=verdicts, minlength=len(models))
    return LeakageFit(
        kinds={kind: parameter(i, kind) for kind, i in design.kinds.items()},
        self_preference={models[j]: parameter(i, models[j]) for j, i in design.selves.items()},
        position={models[j]: parameter(i, models[j]) for j, i in design.positions.items()},
        length={models[j]: parameter(i, models[j]) for j, i in design.lengths.items()},
        strengths={models[c]: float(s) for c, s in zip(design.candidates, strengths, strict=True)},
        tau=0.0 if solution.log_tau is None else float(np.exp(solution.log_tau)),
        tau_draws=np.exp(draws[:, -1]) if solution.log_tau is not None else np.zeros(len(draws)),
        n_verdicts=int(group_counts.sum()),
        n_prompts=int(np.count_nonzero(np.bincount(cells.prompt, minlength=cells.n_prompts))),
        converged=solution.converged,
        comparisons={models[c]: int(comparisons[c]) for c in design.candidates},
    )
