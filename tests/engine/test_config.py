"""The run config: YAML + flags + --set, errors that list the valid keys and values, defaults, the hash."""

from __future__ import annotations

import pytest
import yaml

from restore.engine.run_config import build_run_config, load_run_config, resolve
from restore.errors import ConfigError


def _yaml(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_file_then_flags_then_overrides(tmp_path):
    path = _yaml(tmp_path, {"method": {"name": "maple", "depth": 3}, "seed": 5, "optim": {"lr": 0.1, "epochs": 2}})
    cfg = load_run_config(path, {"seed": 7, "data.dataset": "dtd"}, ["optim.lr=0.002", "method.n_ctx=1"])
    assert cfg.method.name == "maple" and cfg.method.depth == 3 and cfg.method.n_ctx == 1
    assert (cfg.seed, cfg.optim.lr, cfg.optim.epochs, cfg.data.dataset) == (7, 0.002, 2, "dtd")


def test_a_method_flag_replaces_the_file_method_and_its_options(tmp_path):
    path = _yaml(tmp_path, {"method": {"name": "maple", "depth": 3}})
    cfg = load_run_config(path, {"method": "coop"})
    assert cfg.method.name == "coop" and cfg.method.n_ctx == 16


@pytest.mark.parametrize(
    ("overrides", "message", "hint"),
    [
        (["optim.lrr=0.1"], "unknown config key optim.lrr", "lr, momentum, warmup_epochs"),
        (["data.classes=some"], "data.classes: 'some' is not one of ['all', 'present']", None),
        (["model.precision=fp8"], "model.precision: 'fp8' is not one of ['auto', 'fp32', 'amp', 'bf16', 'fp16']", None),
        (["optim.lr=fast"], "optim.lr", None),
        (["data.shots=-5"], "data.shots: -5 is below the minimum -1", None),
        (["protocol=b2m"], "protocol: 'b2m' is not one of ['train', 'b2n', 'xd', 'dg', 'fewshot']", None),
        (["method.depthh=2"], "unknown config key method (maple).depthh", "ctx_init, depth, n_ctx"),
        (["banana=1"], "unknown config key banana", "data, db, device"),
    ],
)
def test_bad_keys_and_values_are_rejected_with_the_valid_ones(overrides, message, hint):
    with pytest.raises(ConfigError) as info:
        load_run_config(None, {"method": "maple"}, overrides)
    assert message in info.value.message
    if hint:
        assert hint in (info.value.hint or "")


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load_run_config(None, {"method": "mapel"})
    assert "unknown method 'mapel'" in info.value.message and "maple" in info.value.hint
    with pytest.raises(ConfigError, match="no method given"):
        build_run_config({})


def test_resolve_fills_the_methods_paper_defaults_and_keeps_user_values():
    cfg = resolve(load_run_config(None, {"method": "maple"}), image_size=224)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.data.batch_size, cfg.data.image_size) == (0.0035, 5, 4, 224)
    assert cfg.model.precision == "fp32"  # CPU
    cfg = resolve(load_run_config(None, {"method": "maple", "optim.lr": 0.01, "data.batch_size": 2}), image_size=32)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.data.batch_size) == (0.01, 5, 2)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        resolve(load_run_config(None, {"method": "coop", "model.precision": "fp16"}), device_type="cpu")


def test_written_config_reads_back_to_the_same_config_and_hash(tmp_path):
    cfg = resolve(load_run_config(None, {"method": "promptsrc", "data.dataset": "dtd", "seed": 2}), image_size=32)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    again = build_run_config(yaml.safe_load(text))
    assert again.to_dict() == cfg.to_dict() and again.hash() == cfg.hash()


def test_the_hash_ignores_where_outputs_go_but_not_what_is_computed():
    base = load_run_config(None, {"method": "coop", "data.dataset": "dtd"})
    same = load_run_config(None, {"method": "coop", "data.dataset": "dtd", "out": "elsewhere", "quiet": True,
                                  "db": "x.sqlite", "data.root": "/data", "log_every": 1,
                                  "data.workers": 0})  # fmt: skip
    assert same.hash() == base.hash()
    for change in ({"seed": 2}, {"optim.lr": 0.5}, {"data.shots": 4}, {"method": "maple"}):
        assert load_run_config(None, {"method": "coop", "data.dataset": "dtd", **change}).hash() != base.hash()
    assert load_run_config(None, {"method": "coop", "data.dataset": "dtd"}, ["method.n_ctx=4"]).hash() != base.hash()


def test_speed_and_memory_switches_reach_the_backbone_and_not_the_identity(tmp_path):
    from restore.engine.backbone import apply_model_options, load_backbone

    plain = load_run_config(None, {"method": "coop", "data.dataset": "dtd", "model.backbone": "random:tiny"}, [])
    tuned = load_run_config(
        None,
        {"method": "coop", "data.dataset": "dtd", "model.backbone": "random:tiny"},
        ["model.text_packing=false", "model.text_chunk=100", "model.text_checkpointing=true"],
    )
    assert plain.identity() == tuned.identity()  # same run, only faster or leaner
    clip = apply_model_options(load_backbone("random:tiny"), tuned.model)
    assert (clip.text_packing, clip.text_chunk, clip.transformer.grad_checkpointing) == (False, 100, True)
    with pytest.raises(ConfigError, match="text_chunk"):
        load_run_config(None, {"method": "coop", "data.dataset": "dtd"}, ["model.text_chunk=-1"])


def test_default_loader_workers_fit_the_machine(monkeypatch):
    """Never more workers than usable cores (torch warns that such a loader may freeze), at most 4."""
    import os

    from restore.engine import run_config as engine_config

    cores = len(os.sched_getaffinity(0))
    assert engine_config.DataSection().workers == max(1, min(4, cores))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert engine_config.default_workers() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert engine_config.default_workers() == 1
