"""One run over several processes: the global-batch sampler, per-sample augmentation seeds, and
`torchrun --nproc-per-node 2` (gloo on CPU) against a single-process run with the same global batch."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from restore.distributed import GlobalBatchSampler, all_reduce_sum, batch_mean, current, is_main
from restore.engine.seeding import SampleSeeded, loader_generator
from restore.engine.tracking import read_scalars
from restore.engine.trainer import make_train_loader
from tests.scale.conftest import PYTHON, child_env


# --- the sampler -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "batch"), [(23, 4), (23, 23), (5, 8), (12, 3)])
def test_one_rank_keeps_the_order_torch_random_sampler_gives(n, batch):
    """The order a single-process run has always used: DataLoader(shuffle=True) with the epoch's generator,
    the incomplete last batch dropped when there is a full one."""
    data = [(torch.zeros(1), i) for i in range(n)]
    for epoch in range(3):
        g = loader_generator(7, epoch)
        old = DataLoader(data, batch_size=batch, shuffle=True, generator=g, drop_last=n >= batch)
        expected = [y.tolist() for _, y in old]
        assert list(GlobalBatchSampler(n, batch, generator=loader_generator(7, epoch))) == expected


@pytest.mark.parametrize(("n", "batch", "world"), [(23, 6, 2), (23, 7, 3), (10, 4, 4), (5, 8, 2)])
def test_ranks_split_each_global_batch_into_contiguous_nearly_equal_shares(n, batch, world):
    whole = GlobalBatchSampler(n, batch, generator=loader_generator(1, 0))
    ranks = [GlobalBatchSampler(n, batch, generator=loader_generator(1, 0), rank=r, world=world) for r in range(world)]
    assert all(len(r) == len(whole) for r in ranks)
    for step, global_batch in enumerate(whole):
        shares = [list(r)[step] for r in ranks]
        assert [i for share in shares for i in share] == global_batch
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert ranks[0].global_sizes()[step] == len(global_batch)


def test_the_sampler_does_not_advance_the_generator_it_is_given():
    g = loader_generator(3, 1)
    GlobalBatchSampler(10, 4, generator=g)
    assert torch.equal(g.get_state(), loader_generator(3, 1).get_state())


# --- per-sample augmentation seeds ---------------------------------------------------------------------
class Noisy(torch.utils.data.Dataset):
    """Each item draws from torch, NumPy and Python's generators, as random augmentations do."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        x = torch.rand(3) + float(np.random.rand()) + random.random()
        return x, i


def test_augmentations_follow_the_sample_not_the_worker_or_the_batch():
    def by_index(loader) -> dict[int, torch.Tensor]:
        return {int(i): x for xs, ys in loader for x, i in zip(xs, ys, strict=True)}

    one = by_index(make_train_loader(Noisy(), 4, seed=1, epoch=2, workers=0))
    workers = by_index(make_train_loader(Noisy(), 4, seed=1, epoch=2, workers=2))
    other_batch = by_index(make_train_loader(Noisy(), 3, seed=1, epoch=2, workers=0))
    shares = {}
    for rank in range(2):
        shares |= by_index(make_train_loader(Noisy(), 4, seed=1, epoch=2, workers=0, rank=rank, world=2))
    assert set(one) == set(range(12))
    for i in one:
        assert all(torch.equal(one[i], other[i]) for other in (workers, other_batch, shares))
    epoch3 = by_index(make_train_loader(Noisy(), 4, seed=1, epoch=3, workers=0))
    assert not any(torch.equal(one[i], epoch3[i]) for i in one)


def test_loading_a_sample_leaves_the_callers_generators_alone():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(2), np.random.rand(), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    SampleSeeded(Noisy(), 1, 0)[3]
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_single_process_helpers_are_plain():
    assert current() is None and is_main()
    x = torch.tensor([1.0, 2.0, 6.0], requires_grad=True)
    assert batch_mean(x).item() == 3.0
    assert all_reduce_sum([1, 2.5]) == [1.0, 2.5]


