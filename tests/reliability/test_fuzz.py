"""Fuzzing the readers of user files: the split-file reader and the config loader (YAML text and --set
overrides). Whatever the input, the result is a value or a RestoreError with a message — never another
exception from deep inside, never a hang. Example counts are bounded so each test takes seconds."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from restore.errors import RestoreError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- values ----------------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)  # fmt: skip

# --- split files -----------------------------------------------------------------------------------------
paths = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["a/a_1.jpg", "../x.jpg", "/etc/passwd", "a/../../b.jpg", "a\x00b.jpg", "x" * 300 + ".jpg", "./a.jpg",
         "a//b.jpg", ".", "a/", "~/a.jpg", "C:\\a.jpg", "a/" * 200 + "b.jpg", "y" * 300 + "/a.jpg"]
    ),
)  # fmt: skip
labels = st.one_of(
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=-3, max_value=10**18),
    st.booleans(),
    st.floats(),
    st.text(max_size=3),
)
entries = st.one_of(st.tuples(paths, labels, st.text(max_size=20)).map(list), json_values)
split_docs = st.one_of(
    st.dictionaries(
        st.sampled_from(["train", "val", "test", "extra"]), st.lists(entries, max_size=8) | json_values, max_size=4
    ),
    json_values,
)


def _dataset_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fuzz-split-"))
    (root / "dtd" / "images" / "a").mkdir(parents=True)
    (root / "dtd" / "images" / "a" / "a_1.jpg").write_bytes(b"\xff\xd8 not decoded here")
    return root


def _load_split(text: bytes) -> None:
    from restore.data import load_dataset

    root = _dataset_root()
    split = root / "dtd" / "split_zhou_DescribableTextures.json"
    split.write_bytes(text)
    try:
        splits = load_dataset("dtd", root)
    except RestoreError as e:
        assert e.message.strip(), "an error without a message"
        return
    # Loaded: every listed image exists under the image folder, labels are 0..n-1 with one name each.
    assert splits.classnames
    for d in [*splits.train, *splits.val, *splits.test]:
        assert d.path.is_file() and d.path.resolve().is_relative_to((root / "dtd" / "images").resolve())
        assert 0 <= d.label < len(splits.classnames) and splits.classnames[d.label] == d.classname


@FUZZ
@given(split_docs)
@example({"train": [["a/a_1.jpg", 10**18, "a"]]})  # a huge label must not build a huge range
@example({"train": [["a\x00b.jpg", 0, "a"]]})
@example({"train": [["a/" * 200 + "b.jpg", 0, "a"]]})
@example({"train": [["x" * 300 + "/b.jpg", 0, "a"]]})  # a folder name longer than the file system allows
@example({"train": [["a/a_1.jpg/b.jpg", 0, "a"]]})  # a "folder" that is a file
@example({"train": [["a\x00/b.jpg", 0, "a"]]})
@example({"train": [["a/a_1.jpg", 0, "a"]], "val": [["a/a_1.jpg", 0, "b"]]})
@example({"train": [["a/a_1.jpg", 0, "a"]]})
def test_split_file_reader_on_arbitrary_json(doc):
    _load_split(json.dumps(doc).encode())


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(b"[" * 100_000 + b"]" * 100_000)  # nesting deeper than the JSON parser's recursion
@example(b'{"train": [["a/a_1.jpg", 0, "a"]], "test": NaN}')
@example(b"\xef\xbb\xbf{}")
def test_split_file_reader_on_arbitrary_bytes(data):
    _load_split(data)


# --- config files and overrides --------------------------------------------------------------------------
KEYS = ["method", "method.name", "method.n_ctx", "method.depth", "protocol", "seed", "device", "tag", "model",
        "model.backbone", "model.precision", "data", "data.dataset", "data.shots", "data.batch_size",
        "data.classes", "data.on_corrupt", "data.strict_shots", "data.root", "optim", "optim.lr", "optim.epochs",
        "optim.warmup_lr", "out", "db", "quiet", "log_every", "nope", "optim.nope", "method.nope", "seed.x",
        "a..b", ".", ""]  # fmt: skip
METHODS = ["coop", "maple", "promptsrc", "restore_m", "cocoop", "vpt", "ivlp", "kgcoop", "zeroshot", "nope"]
yaml_scalars = st.one_of(
    scalars, st.sampled_from(METHODS), st.dates(), st.datetimes(), st.binary(max_size=8),
)  # fmt: skip
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers() | st.dates(), inner, max_size=4)
    ),
    max_leaves=20,
)


def _near(valid):
    """Mostly valid values, sometimes anything: so that the success path is fuzzed as well as the errors."""
    return st.one_of(valid, valid, valid, yaml_values)


def _section(**fields):
    return st.fixed_dictionaries({}, optional={k: _near(v) for k, v in fields.items()})


method_sections = st.sampled_from(METHODS[:-1]).flatmap(
    lambda name: st.fixed_dictionaries(
        {"name": st.just(name)}, optional={"n_ctx": _near(st.integers(1, 8)), "depth": _near(st.integers(1, 3))}
    )
)
config_docs = st.fixed_dictionaries(
    {"method": _near(method_sections | st.sampled_from(METHODS))},
    optional={
        "protocol": _near(st.sampled_from(["train", "b2n", "xd", "dg", "fewshot", "b2m"])),
        "seed": _near(st.integers(0, 5)),
        "tag": _near(st.text(max_size=8)),
        "data": _section(
            dataset=st.sampled_from(["dtd", "eurosat", ""]),
            shots=st.integers(-2, 32),
            batch_size=st.integers(0, 64) | st.none(),
            classes=st.sampled_from(["all", "present", "most"]),
            on_corrupt=st.sampled_from(["error", "skip"]),
            strict_shots=st.booleans(),
            root=st.text(max_size=10),
        ),
        "optim": _section(lr=st.floats(0, 1) | st.none(), epochs=st.integers(-1, 50), momentum=st.floats(0, 1)),
        "model": _section(backbone=st.sampled_from(["ViT-B/16", "random:tiny"]), precision=st.just("fp32")),
        "quiet": _near(st.booleans()),
    },
)
VALUE_TEXT = ["0.002", "1e-3", "-1", "4", "null", "true", "[1, 2]", "{name: maple, depth: 2}", "coop", "b2n", "nan",
              "2001-01-01", "{1: 2}", "[[[[", "'quoted'", ""]  # fmt: skip
GOOD_SETS = ["optim.lr=0.002", "data.shots=4", "seed=3", "method.n_ctx=2", "protocol=b2n", "data.classes=present",
             "method={name: maple, depth: 2}", "quiet=true", "tag=x", "optim.epochs=null",
             "data.strict_shots=yes"]  # fmt: skip
overrides = st.one_of(
    st.sampled_from(GOOD_SETS),
    st.sampled_from(GOOD_SETS),
    st.sampled_from(GOOD_SETS),
    st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUE_TEXT)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=40),
    st.tuples(st.sampled_from(KEYS) | st.text(max_size=10), st.text(max_size=20) | yaml_scalars.map(str)).map(
        lambda kv: f"{kv[0]}={kv[1]}"
    ),
)


def _check_config(text: bytes | None, sets: list[str]) -> None:
    from restore.engine.run_config import build_run_config, load_run_config

    path = None
    if text is not None:
        path = Path(tempfile.mkdtemp(prefix="fuzz-config-")) / "run.yaml"
        path.write_bytes(text)
    try:
        cfg = load_run_config(path, {"method": None}, sets)
    except RestoreError as e:
        assert e.message.strip(), "an error without a message"
        return
    # A config that loads is written out (config.yaml) and read back to the same settings and hash.
    again = build_run_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
    assert again.hash() == cfg.hash() and again.to_dict() == cfg.to_dict()


@FUZZ
@given(st.text(max_size=300))
@example("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
         "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
         "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n")  # fmt: skip
@example("[" * 5000 + "]" * 5000)
@example("method: coop\n1: 2\nfoo: 3\n")
@example("method: coop\n2001-01-01: x\n")
@example("method: coop\n? [a, b]\n: c\n")
@example("method: coop\noptim: !!set {a, b}\n")
@example("method: !!python/object/apply:os.system ['true']\n")
def test_config_loader_on_arbitrary_yaml_text(text):
    _check_config(text.encode("utf-8", "surrogatepass"), [])


@FUZZ
@given(config_docs | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), yaml_values, max_size=6))
def test_config_loader_on_arbitrary_yaml_documents(doc):
    _check_config(yaml.safe_dump(doc, allow_unicode=True).encode(), [])


@FUZZ
@given(st.lists(overrides, max_size=4))
@example(["method=coop", "optim=3", "optim.lr=0.1"])
@example(["method=coop", "method.name=maple", "method.depth=2"])
@example(["method=coop", "data={shots: 2001-01-01}"])
@example(["method=coop", "seed=[1, 2]"])
@example(["method={name: coop, 1: 2}"])
@example(["method=coop", "data={1: 2, a: 3}"])
def test_config_overrides_on_arbitrary_text(sets):
    _check_config(b"method: coop\n", sets)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: !!python/object/apply:os.system ['touch /tmp/pwned']\n", "not valid YAML"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_config_loader_refuses_code_tags_and_deep_nesting(tmp_path, text, message):
    from restore.errors import ConfigError
    from restore.options import load_yaml

    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(path)


def test_a_yaml_bomb_is_refused_quickly(tmp_path):
    from restore.errors import ConfigError
    from restore.options import load_yaml

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 leaves when expanded
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="too large"):
        load_yaml(path)
