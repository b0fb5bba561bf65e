"""The claims report: verdicts computed from a hand-made results database exactly as `restore.results.claims`
documents them (holds, does not hold, inconclusive, missing), Spearman's ρ and its exact p against a hand
computation, and the claims sweep file expanding to the cells its lists name."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from restore.results import RunRecord, open_results
from restore.results import results_commands as results_cli
from restore.results.claims import FAILS, HOLDS, UNSURE, Arm, claims_arms, ranks, spearman_test
from restore.results.report import build_report, render_html, render_markdown, render_terminal
from restore.scale.claim_runs import claims_for
from restore.scale.grid import expand, load_grid, parse_grid, resolved_configs

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "configs" / "sweeps" / "world_claims.yaml"
TASKS = ("dtd", "eurosat")  # two registered tasks stand in for the world's (only names and hashes matter)
SEEDS = (1, 2, 3)
ZS = 65.0  # zero-shot base and novel on every task
BUMP = {1: 2.0, 2: 3.0, 3: 2.5}  # restore_m over maple, per seed
SKIPPED = ("restore_p [method.recipe=released]", "eurosat", 3)  # the one run the database lacks
#: (base, novel) of each arm on task index d; the seed enters through BUMP and the offsets below.
BASE_ACC = {
    "maple": (70, 60), "promptsrc": (72, 62), "coop": (75, 50), "ivlp": (68, 63), "vpt": (66, 64),
    "deep_text": (69, 58), "zeroshot": (ZS, ZS), "clip_lora": (74, 55), "mmrl": (80, 70),
}  # fmt: skip
LORA_NOVEL = {1: 3.0, 2: 2.0, 3: 4.0}  # C6: RESTORE on CLIP-LoRA gains Novel every seed, loses 1 point of Base
DISC = {"coop": 0.1, "restore_m": 0.2, "maple": 0.3, "deep_text": 0.4, "ivlp": 0.5, "vpt": 0.9}


def accuracy(arm: Arm, d: int, seed: int) -> tuple[float, float]:
    """The hand-made world: what each cell's run scored (see the test of each claim for the intent)."""
    o = dict(arm.overrides)
    m = arm.method
    if m == "restore_m":
        base, novel = 70 + d + BUMP[seed], 60 + d + BUMP[seed]  # C1: beats maple by 2-3 points every seed
        if "method.fs_weight" in o:  # C3: Base falls 0.5 per unit λ (+ a seed jitter at λ=4); Novel ±0.3/λ
            lam = o["method.fs_weight"]
            base += -0.5 * (lam - 1) + (0.1 * seed if lam == 4 else 0.0)
            novel += 0.3 * (lam - 1) * (-1) ** seed
        if o.get("method.surgery") == "none":  # C4: no surgery loses Novel on average, within 2 SE (1-2 SE)
            novel -= {1: 1.0, 2: -0.2, 3: 0.8}[seed]
        if o.get("method.surgery") == "fixed":  # C4: fixed α is better than guided on both
            base, novel = base + {1: 0.5, 2: 0.7, 3: 0.6}[seed], novel + {1: 0.5, 2: 0.7, 3: 0.6}[seed]
        if o.get("method.recipe") == "released":  # C1: ± around maple
            delta = {1: 1.0, 2: -1.0, 3: 0.5}[seed]
            base, novel = 70 + d + delta, 60 + d + delta
        return base, novel
    if m == "restore_p":  # C1: loses to promptsrc every seed (both recipes)
        return 72 + d - {1: 1.0, 2: 2.0, 3: 1.5}[seed], 62 + d - {1: 1.0, 2: 2.0, 3: 1.5}[seed]
    if m == "restore_lora":
        b, n = BASE_ACC["clip_lora"]
        return b + d - 1.0, n + d + LORA_NOVEL[seed]
    if m == "restore_mmrl":  # C6: Base about level with MMRL, Novel 1.5-2.5 points lower every seed
        b, n = BASE_ACC["mmrl"]
        return b + d + {1: 0.5, 2: -0.5, 3: 0.2}[seed], n + d - {1: 2.0, 2: 2.5, 3: 1.5}[seed]
    if m == "restore_ivlp":  # C5: exactly IVLP
        m = "ivlp"
    b, n = BASE_ACC[m]
    return (b + d, n + d) if m != "zeroshot" else (b, n)


