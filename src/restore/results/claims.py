"""The RESTORE paper's claims C1–C5, and C6 beyond the paper (does its regulariser help the methods that came
after it?), checked on the runs of a claims sweep: numbers, spread, verdict.

The sweep file (``configs/sweeps/world_claims.yaml``) names the runs; each of its cells is found in the
results database by the config hash the sweep itself uses to skip finished cells (`restore.scale.claim_runs`), so a
claim reads exactly the runs the sweep made, never a stray run of another schedule or backbone. A method's
variant is an *arm*: the method plus the overrides the sweep tagged it with (``restore_m`` with
``method.fs_weight: 0.5``).

World averages, per seed: Base and Novel are the mean over the sweep's tasks of the top-1 accuracy; HM is
2·B·N/(B+N) of those means (the papers' "Average" HM); the discrepancy is the mean over tasks of the run's
recorded inter-modal discrepancy of feature shift (``metrics.shift.discrepancy``: Σ_l (s_l^v − s_l^t)², the
profile `restore analyze` computes, measured by `restore.analysis.shift.measure_shifts` at the end of every
run). A gain is a world average minus zero-shot CLIP's on the same tasks (zero-shot learns nothing: its
runs are averaged over whatever seeds it has).

Decision rules (``K = 2``, ``ALPHA = 0.05``):

- *Paired comparison* "A beats B" (C1, C4, C5, C6): per seed s, d_s = world metric of A − that of B (seeds
  pair the runs: same few-shot draw, same initial draws where the methods share them). With the mean d̄
  and its standard error SE = sd(d_s)/√n over the n seeds: **holds** if d̄ > K·SE, **does not hold** if
  d̄ < −K·SE, otherwise **inconclusive**; fewer than 2 seeds is inconclusive (no spread to judge by).
  With 3 seeds, K·SE is a rough yardstick, not a 5 % test (that would need t₀.₉₇₅,₂ ≈ 4.3).
- *Trend* "raising λ_fs lowers Base and raises Novel" (C3): per seed, the least-squares slope of the world
  metric against λ_fs over the λ values; the slopes go through the same rule (Base: −slope, Novel: +slope).
- *Rank correlation* (C2): one point per method, (mean over seeds of its world discrepancy, mean over seeds
  of its world gain), for Base and for Novel. Spearman's ρ (average ranks for ties), with the exact one-sided
  permutation p-values over all n! orderings: **holds** if P(ρ_perm ≤ ρ) ≤ ALPHA, **does not hold** if
  P(ρ_perm ≥ ρ) ≤ ALPHA, otherwise **inconclusive**. With 6 methods the smallest p is 1/720 and ρ must reach
  about −0.83 to hold. The spread is ρ computed per seed (mean ± std over seeds).
- A claim with several checks **holds** when every check holds, **does not hold** when any does not, and is
  **inconclusive** otherwise. A check any of whose runs is missing (not finished, or without a recorded
  shift where it needs one) is **inconclusive** and names the missing runs; it never guesses.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from restore.results.records import RunRecord, harmonic_mean

K = 2.0
ALPHA = 0.05
HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
Verdict = Literal["holds", "does not hold", "inconclusive"]
Metric = Literal["base", "novel", "hm", "discrepancy"]
#: A world average needs every task; these read one run.
SPLITS = ("base", "novel")
#: Exact permutation tests enumerate n! orderings: at most this many points (8! = 40,320).
MAX_EXACT_POINTS = 8


def _norm(value: Any) -> Any:
    """Override values compared as numbers when they are numbers (YAML's ``0`` and ``0.0`` are one λ)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return float(value)


@dataclass(frozen=True)
class Arm:
    """A method and the overrides the sweep tagged it with: one configuration of the claims."""

    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, method: str, **overrides: Any) -> Arm:
        return cls(method, tuple(sorted((f"method.{k}", _norm(v)) for k, v in overrides.items())))

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.method
        return f"{self.method} [{','.join(f'{k}={v}' for k, v in self.overrides)}]"


def arm_of_point(method: str, point: Iterable[tuple[str, Any]]) -> Arm:
    return Arm(method, tuple(sorted((k, _norm(v)) for k, v in point)))


