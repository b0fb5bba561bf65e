"""The command line: help everywhere, a whole base-to-novel protocol recorded and reported, clean errors that
write nothing, methods, zero-shot, eval, config files and refused resumes."""

from __future__ import annotations

import json
import re
import statistics

import pytest
import yaml
from typer.testing import CliRunner

from restore.cli import app
from tests.engine.fakes import make_tree

RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
TINY = ["--backbone", "random:tiny", "--workers", "0", "--quiet", "--set", "data.eval_batch_size=16"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data"))


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("command", [[], ["train"], ["run"], ["eval"], ["zeroshot"], ["methods"], ["version"]])
def test_help_on_every_command(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_sub_apps_and_shell_completion_are_available():
    result = invoke("--help")
    assert "--install-completion" in result.output and "--show-completion" in result.output
    for name in ("train", "run", "eval", "zeroshot", "methods", "data", "report"):
        assert re.search(rf"│ {name}\b", result.output), name


@pytest.mark.integration
def test_b2n_two_methods_two_seeds_recorded_and_reported(data_root, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    result = invoke(
        "run", "b2n", "-m", "coop", "-m", "maple", "--seed", "1", "--seed", "2", "-d", "dtd", "-r", data_root,
        "--shots", 4, "--epochs", 2, "--batch-size", 4, "-o", out, "--db", db, *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dirs = sorted(out.glob("b2n/dtd/*/shots4_seed*"))
    assert [p.relative_to(out).parts[2] for p in run_dirs] == ["coop", "coop", "maple", "maple"]
    metrics = {}
    for d in run_dirs:
        m = json.loads((d / "metrics.json").read_text())
        metrics.setdefault(m["method"], []).append(m["metrics"])

    from restore.results import open_results

    with open_results(db) as store:
        rows = store.query()
    assert len(rows) == 4 and {r.status for r in rows} == {"finished"}
    assert sorted((r.method, r.seed) for r in rows) == [("coop", 1), ("coop", 2), ("maple", 1), ("maple", 2)]

    report = invoke("report", "--db", db, "--no-published")
    assert report.exit_code == 0, report.output
    for method, runs in metrics.items():
        base = [r["base"]["top1"] for r in runs]
        novel = [r["novel"]["top1"] for r in runs]
        b, n = statistics.mean(base), statistics.mean(novel)
        hm = 0.0 if b + n == 0 else 2 * b * n / (b + n)  # HM of the means
        (line,) = [ln for ln in report.output.splitlines() if re.match(rf"\W*{method}\b", ln)]
        expected = [f"{b:.2f}", f"{n:.2f}", f"{hm:.2f}",
                    f"{b:.2f} ± {statistics.stdev(base):.2f}", f"{n:.2f} ± {statistics.stdev(novel):.2f}"]  # fmt: skip
        for text in expected:
            assert text in line, (text, line)


def test_the_schedule_flag_reaches_the_run_config_and_the_report(data_root, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    result = invoke("run", "b2n", "-m", "kgcoop", "--schedule", "restore_paper", "-d", "dtd", "-r", data_root,
                    "--shots", 2, "--epochs", 1, "-o", out, "--db", db, *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    (config,) = out.glob("b2n/dtd/kgcoop/*/config.yaml")
    written = yaml.safe_load(config.read_text())
    # RESTORE_ scripts/kgcoop/base2new_train.sh: WEIGHT 1.0, vit_b16_ep10_ctxv1.yaml: batch 4, lr 0.002
    assert written["schedule"] == "restore_paper" and written["method"]["weight"] == 1.0
    assert (written["data"]["batch_size"], written["optim"]["lr"], written["optim"]["epochs"]) == (4, 0.002, 1)
    report = invoke("report", "--db", db, "--no-published")
    assert re.search(r"kgcoop \(restore_paper\)", report.output), report.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "coop", "--set", "optim.lr=fast"], "optim.lr: 'fast' is not"),
        (["-m", "coop", "--set", "optim.lrr=0.1"], "unknown config key optim.lrr"),
        (["-m", "mapel"], "unknown method 'mapel'"),
        (["-m", "coop", "--schedule", "paper"], "unknown schedule set 'paper'; valid sets: own, restore_paper"),
        (["-m", "coop", "-d", "eurosat"], "EuroSAT: folder"),
        (["-m", "coop", "--set", "data.classes=most"], "data.classes: 'most' is not one of ['all', 'present']"),
    ],
)
def test_bad_input_exits_non_zero_with_one_message_and_writes_nothing(data_root, tmp_path, args, message):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    flags = {"-d": "dtd"} if "-d" not in args else {}
    extra = [x for kv in flags.items() for x in kv]
    result = invoke("run", "b2n", *args, *extra, "-r", data_root, "-o", out, "--db", db, "--epochs", 1, *TINY)
    assert result.exit_code != 0
    errors = _errors(result.output)
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not db.exists() and not out.exists()


def test_missing_data_root_is_a_clean_error(tmp_path):
    result = invoke("train", "-m", "coop", "-d", "dtd", "-r", tmp_path / "nowhere", "-o", tmp_path / "o", *TINY)
    assert result.exit_code == 2 and "data root" in _errors(result.output)[0]
    assert not (tmp_path / "o").exists()


def test_methods_lists_names_defaults_and_options():
    from restore.methods import method_names

    result = invoke("methods")
    assert result.exit_code == 0
    for name in method_names():
        assert re.search(rf"│ {name}\s", result.output), name
    assert "0.0035 / 5 / 4 |" in result.output  # MaPLe's lr / epochs / batch: own | restore_paper
    one = invoke("methods", "maple")
    assert "method.depth" in one.output and "PROMPT_DEPTH 9" in one.output
    assert "schedule sets" in one.output and "restore_paper" in one.output
    table = json.loads(invoke("methods", "--json").output)
    maple = next(m for m in table if m["name"] == "maple")
    own_b2n = next(s for s in maple["schedules"] if (s["set"], s["protocol"]) == ("own", "b2n"))
    assert (own_b2n["lr"], own_b2n["epochs"], own_b2n["batch_size"]) == (0.0035, 5, 4)
    assert {"name": "n_ctx", "type": "int", "default": 2} .items() <= next(
        f for f in maple["fields"] if f["name"] == "n_ctx").items()  # fmt: skip
    assert invoke("methods", "nope").exit_code == 2


def test_train_from_a_yaml_config_then_eval_and_a_refused_resume(data_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"method": {"name": "maple", "depth": 2}, "data": {"dataset": "dtd", "shots": 4},
                                      "optim": {"epochs": 1}, "seed": 3}))  # fmt: skip
    run_dir = tmp_path / "my-run"
    args = ["train", "-c", config, "-r", data_root, "--run-dir", run_dir, "--db", "none", "--batch-size", 4, *TINY]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["method"] == {"name": "maple", "n_ctx": 2, "depth": 2, "ctx_init": "a photo of a"}
    assert written["seed"] == 3 and written["protocol"] == "train" and written["optim"]["lr"] == 0.0035
    saved = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert set(saved) == {"test", "shift"} and saved["test"]["n"] == 6 * 4

    scores = tmp_path / "scores.json"
    ev = invoke("eval", "--checkpoint", run_dir, "-d", "dtd", "-r", data_root, "--device", "cpu", "--json", scores)
    assert ev.exit_code == 0, ev.output
    assert json.loads(scores.read_text())["test"] == saved["test"]
    own = tmp_path / "own.json"  # no -d, no -r: the run's own dataset from the run's own root
    ev = invoke("eval", "--checkpoint", run_dir / "model.safetensors", "--device", "cpu", "--json", own)
    assert ev.exit_code == 0, ev.output
    assert json.loads(own.read_text())["test"] == saved["test"]
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    (error,) = _errors(invoke("eval", "--checkpoint", stray, "--device", "cpu").output)
    assert "holds no config.yaml, so its dataset is unknown" in error

    refused = invoke(*args, "--resume", "--lr", "0.5")
    assert refused.exit_code != 0
    (error,) = _errors(refused.output)
    assert "cannot resume" in error and "optim.lr: 0.0035 before, 0.5 now" in error


def test_zeroshot_on_an_image_folder_and_on_a_dataset(data_root, tmp_path):
    folder = data_root / "dtd" / "images"  # <folder>/<class>/*.jpg
    n_images = len(list(folder.glob("*/*.jpg")))
    out = tmp_path / "zs.json"
    result = invoke("zeroshot", "-b", "random:tiny", "--images", folder, "--json", out, "--quiet")
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["images"]["n"] == n_images and 0 <= scores["images"]["top1"] <= 100
    on_dataset = invoke("zeroshot", "-b", "random:tiny", "-d", "dtd", "-r", data_root, "-p", "b2n", "--quiet")
    assert on_dataset.exit_code == 0 and "base" in on_dataset.output and "novel" in on_dataset.output
    bad = invoke("zeroshot", "-b", "random:tiny", "--images", tmp_path / "empty-nothing")
    assert bad.exit_code == 2 and "does not exist" in _errors(bad.output)[0]


def test_version_prints_the_installed_version(capsys):
    import restore
    from restore.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"restore {restore.__version__}"
