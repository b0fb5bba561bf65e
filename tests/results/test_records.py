"""The run record: config hashing, metric checks, ids and code version."""

from __future__ import annotations

import math
import re

import pytest

from restore import __version__
from restore.errors import ResultsError
from restore.results.records import (
    RunRecord,
    code_version,
    config_hash,
    harmonic_mean,
    new_run_id,
    validate_metrics,
)


def test_config_hash_ignores_key_order_and_sequence_type_but_not_values():
    a = {"optim": {"lr": 0.002, "momentum": 0.9}, "layers": [1, 2], "name": "coop"}
    b = {"name": "coop", "layers": (1, 2), "optim": {"momentum": 0.9, "lr": 0.002}}
    assert config_hash(a) == config_hash(b)
    assert re.fullmatch(r"[0-9a-f]{64}", config_hash(a))
    assert config_hash(a) != config_hash({**a, "optim": {"lr": 0.0035, "momentum": 0.9}})
    assert config_hash(a) != config_hash({**a, "layers": [2, 1]})


def test_config_hash_ignore_drops_dotted_keys():
    a = {"optim": {"lr": 0.002}, "output": {"dir": "/tmp/a", "keep": 1}}
    b = {"optim": {"lr": 0.002}, "output": {"dir": "/scratch/b", "keep": 1}}
    assert config_hash(a) != config_hash(b)
    assert config_hash(a, ignore=["output.dir"]) == config_hash(b, ignore=["output.dir"])
    assert config_hash(a, ignore=["output"]) == config_hash({"optim": {"lr": 0.002}})


def test_config_with_nan_or_objects_is_refused_with_a_clear_message():
    with pytest.raises(ResultsError, match="config cannot be stored as JSON"):
        config_hash({"lr": math.nan})
    with pytest.raises(ResultsError, match="object is not JSON serialisable"):
        config_hash({"thing": object()})


def test_b2n_metrics_get_hm_filled_in_and_a_wrong_hm_is_refused():
    m = validate_metrics({"base": {"top1": 80.0}, "novel": {"top1": 60.0}}, "b2n", complete=True)
    assert m["hm"] == pytest.approx(2 * 80 * 60 / 140)
    ok = validate_metrics({"base": {"top1": 80.0}, "novel": {"top1": 60.0}, "hm": 68.57}, "b2n", complete=True)
    assert ok["hm"] == 68.57  # rounding is fine
    with pytest.raises(ResultsError, match=r"does not match 2BN/\(B\+N\)"):
        validate_metrics({"base": {"top1": 80.0}, "novel": {"top1": 60.0}, "hm": 70.0}, "b2n", complete=True)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"base": {"top1": 80.0}}, "needs metrics for 'base' and 'novel'; missing \\['novel'\\]"),
        ({"base": {"top1": 180.0}, "novel": {"top1": 1.0}}, "is not a percentage in \\[0, 100\\]"),
        ({"base": {"top1": math.nan}, "novel": {"top1": 1.0}}, "is not a percentage"),
        ({"base": {"top5": 80.0}, "novel": {"top1": 1.0}}, "must be a split's results"),
        ({"base": 80.0, "novel": {"top1": 1.0}}, "must be a split's results"),
        ({"base": {"top1": 8.0, "n": -1}, "novel": {"top1": 1.0}}, "must be a count"),
        ({"base": {"top1": 8.0}, "novel": {"top1": 1.0}, "shift": {"vision": [1.0, "x"]}}, "list of finite numbers"),
        ({"base": {"top1": 8.0}, "novel": {"top1": 1.0}, "skipped_images": -2}, "skipped_images"),
        ([1, 2], "must be a dict of splits"),
    ],
)
def test_malformed_metrics_are_refused(metrics, message):
    with pytest.raises(ResultsError, match=message):
        validate_metrics(metrics, "b2n", complete=True)


def test_unfinished_runs_may_have_partial_metrics_but_finished_ones_need_a_split():
    assert validate_metrics({"base": {"top1": 50.0}}, "b2n", complete=False) == {"base": {"top1": 50.0}}
    with pytest.raises(ResultsError, match="at least one evaluated split"):
        validate_metrics({"skipped_images": 0}, "xd", complete=True)


def test_record_validation_names_the_bad_field():
    rec = RunRecord.new(method="coop", dataset="dtd", protocol="b2n", seed=1, backbone="tiny", config={})
    with pytest.raises(ResultsError, match="unknown protocol 'b2m'") as err:
        RunRecord.new(method="coop", dataset="dtd", protocol="b2m", seed=1, backbone="tiny", config={}).validated()
    assert "b2n, xd, dg, fewshot, train" in err.value.hint
    import dataclasses

    with pytest.raises(ResultsError, match="'method' must be a non-empty string"):
        dataclasses.replace(rec, method="").validated()
    with pytest.raises(ResultsError, match="few-shot run needs 'shots'"):
        dataclasses.replace(rec, protocol="fewshot").validated()
    with pytest.raises(ResultsError, match="'seed' must be an integer"):
        dataclasses.replace(rec, seed="1").validated()


def test_run_ids_are_unique_and_safe_as_folder_names():
    ids = {new_run_id("restore/m", "oxford pets", "b2n", 1) for _ in range(50)}
    assert len(ids) == 50
    for run_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", run_id)
        assert "-restore_m-oxford_pets-b2n-s1-" in run_id


def test_code_version_starts_with_the_package_version():
    version = code_version()
    assert version == __version__ or version.startswith(f"{__version__}+g")


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