# -- the runs ----------------------------------------------------------------------------------------------


@dataclass
class ClaimRuns:
    """The sweep's cells and the finished run found for each: ``(arm, dataset, seed) -> record``."""

    datasets: list[str]
    seeds: list[int]
    expected: set[tuple[Arm, str, int]]
    runs: dict[tuple[Arm, str, int], RunRecord] = field(default_factory=dict)

    def cells(self, arm: Arm) -> list[tuple[Arm, str, int]]:
        return sorted((c for c in self.expected if c[0] == arm), key=lambda c: (c[2], c[1]))

    def missing(self, arms: Iterable[Arm], *, shift: bool = False) -> list[tuple[str, str]]:
        """(arm label, run) for each of the arms' cells without a finished run (or, with ``shift``, without
        a recorded shift); an arm the sweep does not have is one entry."""
        out = []
        for arm in arms:
            cells = self.cells(arm)
            if not cells:
                out.append((arm.label, f"{arm.label} (not in the sweep file)"))
            for cell in cells:
                record = self.runs.get(cell)
                if record is None:
                    out.append((arm.label, f"{arm.label} {cell[1]} seed {cell[2]}"))
                elif shift and _discrepancy(record) is None:
                    out.append((arm.label, f"{arm.label} {cell[1]} seed {cell[2]} (no recorded shift)"))
        return out

    def world(self, arm: Arm, seed: int, metric: Metric) -> float | None:
        """The world average of ``metric`` for one seed; None unless every task has its run."""
        records = [self.runs.get((arm, d, seed)) for d in self.datasets]
        if any(r is None for r in records):
            return None
        if metric == "discrepancy":
            values = [_discrepancy(r) for r in records if r is not None]
            return None if any(v is None for v in values) else statistics.fmean(v for v in values if v is not None)
        base = statistics.fmean(_top1(r, "base") for r in records if r is not None)
        novel = statistics.fmean(_top1(r, "novel") for r in records if r is not None)
        return {"base": base, "novel": novel, "hm": harmonic_mean(base, novel)}[metric]

    def per_seed(self, arm: Arm, metric: Metric) -> dict[int, float]:
        """Seed -> world average, for the seeds where it is complete."""
        out = {}
        for seed in self.seeds:
            value = self.world(arm, seed, metric)
            if value is not None:
                out[seed] = value
        return out

    def zero_shot(self, arm: Arm, metric: Metric) -> float | None:
        """Zero-shot's world average of base or novel, each task averaged over the seeds it has."""
        by_task = []
        for d in self.datasets:
            values = [_top1(r, metric) for (a, dd, _), r in self.runs.items() if a == arm and dd == d]
            if not values:
                return None
            by_task.append(statistics.fmean(values))
        return statistics.fmean(by_task)

    def shift_measures(self, arms: Iterable[Arm]) -> set[str]:
        arms = set(arms)
        return {
            str(r.metrics["shift"].get("measure", "?"))
            for (a, _, _), r in self.runs.items()
            if a in arms and isinstance(r.metrics.get("shift"), Mapping)
        }


def _top1(record: RunRecord, split: str) -> float:
    return float(record.metrics[split]["top1"])