# --- torchrun ------------------------------------------------------------------------------------------
RUN = ["--dataset", "dtd", "--backbone", "random:tiny", "--epochs", "2", "--batch-size", "6", "--shots=-1",
       "--workers", "0", "--quiet", "--seed", "3", "--lr", "0.05", "--set", "optim.warmup_epochs=0",
       "--set", "data.eval_batch_size=5", "--method", "coop", "--method", "restore_m"]  # fmt: skip


def _restore(args: list[str], *, nproc: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    launcher = [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc else []
    launcher = launcher or [PYTHON]
    return subprocess.run(
        [*launcher, "-m", "restore", *args], env=child_env(), capture_output=True, text=True, timeout=timeout
    )


def _runs(out) -> dict[str, object]:
    return {p.parent.parent.name: p.parent for p in sorted(out.glob("b2n/dtd/*/*/model.safetensors"))}


@pytest.mark.integration
def test_torchrun_two_processes_equal_one_process_with_the_same_global_batch(data_root, tmp_path):
    """coop (linear loss) and restore_m (L_fs and the guided surgery ratio use the batch's mean vision shift,
    all-reduced): 2 epochs at lr 0.05 from the same seed, global batch 6 (3 per rank)."""
    args = ["run", "b2n", "--root", str(data_root), *RUN]
    two = _restore([*args, "--out", str(tmp_path / "two"), "--db", str(tmp_path / "two.sqlite")], nproc=2)
    assert two.returncode == 0, two.stdout + two.stderr
    one = _restore([*args, "--out", str(tmp_path / "one"), "--db", str(tmp_path / "one.sqlite")])
    assert one.returncode == 0, one.stdout + one.stderr

    runs_one, runs_two = _runs(tmp_path / "one"), _runs(tmp_path / "two")
    assert sorted(runs_two) == sorted(runs_one) == ["coop", "restore_m"]
    for method in ("coop", "restore_m"):
        a, b = load_file(runs_one[method] / "model.safetensors"), load_file(runs_two[method] / "model.safetensors")
        assert a.keys() == b.keys()
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 1e-5, f"{method}: learnable state differs by {worst}"
        history = json.loads((runs_two[method] / "metrics.json").read_text())["history"]
        assert [h["images"] for h in history] == [12, 12]  # the base half: 2 classes x 6 images, all ranks
        m1 = json.loads((runs_one[method] / "metrics.json").read_text())
        m2 = json.loads((runs_two[method] / "metrics.json").read_text())
        for split in ("base", "novel"):  # sharded evaluation, counts summed over ranks
            assert m2["metrics"][split]["n"] == m1["metrics"][split]["n"] == 6
            assert m2["metrics"][split]["top1"] == m1["metrics"][split]["top1"]
        assert m2["config_hash"] == m1["config_hash"]  # the run is the same run, whatever the process count
        assert abs(m2["history"][-1]["loss"] - m1["history"][-1]["loss"]) < 1e-5
    # One set of files and one database row per run.
    assert len(list((tmp_path / "two").glob("b2n/dtd/*/*"))) == 2
    for run_dir in runs_two.values():
        names = sorted(p.name for p in run_dir.iterdir())
        assert names == [
            "checkpoints", "config.yaml", "log.txt", "metrics.json", "model.safetensors", "run.json",
            "scalars.jsonl", "tensorboard",
        ]  # fmt: skip
        assert len(list(run_dir.rglob(".*"))) == 0  # no temporary files left
    for method in runs_two:  # rank 0 alone tracks: each step once, the global loss of the one-process run
        two, one = (read_scalars(runs[method]) for runs in (runs_two, runs_one))
        assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, len(one) + 1))
        assert max(abs(a["loss"] - b["loss"]) for a, b in zip(two, one, strict=True)) < 1e-5
    with sqlite3.connect(tmp_path / "two.sqlite") as db:
        rows = db.execute("SELECT method, status FROM runs ORDER BY method").fetchall()
    assert rows == [("coop", "finished"), ("restore_m", "finished")]

    # Started again without --resume, rank 0 refuses the directory and both ranks stop with its message.
    again = _restore(["train", "--root", str(data_root), *RUN[:-2], "--out", str(tmp_path / "x"),
                      "--run-dir", str(runs_two["coop"]), "--db", "none"], nproc=2, timeout=120)  # fmt: skip
    assert again.returncode != 0
    assert again.stderr.count("already holds a finished run") == 2, again.stderr
