"""Grid files: expansion counts, override precedence, tags, hashes equal to what the engine records, and
errors that name the cell."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from restore.errors import ConfigError
from restore.scale.grid import (
    Cell,
    count_cells,
    describe_cells,
    expand,
    expected_hashes,
    load_grid,
    parse_grid,
)

REPO = Path(__file__).resolve().parents[2]
TINY = {"model.backbone": "random:tiny", "data.workers": 0, "optim.epochs": 1}


def grid(**data) -> list[Cell]:
    return expand(parse_grid({"set": dict(TINY), **data}))


def test_counts_are_the_product_of_the_axes_and_the_matrix():
    cells = grid(
        protocols=["b2n", "fewshot"], methods=["coop", "maple"], datasets=["dtd", "eurosat"], shots=[1, 4],
        seeds=[1, 2, 3], grid={"optim.lr": [0.1, 0.2], "method.n_ctx": [2, 4]},
    )  # fmt: skip
    assert len(cells) == 2 * 2 * 2 * 2 * 3 * 4
    assert len({c.label for c in cells}) == len(cells)
    assert len({c.config.hash() for c in cells}) == len(cells)
    assert describe_cells(cells) == (
        "192 runs (2 protocols, 2 methods, 2 datasets, 2 shot counts, 3 seeds, 4 grid points)"
    )


def test_exclude_drops_matching_cells_and_include_adds_cells_once():
    cells = grid(
        methods=["coop", "maple"], datasets=["dtd", "eurosat"], seeds=[1, 2],
        exclude=[{"method": "maple", "dataset": "eurosat"}],
        include=[{"method": "kgcoop", "dataset": "dtd", "seed": 5}, {"method": "coop", "dataset": "dtd", "seed": 1}],
    )  # fmt: skip
    labels = [c.label for c in cells]
    assert len(cells) == 6 + 1  # 8 - 2 excluded, + kgcoop; the coop include is already a cell
    assert "b2n/dtd/kgcoop/shots16/seed5" in labels
    assert not any(c.method == "maple" and c.dataset == "eurosat" for c in cells)


def test_an_include_with_lists_names_a_cell_for_each_combination():
    datasets, seeds = ["dtd", "eurosat"], [1, 2, 3]
    g = parse_grid({
        "set": dict(TINY), "methods": ["coop"], "datasets": datasets, "seeds": seeds,
        "include": [{"method": "maple", "dataset": datasets, "seed": seeds, "set": {"optim.lr": 0.05}},
                    {"method": "maple", "dataset": "dtd", "seed": [2]}],
    })  # fmt: skip
    assert count_cells(g) == len(datasets) * len(seeds) * 2 + 1
    cells = expand(g)
    tagged = [c for c in cells if c.point]
    assert sorted((c.dataset, c.seed) for c in tagged) == [(d, s) for d in datasets for s in seeds]
    assert {c.config.tag for c in tagged} == {"optim.lr=0.05"}
    assert [(c.method, c.dataset, c.seed, c.point) for c in cells if not c.point and c.method == "maple"] == [
        ("maple", "dtd", 2, ())
    ]
    with pytest.raises(ConfigError, match=r"include\[0\]: seed is an empty list"):
        expand(parse_grid({"set": dict(TINY), "methods": ["coop"], "datasets": ["dtd"],
                           "include": [{"method": "coop", "seed": []}]}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"include\[0\]: seed must be an integer, got 'x'"):
        expand(parse_grid({"set": dict(TINY), "methods": ["coop"], "datasets": ["dtd"],
                           "include": [{"method": "coop", "seed": [1, "x"]}]}))  # fmt: skip


def test_override_precedence_base_set_method_grid_include(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"method": {"name": "coop", "n_ctx": 8}, "optim": {"lr": 0.5, "momentum": 0.7},
                                    "data": {"shots": 4}, "seed": 9, "protocol": "fewshot"}))  # fmt: skip
    path = tmp_path / "g.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "config": "base.yaml",
                "methods": {"coop": {"optim.lr": 0.3, "method.n_ctx": 6}, "maple": {}},
                "datasets": ["dtd"],
                "set": {**TINY, "optim": {"lr": 0.4, "weight_decay": 0.01}},
                "grid": {"optim.warmup_epochs": [0, 2]},
                "include": [{"method": "coop", "set": {"optim.lr": 0.05}}],
            }
        )
    )
    cells = expand(load_grid(path))
    (include,) = [c for c in cells if c.point == (("optim.lr", 0.05),)]  # named by its own overrides
    coop = include.config
    assert coop.optim.lr == 0.05 and coop.method.n_ctx == 6 and coop.optim.momentum == 0.7
    assert include.label.endswith("[optim.lr=0.05]") and coop.tag == "optim.lr=0.05"
    grid_coop = [c.config for c in cells if c.method == "coop" and c is not include]
    assert [c.optim.warmup_epochs for c in grid_coop] == [0, 2]
    assert all(c.optim.lr == 0.3 and c.optim.weight_decay == 0.01 for c in grid_coop)  # method over set
    maple = [c.config for c in cells if c.method == "maple"]
    assert all(c.optim.lr == 0.4 for c in maple)  # set over the base file
    assert all(c.method.n_ctx != 8 for c in maple)  # the base file's method options were coop's
    # Axes left out come from the base file: protocol, shots, seed.
    assert {(c.protocol, c.shots, c.seed) for c in cells} == {("fewshot", 4, 9)}
    assert len(cells) == 2 * 2 + 1


def test_grid_points_tag_their_runs():
    cells = grid(methods=["coop"], datasets=["dtd"], set={**TINY, "tag": "abl"}, grid={"optim.lr": [0.1, 0.2]})
    assert [c.config.tag for c in cells] == ["abl,optim.lr=0.1", "abl,optim.lr=0.2"]
    assert cells[0].label == "b2n/dtd/coop/shots16/seed1 [optim.lr=0.1]"
    assert [c.config.tag for c in grid(methods=["coop"], datasets=["dtd"])] == [""]


def test_hashes_are_stable_and_ignore_output_settings():
    data = {"methods": ["coop", "maple"], "datasets": ["dtd"], "seeds": [1, 2], "grid": {"optim.lr": [0.1, 0.2]}}
    first = [expected_hashes(c, "cpu") for c in grid(**data)]
    shuffled = dict(reversed(list(data.items())))
    assert [expected_hashes(c, "cpu") for c in grid(**shuffled)] == first
    moved = grid(**data, include=[])
    for c in moved:  # where results go is not what a run computes
        c.data.update(out="elsewhere", db="x.sqlite")
    assert [expected_hashes(c, "cpu") for c in moved] == first
    # Precision auto on a GPU is bf16 or amp by the GPU: either counts as done. On a CPU it is fp32: one hash,
    # neither of the GPU's (a CPU run must not mark a GPU cell done).
    cell = grid(methods=["coop"], datasets=["dtd"])[0]
    on_gpu, on_cpu = expected_hashes(cell, "cuda"), expected_hashes(cell, "cpu")
    assert len(on_gpu) == 2 and len(on_cpu) == 1 and on_cpu.isdisjoint(on_gpu)
    fp32 = grid(methods=["coop"], datasets=["dtd"], set={**TINY, "model.precision": "fp32"})[0]
    assert expected_hashes(fp32, "cuda") == expected_hashes(fp32, "cpu") == expected_hashes(cell, "cpu")


def test_the_hash_is_the_one_the_engine_records(data_root):
    from restore.engine.plan import plan_run
    from restore.results.records import config_hash

    cells = grid(methods=["coop", "restore_m"], datasets=["dtd"], set={**TINY, "data.root": str(data_root)},
                 shots=[2], grid={"optim.lr": [0.01]})  # fmt: skip
    for cell in cells:
        plan = plan_run(dataclasses.replace(cell.config, device="cpu"))
        assert expected_hashes(cell, "cpu") == {config_hash(plan.config.identity())}


def test_a_schedule_set_in_a_grid_reaches_the_runs_and_the_hashes_the_engine_records(data_root):
    from restore.engine.plan import plan_run
    from restore.results.records import config_hash

    cells = expand(parse_grid({
        "set": {"model.backbone": "random:tiny", "data.workers": 0, "data.root": str(data_root)},
        "methods": ["maple"], "datasets": ["dtd"], "shots": [2], "grid": {"schedule": ["own", "restore_paper"]},
    }))  # fmt: skip
    assert [c.config.schedule for c in cells] == ["own", "restore_paper"]
    for cell in cells:
        plan = plan_run(dataclasses.replace(cell.config, device="cpu"))
        # MaPLe's release: 5 epochs; the RESTORE paper's re-run: 10 (the open value filled in both places)
        assert plan.config.optim.epochs == {"own": 5, "restore_paper": 10}[cell.config.schedule]
        assert expected_hashes(cell, "cpu") == {config_hash(plan.config.identity())}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"set": {"schedule": "paper"}}, r"grid cell b2n/dtd/coop/shots16/seed1: unknown schedule set 'paper'"),
        ({"methods": ["coop", "nope"]}, r"grid cell b2n/dtd/nope/shots16/seed1: unknown method 'nope'"),
        ({"datasets": ["dtd", "mnist"]}, r"grid cell b2n/mnist/coop/shots16/seed1: unknown dataset"),
        ({"grid": {"optim.lrr": [1]}}, r"grid cell b2n/dtd/coop/shots16/seed1 \[optim.lrr=1\]: unknown config key"),
        ({"grid": {"optim.lr": [0.1, "fast"]}}, r"\[optim.lr=fast\]: optim.lr: 'fast' is not a float"),
        ({"methods": {"coop": {"method.n_ctx": 0}}}, r"grid cell b2n/dtd/coop/shots16/seed1: method \(coop\).n_ctx"),
        ({"datasets": ["imagenet_sketch"]}, r"b2n/imagenet_sketch/coop.*test-only dataset"),
        ({"set": {"model.backbone": "ViT-X/99"}}, r"grid cell .*: model.backbone 'ViT-X/99'"),
        ({"include": [{"method": "coop", "dataset": "dtd"}], "seeds": [1, 2]}, r"include\[0\] does not say its seed"),
        ({"set": {"seed": 3}}, r"set: seed is a sweep axis"),
        ({"grid": {"data.dataset": ["dtd"]}}, r"grid: data.dataset is a sweep axis"),
        ({"set": {"out": "x"}}, r"out is decided for the whole sweep"),
        ({"seeds": []}, r"seeds is empty"),
        ({"sets": {}}, r"unknown key sets"),
        ({"methods": None, "datasets": ["dtd"]}, r"no methods given"),
    ],
)
def test_errors_name_the_cell(data, message):
    full = {"methods": ["coop"], "datasets": ["dtd"], "set": dict(TINY)}
    full.update(data)
    if "set" in data:
        full["set"] = {**TINY, **data["set"]}
    full = {k: v for k, v in full.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        expand(parse_grid(full))


def test_a_precision_the_device_cannot_run_names_the_cell():
    cell = grid(methods=["coop"], datasets=["dtd"], set={**TINY, "model.precision": "fp16"})[0]
    assert len(expected_hashes(cell, "cuda")) == 1
    with pytest.raises(ConfigError, match=r"grid cell b2n/dtd/coop/shots16/seed1: model.precision=fp16 needs"):
        expected_hashes(cell, "cpu")


def test_the_example_sweep_expands():
    cells = expand(load_grid(REPO / "configs" / "sweeps" / "b2n_small.yaml"))
    assert len(cells) == 30
    assert {c.config.optim.lr for c in cells if c.method == "restore_m"} == {0.0035}
    assert all(c.config.model.backbone == "ViT-B/16" for c in cells)
    assert len({frozenset(expected_hashes(c, "cuda")) for c in cells}) == 30


def test_dry_run_lists_the_runs_and_starts_none(tmp_path):
    from restore.cli import app

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"methods": ["coop", "maple"], "datasets": ["dtd"], "set": TINY}))
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "b2n/dtd/coop/shots16/seed1" in result.output and "b2n/dtd/maple/shots16/seed1" in result.output
    assert "2 to run, 0 finished before" in result.output
    assert not out.exists()


def test_a_bad_cell_stops_the_sweep_before_anything_runs(tmp_path):
    from restore.cli import app

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"methods": ["coop", "copo"], "datasets": ["dtd"], "set": TINY}))
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "error: grid cell b2n/dtd/copo/shots16/seed1: unknown method 'copo'" in result.output
    assert not (tmp_path / "runs").exists()