def _discrepancy(record: RunRecord) -> float | None:
    shift = record.metrics.get("shift")
    value = shift.get("discrepancy") if isinstance(shift, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


# -- the statistics ----------------------------------------------------------------------------------------


def paired_verdict(diffs: Sequence[float], k: float = K) -> tuple[Verdict, float | None, float | None]:
    """(verdict, mean difference, its standard error) by the paired rule of the module docstring."""
    if len(diffs) < 2:
        return UNSURE, (statistics.fmean(diffs) if diffs else None), None
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    if mean > k * se:
        return HOLDS, mean, se
    if mean < -k * se:
        return FAILS, mean, se
    return UNSURE, mean, se


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            out[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ: the Pearson correlation of the ranks; None for fewer than 3 points or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    return _pearson(ranks(x), ranks(y))


def spearman_test(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(ρ, P(ρ_perm ≤ ρ), P(ρ_perm ≥ ρ)) over every ordering of y against x (exact; ≤ 8 points)."""
    rho = spearman(x, y)
    if rho is None or len(x) > MAX_EXACT_POINTS:
        return rho, None, None
    rx, ry = ranks(x), ranks(y)
    low = high = total = 0
    for perm in itertools.permutations(ry):
        r = _pearson(rx, perm)
        r = 0.0 if r is None else r
        total += 1
        low += r <= rho + 1e-12
        high += r >= rho - 1e-12
    return rho, low / total, high / total


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x."""
    mx, my = statistics.fmean(x), statistics.fmean(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def combine(verdicts: Iterable[str]) -> Verdict:
    verdicts = list(verdicts)
    if any(v == FAILS for v in verdicts):
        return FAILS
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return UNSURE


def mean_std(values: Iterable[float], digits: int = 2) -> str:
    values = list(values)
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# -- the claims --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One tested statement of a claim, with its numbers and the verdict of its rule."""

    statement: str
    numbers: str
    difference: str
    verdict: Verdict
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    key: str
    source: str
    statement: str
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> Verdict:
        return combine(c.verdict for c in self.checks)


def _missing_check(statement: str, missing: Sequence[tuple[str, str]]) -> Check:
    """Inconclusive, naming the missing runs: each arm's runs listed when few, else counted (the full list
    stays on the Check)."""
    by_arm: dict[str, list[str]] = {}
    for arm, run in missing:
        by_arm.setdefault(arm, []).append(run)
    summary = "; ".join(
        "; ".join(runs) if len(runs) <= 2 else f"{arm}: {len(runs)} runs" for arm, runs in by_arm.items()
    )
    return Check(statement, f"missing {len(missing)} run(s): {summary}", "–", UNSURE, tuple(r for _, r in missing))


def compare(runs: ClaimRuns, a: Arm, b: Arm, metric: Metric, statement: str) -> Check:
    """The paired rule on ``metric``: does ``a`` beat ``b``?"""
    missing = runs.missing((a, b), shift=metric == "discrepancy")
    if missing:
        return _missing_check(statement, missing)
    va, vb = runs.per_seed(a, metric), runs.per_seed(b, metric)
    seeds = sorted(set(va) & set(vb))
    diffs = [va[s] - vb[s] for s in seeds]
    verdict, mean, se = paired_verdict(diffs)
    digits = 4 if metric == "discrepancy" else 2
    numbers = f"{a.label} {mean_std(va.values(), digits)}; {b.label} {mean_std(vb.values(), digits)}"
    return Check(statement, numbers, _difference(mean, se, len(diffs), digits), verdict)


def _difference(mean: float | None, se: float | None, n: int, digits: int = 2) -> str:
    if mean is None:
        return "–"
    if se is None:
        return f"{mean:+.{digits}f} ({n} seed{'s' if n != 1 else ''}: no spread)"
    return f"{mean:+.{digits}f} (SE {se:.{digits}f}, {n} seeds)"


def trend(runs: ClaimRuns, arms: Sequence[tuple[float, Arm]], metric: Metric, sign: int, statement: str) -> Check:
    """Per-seed slope of the world ``metric`` against λ, judged by the paired rule (``sign`` −1: lowers)."""
    missing = runs.missing(a for _, a in arms)
    if missing:
        return _missing_check(statement, missing)
    per = {lam: runs.per_seed(arm, metric) for lam, arm in arms}
    seeds = sorted(set.intersection(*(set(v) for v in per.values())))
    slopes = [slope([lam for lam, _ in arms], [per[lam][s] for lam, _ in arms]) for s in seeds]
    verdict, mean, se = paired_verdict([sign * s for s in slopes])
    numbers = "; ".join(f"λ={lam:g}: {mean_std(per[lam].values())}" for lam, _ in arms)
    diff = (
        "–"
        if mean is None
        else f"slope {sign * mean:+.3f}/unit λ"
        + (f" (SE {se:.3f}, {len(slopes)} seeds)" if se is not None else f" ({len(slopes)} seed: no spread)")
    )
    return Check(statement, numbers, diff, verdict)


def correlation(runs: ClaimRuns, arms: Sequence[Arm], zero: Arm, split: Metric, statement: str) -> Check:
    """Spearman's ρ between the methods' discrepancy and their ``split`` gain over zero-shot (C2)."""
    missing = runs.missing(arms, shift=True) + runs.missing((zero,))
    if missing:
        return _missing_check(statement, missing)
    measures = runs.shift_measures(arms)
    if len(measures) > 1:
        return Check(statement, f"the runs measured the shift differently ({', '.join(sorted(measures))})", "–", UNSURE)
    zs = runs.zero_shot(zero, split)
    assert zs is not None  # not missing
    disc = {a: runs.per_seed(a, "discrepancy") for a in arms}
    acc = {a: runs.per_seed(a, split) for a in arms}
    x = [statistics.fmean(disc[a].values()) for a in arms]
    y = [statistics.fmean(acc[a].values()) - zs for a in arms]
    rho, p_low, p_high = spearman_test(x, y)
    per_seed = []
    for s in runs.seeds:
        if all(s in disc[a] and s in acc[a] for a in arms):
            r = spearman([disc[a][s] for a in arms], [acc[a][s] - zs for a in arms])
            if r is not None:
                per_seed.append(r)
    if rho is None or p_low is None or p_high is None:
        verdict: Verdict = UNSURE
    else:
        verdict = HOLDS if p_low <= ALPHA else FAILS if p_high <= ALPHA else UNSURE
    points = ", ".join(f"{a.label} ({xv:.3g}, {yv:+.2f})" for a, xv, yv in zip(arms, x, y, strict=True))
    numbers = f"(discrepancy, {split} gain) per method: {points}; zero-shot {split} {zs:.2f}"
    if rho is None:
        diff = f"ρ undefined ({len(arms)} points)"
    else:
        p_text = "" if p_low is None else f" (p≤ {p_low:.3f}, p≥ {p_high:.3f})"
        diff = f"ρ = {rho:+.3f} over {len(arms)} methods{p_text}; per seed ρ {mean_std(per_seed)}"
    return Check(statement, numbers, diff, verdict)


ZERO = Arm.of("zeroshot")
MAPLE, PROMPTSRC, IVLP, VPT, TEXT, COOP = (
    Arm.of(m) for m in ("maple", "promptsrc", "ivlp", "vpt", "deep_text", "coop")
)
RESTORE_M, RESTORE_P = Arm.of("restore_m"), Arm.of("restore_p")
#: C6: (RESTORE on a method that came after the paper, that method), each on its own two-tower tuning.
BEYOND = (
    (Arm.of("restore_lora"), Arm.of("clip_lora"), "CLIP-LoRA"),
    (Arm.of("restore_mmrl"), Arm.of("mmrl"), "MMRL"),
)
#: λ_fs of each C3 arm; the untagged restore_m runs at the world tasks' preset λ_fs (1, the "other" row).
LAMBDAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def _lambda_arm(lam: float) -> Arm:
    return RESTORE_M if lam == 1.0 else Arm.of("restore_m", fs_weight=lam)


def claims_arms() -> set[Arm]:
    """Every arm the claims read (what a claims sweep must run)."""
    return {
        ZERO, MAPLE, PROMPTSRC, IVLP, VPT, TEXT, COOP, RESTORE_M, RESTORE_P,
        Arm.of("restore_m", recipe="released"), Arm.of("restore_p", recipe="released"),
        *(_lambda_arm(lam) for lam in LAMBDAS), Arm.of("restore_m", surgery="none"),
        Arm.of("restore_m", surgery="fixed"), Arm.of("restore_ivlp", surgery="none"),
        *(arm for pair in BEYOND for arm in pair[:2]),
    }  # fmt: skip


def check_claims(runs: ClaimRuns) -> list[Claim]:
    """C1–C6 on the matched runs, each check by the rule of the module docstring."""
    released_m, released_p = Arm.of("restore_m", recipe="released"), Arm.of("restore_p", recipe="released")
    c1 = Claim("C1", "Table 1", "RESTORE beats its base method on HM, for both recipes", (
        compare(runs, RESTORE_M, MAPLE, "hm", "RESTORE_m (paper) HM > MaPLe HM"),
        compare(runs, RESTORE_P, PROMPTSRC, "hm", "RESTORE_p (paper) HM > PromptSRC HM"),
        compare(runs, released_m, MAPLE, "hm", "RESTORE_m (released) HM > MaPLe HM"),
        compare(runs, released_p, PROMPTSRC, "hm", "RESTORE_p (released) HM > PromptSRC HM"),
    ))  # fmt: skip
    c2_arms = (COOP, IVLP, MAPLE, VPT, TEXT, RESTORE_M)
    c2 = Claim("C2", "Fig. 3", "the inter-modal discrepancy of feature shift correlates negatively with the gain", (
        correlation(runs, c2_arms, ZERO, "base", "Spearman ρ(discrepancy, Base gain) < 0"),
        correlation(runs, c2_arms, ZERO, "novel", "Spearman ρ(discrepancy, Novel gain) < 0"),
    ))  # fmt: skip
    lams = [(lam, _lambda_arm(lam)) for lam in LAMBDAS]
    c3 = Claim("C3", "Table 4", "raising λ_fs lowers Base and raises Novel (RESTORE_m)", (
        trend(runs, lams, "base", -1, "Base falls as λ_fs rises"),
        trend(runs, lams, "novel", +1, "Novel rises as λ_fs rises"),
    ))  # fmt: skip
    c4 = Claim("C4", "Table 5", "surgery improves Novel, and guided α beats fixed α (RESTORE_m)", (
        compare(runs, RESTORE_M, Arm.of("restore_m", surgery="none"), "novel", "guided surgery Novel > no surgery"),
        compare(runs, RESTORE_M, Arm.of("restore_m", surgery="fixed"), "hm", "guided α HM > fixed α HM"),
    ))  # fmt: skip
    c5 = Claim("C5", "Fig. 4", "single-branch prompts shift more than IVLP; IVLP + L_fs generalises better", (
        compare(runs, VPT, IVLP, "discrepancy", "VPT discrepancy > IVLP discrepancy"),
        compare(runs, TEXT, IVLP, "discrepancy", "language-only (deep_text) discrepancy > IVLP discrepancy"),
        compare(runs, Arm.of("restore_ivlp", surgery="none"), IVLP, "novel", "IVLP + L_fs Novel > IVLP Novel"),
    ))  # fmt: skip
    c6 = Claim("C6", "beyond", "RESTORE's regulariser helps the tuning methods that came after the paper", tuple(
        check
        for restored, base, name in BEYOND
        for check in (
            compare(runs, restored, base, "hm", f"RESTORE on {name} HM > {name} HM"),
            compare(runs, restored, base, "novel", f"RESTORE on {name} Novel > {name} Novel"),
        )
    ))  # fmt: skip
    return [c1, c2, c3, c4, c5, c6]


RULES = (
    f"Verdicts: a comparison A > B holds when the mean over seeds of the per-seed difference of world averages "
    f"exceeds {K:g} standard errors of those differences, does not hold below −{K:g} SE, and is inconclusive "
    "between (and with fewer than 2 seeds). C3 judges the per-seed least-squares slope against λ_fs the same way. "
    f"C2 is Spearman's ρ over the methods' (seed-mean discrepancy, seed-mean gain over zero-shot) with an exact "
    f"one-sided permutation test: holds when P(ρ_perm ≤ ρ) ≤ {ALPHA:g}, does not hold when P(ρ_perm ≥ ρ) ≤ {ALPHA:g}. "
    "A claim holds when all its checks hold, does not hold when any does not; a check with missing runs is "
    "inconclusive and names them."
)
AVERAGES = (
    "World averages per seed: Base/Novel = mean top-1 (%) over the sweep's tasks, HM of those means; discrepancy "
    "= mean over tasks of the run's recorded Σ_l (s_l^v − s_l^t)² (metrics.shift, as `restore analyze` measures "
    "it). Numbers: mean ± sample std over seeds of those world averages."
)
