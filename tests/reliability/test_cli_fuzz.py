"""Issue 18, point 7: a fuzzer at the level users meet. Every command and option of `restore`, read from the
CLI's own option table (the click command tree typer builds), gets hostile and clumsy values — numbers with
thousands of digits, negative counts, templates with two `{}`, malformed YAML, JSON and split files, folders
where files belong. Whatever it is given, a command ends with a documented exit status (0, 1, 2, 3 or 130),
no output holds a Python traceback, and a rejected input (exit 2) writes nothing.

A new command or option is fuzzed without touching this file. CI runs a small example budget; `-m slow` a
larger one. A command given inputs that all happen to be valid starts real work: it is stopped after
`BUSY_S` seconds (its inputs were accepted, which is all this test checks)."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from restore.errors import RestoreError
from tests.reliability.helpers import RUNNER, make_tree

EXIT_CODES = {0, 1, 2, 3, 130}  # ok, a finished job reporting failures, a wrong input, a training error, Ctrl-C
BUSY_S = 3.0
# Commands whose accepted input does work no test should: train CLIP for an hour, download datasets, write
# into the installed package (world card's default output), or run the whole quickstart. Their options are
# still parsed by click; their inputs are checked by their own tests.
SKIPPED = {
    ("quickstart",): "runs the whole quickstart (minutes)",
    ("world", "pretrain"): "pretrains the world CLIP (half an hour)",
    ("world", "card"): "writes the model card beside the shipped record by default",
    ("data", "download"): "downloads datasets",
}


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    from restore.cli import app

    found = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        else:
            found.append((path, command))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = [(path, cmd) for path, cmd in _commands() if path not in SKIPPED]


def test_the_skip_list_names_existing_commands():
    names = {path for path, _ in _commands()}
    assert set(SKIPPED) <= names, set(SKIPPED) - names
    assert len(COMMANDS) >= 20  # train, run, eval, zeroshot, sweep, report, data *, results *, world *, ...


# --- values --------------------------------------------------------------------------------------------
HUGE = "9" * 5000
INTS = st.one_of(
    st.integers(-3, 20).map(str),
    st.sampled_from(["0", "-1", "-5", "2147483648", str(2**63), "99999999999999999999999", HUGE, "-" + HUGE]),
    st.sampled_from(["1.5", "nan", "", "ten", "0x10", "1e9"]),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", HUGE, "0.002", "", "abc"]),
)
NAMES = st.sampled_from([
    "coop", "maple", "restore_m", "zeroshot", "nope", "dtd", "DescribableTextures", "world_color_shape", "imagenet",
    "random:tiny", "random:nope", "ViT-B/16", "world", "b2n", "fewshot", "cpu", "cuda:7", "auto", "fp16", "all",
    "present", "train", "none", "local",
])  # fmt: skip
TEXT = st.one_of(
    NAMES,
    st.text(max_size=20),
    st.sampled_from([
        "a {} photo of {}", "{0}", "{x} {}", "{", "}", "a photo of a {}.", "x" * 100_000, "\x00", "../../etc/passwd",
        "optim.epochs=" + HUGE, "seed=-1", "method.n_ctx=1000000000", "data.image_size=100000", "=", "a.b.c=1",
        "optim=[1, 2", "data.dataset=dtd", "model.backbone=random:tiny", "log_every=0", "method={name: coop}",
    ]),
)  # fmt: skip
FILES = ["missing.yaml", "file.yaml", "file.json", "split.json", "folder", "deep/a/b", "empty", "/proc/nope"]
PATHS = st.one_of(st.sampled_from(FILES), st.sampled_from(["data", "out", "runs", "x.sqlite"]), st.text(max_size=8))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
SPLIT_ENTRY = st.tuples(
    st.one_of(st.sampled_from(["red_plain/red_plain_0001.jpg", "/etc/passwd", "../x.jpg", ""]), st.text(max_size=6)),
    st.one_of(st.integers(-2, 8), st.just(10**30), st.just("0")),
    st.one_of(st.sampled_from(["red plain", "", " ", "blue checks"]), st.text(max_size=6)),
).map(list)
SPLIT = st.one_of(
    st.none(),  # the generated dataset's own, valid split file
    st.fixed_dictionaries(
        {}, optional={k: st.lists(SPLIT_ENTRY, max_size=6) for k in ("train", "val", "test")}
    ).map(json.dumps),
    JSON.map(json.dumps),
    st.sampled_from(["[" * 50_000, '{"train": [["a.jpg", ' + HUGE + ', "a"]]}', "", "\xff\xfe", "{"]),
)
YAML = st.one_of(
    JSON.map(json.dumps),  # JSON is YAML
    st.text(max_size=60),
    st.sampled_from([
        f"optim:\n  epochs: {HUGE}\n", "method: coop\nseed: 99999999999999999999999\n", "a: &a [*a]\n",
        "methods: [coop]\ndatasets: [dtd]\nseeds: [" + HUGE + "]\n", "- [\n", "!!python/object:os.system {}\n",
        "data:\n  shots: -7\n", "method: {name: maple, n_ctx: 100000}\n", "x: 2001-02-30\n",
    ]),
)  # fmt: skip


def _annotation(param: Any) -> Any:
    return param.type_descriptor.annotation


def _values(param: Any) -> st.SearchStrategy[list[str]]:
    """Command-line words for one parameter, chosen by its annotated type."""
    tp = _annotation(param)
    many = typing.get_origin(tp) is list
    inner = typing.get_args(tp)[0] if many else tp
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        one = st.one_of(st.sampled_from([m.value for m in inner]), TEXT)
    elif inner is int:
        one = INTS
    elif inner is float:
        one = FLOATS
    elif inner is Path:
        one = PATHS
    else:
        one = TEXT
    return st.lists(one, min_size=1, max_size=3 if many or param.nargs == -1 else 1)


@st.composite
def invocations(draw: Any) -> tuple[tuple[str, ...], list[str]]:
    path, command = draw(st.sampled_from(COMMANDS))
    words: list[str] = list(path)
    for param in command.params:
        if param.name in ("help",):
            continue
        if not param.required and not draw(st.booleans()):
            continue
        if getattr(param, "is_flag", False):
            words.append(draw(st.sampled_from(param.opts + list(param.secondary_opts or []))))
            continue
        values = draw(_values(param))
        if param.param_type_name == "argument":
            words.extend(values)
        else:
            for v in values:
                words += [draw(st.sampled_from(param.opts)), v]
    if draw(st.booleans()):  # point the data root at a generated dataset whose split file is fuzzed too
        words += ["--root", "data"] if any("--root" in p.opts for p in command.params) else []
    return path, words


# --- the workspace ---------------------------------------------------------------------------------------
class Busy(BaseException):
    """Raised by the alarm: the command accepted its inputs and is doing real work."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    def stop(signum, frame):
        raise Busy

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _snapshot(folder: Path, cache: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and cache not in p.parents:
            st_ = p.stat()
            out[str(p.relative_to(folder))] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def template_root(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("fuzzdata"))


def _workspace(base: Path, template_root: Path, split: str | None, yaml_text: str, json_text: str) -> None:
    import shutil

    shutil.copytree(template_root, base / "data")
    own = base / "data" / "dtd" / "split_zhou_DescribableTextures.json"
    if split is not None:
        own.write_text(split, errors="surrogateescape")
    (base / "split.json").write_text(own.read_text(), errors="surrogateescape")
    (base / "file.yaml").write_text(yaml_text, errors="surrogateescape")
    (base / "file.json").write_text(json_text, errors="surrogateescape")
    (base / "empty").write_bytes(b"")
    (base / "folder").mkdir()
    (base / "deep" / "a" / "b").mkdir(parents=True)


def _check(invocation, split, yaml_text, json_text, template_root):
    _, words = invocation
    from restore.cli import app

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        _workspace(base, template_root, split, yaml_text, json_text)
        cache = base / "cache"
        before = _snapshot(base, cache)
        cwd = os.getcwd()
        env = {"COLUMNS": "200", "OMP_NUM_THREADS": "1", "RESTORE_CACHE": str(cache), "RESTORE_DATA": str(base)}
        os.chdir(base)
        try:
            with _time_limit(BUSY_S):
                result = RUNNER.invoke(app, words, env=env)
        except Busy:
            return  # accepted and working
        finally:
            os.chdir(cwd)
        shown = f"restore {' '.join(w[:80] for w in words)}\n{result.output[-3000:]}"
        code = result.exit_code
        if isinstance(result.exception, RestoreError):
            code = result.exception.exit_code  # what `restore.cli.main` prints as error:/hint: lines
        elif result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception!s:.300}\n{shown}")
        assert code in EXIT_CODES, shown
        assert "Traceback" not in result.output, shown
        if code == 2:
            after = _snapshot(base, cache)
            written = sorted(k for k in after if after[k] != before.get(k))
            assert not written, f"a rejected input wrote {written[:5]}\n{shown}"


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _example(*words: str, split: str | None = None, yaml_text: str = "{}") -> Any:
    """An invocation that once ended in a traceback (issue 18, or found here), always tried first."""
    return example(invocation=(tuple(words[:1]), list(words)), split=split, yaml_text=yaml_text, json_text="{}")