def discrepancy(arm: Arm) -> float:
    return DISC.get(arm.method, 0.25)


def tiny_sweep_data() -> dict:
    data = yaml.safe_load(SWEEP.read_text())
    data["datasets"] = list(TASKS)
    for entry in data["include"]:
        entry["dataset"] = list(TASKS)
    data["set"]["model.backbone"] = "random:tiny"
    return data


@pytest.fixture(scope="module")
def claims_db(tmp_path_factory):
    """Every cell of the claims sweep (on two tasks, the tiny backbone) recorded by the project's own store,
    but one; returns (database path, sweep file)."""
    folder = tmp_path_factory.mktemp("claims")
    sweep = folder / "claims.yaml"
    sweep.write_text(yaml.safe_dump(tiny_sweep_data()))
    path = folder / "results.sqlite"
    with open_results(path) as store:
        for cell in expand(load_grid(sweep)):
            arm = Arm(cell.method, tuple(sorted((k, float(v) if isinstance(v, int | float) else v)
                                                for k, v in cell.point)))  # fmt: skip
            if (arm.label, cell.dataset, cell.seed) == SKIPPED:
                continue
            config = resolved_configs(cell, "cpu")[0]
            base, novel = accuracy(arm, TASKS.index(cell.dataset), cell.seed)
            rec = store.start_run(RunRecord.new(
                method=cell.method, dataset=cell.dataset, protocol="b2n", seed=cell.seed, backbone="random:tiny",
                shots=16, config=config.identity(), tag=config.tag,
            ))  # fmt: skip
            metrics = {"base": {"top1": base}, "novel": {"top1": novel}}
            if cell.method != "zeroshot":
                metrics["shift"] = {"measure": "activation/rms", "discrepancy": discrepancy(arm)}
            store.finish_run(rec.run_id, metrics)
    return path, sweep


@pytest.fixture(scope="module")
def claims(claims_db):
    path, sweep = claims_db
    with open_results(path, readonly=True) as store:
        return {c.key: c for c in claims_for(load_grid(sweep), store.query())}


def hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n)


def world(arm: Arm, seed: int) -> tuple[float, float, float]:
    """Hand computation of the documented world average: mean Base, mean Novel over tasks, HM of the means."""
    accs = [accuracy(arm, d, seed) for d in range(len(TASKS))]
    b = sum(a[0] for a in accs) / len(accs)
    n = sum(a[1] for a in accs) / len(accs)
    return b, n, hm(b, n)


def paired(diffs: list[float]) -> tuple[str, float, float]:
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1))
    se = sd / math.sqrt(len(diffs))
    return (HOLDS if mean > 2 * se else FAILS if mean < -2 * se else UNSURE), mean, se


def test_c1_holds_does_not_hold_inconclusive_and_missing_as_documented(claims):
    c1 = claims["C1"]
    expected = []
    for a, b in ((Arm.of("restore_m"), Arm.of("maple")), (Arm.of("restore_p"), Arm.of("promptsrc")),
                 (Arm.of("restore_m", recipe="released"), Arm.of("maple"))):  # fmt: skip
        verdict, mean, se = paired([world(a, s)[2] - world(b, s)[2] for s in SEEDS])
        expected.append((verdict, f"{mean:+.2f} (SE {se:.2f}, 3 seeds)"))
    assert [(c.verdict, c.difference) for c in c1.checks[:3]] == expected
    assert [v for v, _ in expected] == [HOLDS, FAILS, UNSURE]  # the three cases the hand-made world encodes
    hms = [world(Arm.of("restore_m"), s)[2] for s in SEEDS]
    assert f"restore_m {statistics.fmean(hms):.2f} ± {statistics.stdev(hms):.2f}" in c1.checks[0].numbers
    missing = c1.checks[3]
    assert missing.verdict == UNSURE
    assert missing.missing == ("restore_p [method.recipe=released] eurosat seed 3",)
    assert missing.numbers == "missing 1 run(s): restore_p [method.recipe=released] eurosat seed 3"
    assert c1.verdict == FAILS  # one check does not hold


def rho_by_formula(rx, ry) -> float:
    n = len(rx)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True)) / (n * (n * n - 1))


