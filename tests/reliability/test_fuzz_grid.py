"""Fuzzing the sweep grid expander (restore.scale.grid): arbitrary grid files and near-valid grid documents
give cells or a RestoreError with a message — never another exception. Cells that expand are checked: each
one's config is valid, its hash is what the engine records, its axis values are the grid's."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from restore.errors import RestoreError
from restore.scale import grid as grid_module
from tests.reliability.test_fuzz import METHODS, yaml_values

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(-1, 1), st.text(max_size=6))
OVERRIDE_KEYS = ["optim.lr", "optim.epochs", "method.n_ctx", "data.batch_size", "tag", "data", "optim",
                 "model.backbone", "seed", "method", "data.shots", "out", "device", "nope.x", "a..b", ""]  # fmt: skip


def _names(options):
    return st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True) | st.sampled_from(options)


overrides = st.fixed_dictionaries(
    {},
    optional={"optim.lr": st.floats(1e-4, 1), "optim.epochs": st.integers(0, 5), "method.n_ctx": st.integers(1, 4),
              "tag": st.text(max_size=6), "data.batch_size": st.integers(1, 8), "optim": st.just({"momentum": 0.5})},
)  # fmt: skip
bad_overrides = st.dictionaries(st.sampled_from(OVERRIDE_KEYS), scalars | st.dictionaries(st.text(max_size=4), scalars),
                                min_size=1, max_size=3)  # fmt: skip
axis_entry = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(METHODS),
        "dataset": st.sampled_from(["dtd", "eurosat", "imagenet_a", "nope"]),
        "protocol": st.sampled_from(["b2n", "fewshot", "xd"]),
        "shots": st.integers(-1, 16),
        "seed": st.integers(0, 3),
        "set": overrides,
    },
)
valid_docs = st.fixed_dictionaries(
    {
        "set": overrides.map(lambda o: {"model.backbone": "random:tiny", **o}),
        "methods": _names(METHODS) | st.dictionaries(st.sampled_from(METHODS), overrides, min_size=1, max_size=2),
        "datasets": _names(["dtd", "eurosat", "imagenet_a", "nope"]),
    },
    optional={
        "name": st.text(max_size=8),
        "protocols": _names(["b2n", "fewshot", "xd", "b2m"]),
        "shots": st.lists(st.integers(-2, 16), min_size=1, max_size=2, unique=True),
        "seeds": st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True),
        "grid": st.dictionaries(st.sampled_from(OVERRIDE_KEYS), st.lists(scalars, min_size=1, max_size=2),
                                min_size=1, max_size=2),
        "include": st.lists(axis_entry, max_size=2),
        "exclude": st.lists(axis_entry.map(lambda e: {k: v for k, v in e.items() if k != "set"}), max_size=2),
        "out": st.text(max_size=8),
    },
)  # fmt: skip
# Near-valid documents: a grid of plausible values, or one with a single field (or an unknown key) replaced by
# anything YAML can hold, so that both the success path and each field's checks are fuzzed.
grid_docs = valid_docs | valid_docs.flatmap(
    lambda doc: st.sampled_from([*doc, "bogus"]).flatmap(
        lambda key: (yaml_values | bad_overrides | st.lists(bad_overrides, max_size=2)).map(lambda v: {**doc, key: v})
    )
)


def _expand_file(text: bytes) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-grid-"))
    (folder / "sweep.yaml").write_bytes(text)
    try:
        grid = grid_module.load_grid(folder / "sweep.yaml")
        cells = grid_module.expand(grid)
    except RestoreError as e:
        assert e.message.strip(), "an error without a message"
        return
    _check_cells(grid, cells)


def _check_cells(grid, cells) -> None:
    from restore.engine.run_config import build_run_config

    assert len({c.label for c in cells}) == len(cells)
    for cell in cells[:8]:
        assert cell.protocol == cell.config.protocol and cell.dataset == cell.config.data.dataset
        assert (cell.shots, cell.seed, cell.method) == (
            cell.config.data.shots,
            cell.config.seed,
            cell.config.method_name,
        )
        assert build_run_config(cell.data).hash() == cell.config.hash()  # the cell's plain data is its config
        try:
            hashes = grid_module.expected_hashes(cell, "cpu")
        except RestoreError as e:
            assert cell.label in e.message
            continue
        assert len(hashes) == 1


@FUZZ
@given(grid_docs)
@example({"set": {"model.backbone": "random:tiny", "data": 5}, "methods": ["coop"], "datasets": ["dtd"]})
@example({"set": {"model.backbone": "random:tiny"}, "methods": ["coop", "maple"], "datasets": ["dtd"],
          "include": [{"method": "coop", "shots": "many"}]})  # fmt: skip
@example({"set": {"model.backbone": "random:tiny"}, "methods": ["coop"], "datasets": ["dtd"],
          "include": [{"seed": [1, 2]}]})  # fmt: skip
@example({"set": {"model.backbone": "random:tiny"}, "methods": {"coop": {"data": 3}}, "datasets": ["dtd"]})
def test_grid_expander_on_near_valid_documents(doc):
    _expand_file(yaml.safe_dump(doc, allow_unicode=True).encode())


@FUZZ
@given(st.text(max_size=300))
@example("methods: [coop]\ndatasets: [dtd]\nset: {model.backbone: random:tiny}\ngrid: {optim.lr: []}\n")
@example("methods: [coop]\ndatasets: [dtd]\nconfig: /nonexistent.yaml\n")
@example("methods: [coop]\ndatasets: [dtd]\nconfig: .\n")
@example("methods: [coop]\ndatasets: [dtd]\nconfig: [a]\n")
def test_grid_expander_on_arbitrary_text(text):
    _expand_file(text.encode("utf-8", "surrogatepass"))