RUN = ["run", "b2n", "-m", "coop", "-d", "dtd", "--root", "data", "--backbone", "random:tiny", "--workers", "0",
       "--epochs", "1", "--quiet"]  # fmt: skip
ZEROSHOT = ["zeroshot", "-b", "random:tiny", "-d", "dtd", "--root", "data", "--quiet"]


@settings(max_examples=40, **_SETTINGS)
@given(invocation=invocations(), split=SPLIT, yaml_text=YAML, json_text=JSON.map(json.dumps))
@_example(*RUN, "--seed", "99999999999999999999999")
@_example(*RUN, "--set", "optim.epochs=" + HUGE)
@_example(*RUN, "-c", "file.yaml", yaml_text=f"optim:\n  epochs: {HUGE}\n")
@_example(*RUN, "--set", "method.n_ctx=1000000000")
@_example(*ZEROSHOT, "--batch-size", "0")
@_example(*ZEROSHOT, "--templates", "a {} photo of {}")
@_example("data", "info", "dtd", "--root", "data", split='{"train": [["a.jpg", ' + HUGE + ', "a"]]}')
@_example("world", "samples", "--out", "missing.yaml")  # found by this test: PIL's "unknown file extension"
@_example("analyze", "missing.yaml", "--out", "file.yaml")  # found by this test: FileExistsError
@_example("analyze", "missing.yaml", "--out", "/proc/nope")  # found by this test: FileNotFoundError
@_example("world", "evaluate", "--threads", "0")  # found by this test: torch's set_num_threads RuntimeError
def test_every_command_survives_hostile_input(template_root, invocation, split, yaml_text, json_text):
    _check(invocation, split, yaml_text, json_text, template_root)


@pytest.mark.slow
@settings(max_examples=600, **_SETTINGS)
@given(invocation=invocations(), split=SPLIT, yaml_text=YAML, json_text=JSON.map(json.dumps))
def test_every_command_survives_hostile_input_long(template_root, invocation, split, yaml_text, json_text):
    _check(invocation, split, yaml_text, json_text, template_root)