def test_c2_spearman_matches_the_hand_computation(claims):
    arms = [Arm.of(m) for m in ("coop", "ivlp", "maple", "vpt", "deep_text", "restore_m")]
    disc = [DISC[a.method] for a in arms]
    checks = claims["C2"].checks
    for i, check in enumerate(checks):  # base, then novel
        gains = [statistics.fmean(world(a, s)[i] for s in SEEDS) - ZS for a in arms]
        # no ties: ρ = 1 − 6 Σ d² / (n (n² − 1)), and the exact p over all 720 orderings of the gains' ranks
        rd, rg = np.argsort(np.argsort(disc)) + 1, np.argsort(np.argsort(gains)) + 1
        rho = rho_by_formula(rd, rg)
        perms = [rho_by_formula(rd, p) for p in itertools.permutations(rg)]
        p_low = sum(r <= rho + 1e-9 for r in perms) / len(perms)
        p_high = sum(r >= rho - 1e-9 for r in perms) / len(perms)
        verdict = HOLDS if p_low <= 0.05 else FAILS if p_high <= 0.05 else UNSURE
        assert check.verdict == verdict
        assert check.difference.startswith(f"ρ = {rho:+.3f} over 6 methods (p≤ {p_low:.3f}, p≥ {p_high:.3f})")
        assert spearman_test(disc, gains)[0] == pytest.approx(rho)
    assert checks[0].difference.startswith("ρ = -1.000") and checks[0].verdict == HOLDS  # built to be −1
    assert "per seed ρ -1.00 ± 0.00" in checks[0].difference


def test_spearman_with_ties_uses_average_ranks():
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    x, y = [1.0, 2.0, 2.0, 4.0], [10.0, 30.0, 20.0, 40.0]
    rx, ry = [1, 2.5, 2.5, 4], [1, 3, 2, 4]
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman_test(x, y)[0] == pytest.approx(expected)


def test_c3_slopes_against_lambda(claims):
    lams = (0.0, 0.5, 1.0, 2.0, 4.0)
    arms = [Arm.of("restore_m") if lam == 1 else Arm.of("restore_m", fs_weight=lam) for lam in lams]
    base, novel = claims["C3"].checks
    for check, i, sign in ((base, 0, -1), (novel, 1, 1)):
        slopes = [np.polyfit(lams, [world(a, s)[i] for a in arms], 1)[0] for s in SEEDS]
        verdict, mean, se = paired([sign * x for x in slopes])
        assert check.verdict == verdict
        assert check.difference == f"slope {sign * mean:+.3f}/unit λ (SE {se:.3f}, 3 seeds)"
    assert (base.verdict, novel.verdict, claims["C3"].verdict) == (HOLDS, UNSURE, UNSURE)


def test_c4_and_c5(claims):
    none, fixed = claims["C4"].checks
    guided, no_surgery = Arm.of("restore_m"), Arm.of("restore_m", surgery="none")
    _, mean, se = paired([world(guided, s)[1] - world(no_surgery, s)[1] for s in SEEDS])
    assert se < mean < 2 * se  # between one and two standard errors: the documented K = 2 decides
    assert (none.verdict, none.difference) == (UNSURE, f"{mean:+.2f} (SE {se:.2f}, 3 seeds)")
    assert (fixed.verdict, claims["C4"].verdict) == (FAILS, FAILS)
    vpt, text, lfs = claims["C5"].checks
    assert vpt.verdict == HOLDS and vpt.difference == f"{0.9 - 0.5:+.4f} (SE 0.0000, 3 seeds)"
    assert text.verdict == FAILS
    assert lfs.verdict == UNSURE and lfs.difference == "+0.00 (SE 0.00, 3 seeds)"  # exactly IVLP
    assert claims["C5"].verdict == FAILS


def test_c6_restore_on_a_method_after_the_paper_against_the_hand_computation(claims):
    lora_hm, lora_novel, mmrl_hm, mmrl_novel = claims["C6"].checks
    pairs = ((Arm.of("restore_lora"), Arm.of("clip_lora")), (Arm.of("restore_mmrl"), Arm.of("mmrl")))
    for (restored, base), checks in zip(pairs, ((lora_hm, lora_novel), (mmrl_hm, mmrl_novel)), strict=True):
        for check, index in zip(checks, (2, 1), strict=True):
            verdict, mean, se = paired([world(restored, s)[index] - world(base, s)[index] for s in SEEDS])
            assert (check.verdict, check.difference) == (verdict, f"{mean:+.2f} (SE {se:.2f}, 3 seeds)")
    assert lora_novel.statement == "RESTORE on CLIP-LoRA Novel > CLIP-LoRA Novel"
    assert (lora_novel.verdict, lora_hm.verdict) == (HOLDS, HOLDS)
    assert (mmrl_hm.verdict, mmrl_novel.verdict, claims["C6"].verdict) == (FAILS, FAILS, FAILS)


def test_the_report_renders_the_claims_and_the_cli_reads_the_sweep(claims_db, claims):
    path, sweep = claims_db
    with open_results(path, readonly=True) as store:
        records = store.query()
    rep = build_report(records, with_plots=False, claims=list(claims.values()), claims_source="s")
    md = render_markdown(rep)
    assert "## The paper's claims · s" in md
    assert "| Claim | Check | Numbers | Difference | Verdict |\n|---|---|---|---:|---:|" in md
    page = render_html(rep)
    assert '<td style="text-align: left; white-space: normal">RESTORE_m (paper) HM &gt; MaPLe HM</td>' in page
    console = Console(record=True, width=250)
    render_terminal(rep, console)
    text = console.export_text()
    assert "C5 (Fig. 4)" in text and "DOES NOT HOLD" in text and "IVLP + L_fs Novel > IVLP Novel" in text
    assert "| **C1 (Table 1)** | RESTORE beats its base method on HM, for both recipes |  |  | DOES NOT HOLD |" in md
    assert "1 run(s) the claims need are missing: `restore sweep s` runs them" in md
    result = CliRunner().invoke(
        results_cli.app, ["report", "--db", str(path), "--claims", str(sweep), "-f", "markdown", "-m", "coop"]
    )
    assert result.exit_code == 0, result.output
    assert "| **C4 (Table 5)** | surgery improves Novel, and guided α beats fixed α (RESTORE_m) |" in result.output
    assert "| **C2 (Fig. 3)** |" in result.output and "missing 1 run(s)" in result.output


def test_a_missing_arm_is_named_not_a_crash(claims_db):
    path, _ = claims_db
    data = tiny_sweep_data()
    data["include"] = [e for e in data["include"] if e["method"] != "restore_ivlp"]
    with open_results(path, readonly=True) as store:
        c5 = {c.key: c for c in claims_for(parse_grid(data), store.query())}["C5"]
    assert c5.checks[2].missing == ("restore_ivlp [method.surgery=none] (not in the sweep file)",)
    assert c5.checks[2].verdict == UNSURE
    with open_results(path, readonly=True) as store:  # no maple run at all: counted, not listed
        records = [r for r in store.query() if r.method != "maple" and (r.dataset, r.seed) != ("dtd", 2)]
    first = claims_for(load_grid(claims_db[1]), records)[0].checks[0]
    n = len(TASKS) * len(SEEDS)
    assert first.numbers == f"missing {n + 1} run(s): restore_m dtd seed 2; maple: {n} runs"
    assert first.verdict == UNSURE and len(first.missing) == n + 1


def test_the_claims_sweep_expands_to_its_lists_and_covers_every_claim():
    data = yaml.safe_load(SWEEP.read_text())
    grid = load_grid(SWEEP)
    cells = expand(grid)
    n_tasks, n_seeds = len(data["datasets"]), len(data["seeds"])
    excluded = sum(n_tasks for rule in data["exclude"] if set(rule) == {"method", "seed"})
    includes = sum(len(e["dataset"]) * len(e["seed"]) for e in data["include"])
    assert len(cells) == len(data["methods"]) * n_tasks * n_seeds - excluded + includes
    assert {c.config.schedule for c in cells} == {"restore_paper"}
    assert {c.config.model.backbone for c in cells} == {"world"}
    arms = {Arm(c.method, tuple(sorted((k, float(v) if isinstance(v, int | float) else v) for k, v in c.point)))
            for c in cells}  # fmt: skip
    assert claims_arms() <= arms
