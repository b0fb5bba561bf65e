"""The sweep grid: a YAML file naming the runs of a sweep, and its expansion into checked run configs.

::

    name: b2n_small                  # optional; default: the file's name without .yaml
    config: ../smoke_tiny.yaml       # optional base run config, relative to this file
    out: runs                        # optional: where the run directories go (--out wins)
    db: runs/results.sqlite          # optional: the results database (--db wins)
    protocols: [b2n]                 # axes: every combination is a cell ...
    methods: [coop, maple]           #   names, or a mapping name -> overrides for that method only
    datasets: [dtd, eurosat]
    shots: [16]
    seeds: [1, 2, 3]
    set:                             # overrides (dotted run-config keys, as --set) for every cell
      schedule: restore_paper        #   e.g. one schedule set for all methods (like for like); a grid
      model.backbone: ViT-B/16       #   matrix `schedule: [own, restore_paper]` runs both, tagged
      data.root: ~/data
    grid:                            # override matrix: the Cartesian product of these values ...
      optim.lr: [0.002, 0.0035]      #   ... times the axes; each point tags its runs "optim.lr=0.002"
    include:                         # extra cells: axis values (one-valued axes may be left out) + set
      - {method: kgcoop, dataset: dtd, seed: 1, set: {optim.epochs: 5}}
      - {method: coop, dataset: [dtd, eurosat], seed: [1, 2], set: {optim.lr: 0.01}}  # a list: each value
    exclude:                         # drop the cells that match every key given
      - {method: maple, dataset: eurosat}

Axes left out take the base config's value (protocol, data.shots, seed; seed 1 without one), and every
axis needs one value at least. Overrides apply in this order, later ones winning: the base config,
``set``, the method's own overrides, the grid point, an include's ``set``; the axis values of a cell are
not overrides and cannot be set any other way. A grid point's values become the run's ``tag`` (after any
tag set elsewhere) so that reports keep the variants apart instead of averaging them as seeds.

A grid is counted before it is expanded (`count_cells`: the product of its axes): more than
``$RESTORE_MAX_CELLS`` cells (default 10,000) is refused with the count; cells are built one at a time
(`iter_cells`), so nothing grows with the grid before that check.

Every cell is checked before any run starts: the config keys and values, the method, the dataset name
(and that the protocol can train on it), the backbone setting. A `ConfigError` names the cell. Whether a
dataset's folder and images are there is checked by the run itself, on the machine that runs it (a Ray
worker may see other disks than the driver): a cell whose data is missing fails alone, recorded as failed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restore import plugins
from restore.data import get_dataset
from restore.engine.backbone import check_backbone
from restore.engine.plan import record_configs
from restore.engine.run_config import RunConfig, build_run_config
from restore.errors import ConfigError, RestoreError
from restore.options import load_yaml, parse_override

GRID_KEYS = (
    "name", "config", "out", "db", "protocols", "methods", "datasets", "shots", "seeds", "set", "grid", "include",
    "exclude",
)  # fmt: skip
# Axis name in the grid file -> dotted run-config key.
AXES = {
    "protocol": "protocol",
    "method": "method.name",
    "dataset": "data.dataset",
    "shots": "data.shots",
    "seed": "seed",
}
# Keys the sweep decides for the whole sweep, not per cell.
SWEEP_KEYS = ("out", "db")


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its axis values, its grid point, its config (checked, not yet resolved)."""

    protocol: str
    method: str
    dataset: str
    shots: int
    seed: int
    point: tuple[tuple[str, Any], ...]  # the grid point (dotted key, value), in the grid's key order
    data: dict[str, Any]  # the nested config mapping a run is built from (plain YAML data)
    config: RunConfig = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        """``b2n/dtd/coop/shots16/seed1`` plus the grid point: how progress lines and errors name it."""
        return cell_label(self.protocol, self.dataset, self.method, self.shots, self.seed, self.point)


def cell_label(protocol: str, dataset: str, method: str, shots: int, seed: int, point: tuple = ()) -> str:
    text = f"{protocol}/{dataset}/{method}/shots{'all' if shots <= 0 else shots}/seed{seed}"
    return text + (f" [{point_tag(point)}]" if point else "")


def point_tag(point: tuple[tuple[str, Any], ...]) -> str:
    """A grid point as a tag: ``optim.lr=0.002,method.n_ctx=4``."""
    return ",".join(f"{k}={_show(v)}" for k, v in point)


@dataclass
class Grid:
    """A parsed grid file (structure checked; the cells are built by `expand`)."""

    name: str
    base: dict[str, Any]
    protocols: list[str]
    methods: dict[str, dict[str, Any]]
    datasets: list[str]
    shots: list[int]
    seeds: list[int]
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    include: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    out: str | None = None
    db: str | None = None
    source: Path | None = None
    # From the command line (`restore sweep --root/--set`): the data root of every cell that names none and
    # whose dataset has no home of its own (the world), and overrides that win over everything in the file.
    root: str | None = None
    force: dict[str, Any] = field(default_factory=dict)


def with_command_line(grid: Grid, *, root: str | Path | None = None, overrides: Sequence[str] = ()) -> Grid:
    """``grid`` with `restore sweep`'s ``--root`` and ``--set KEY=VALUE`` (applied to every cell, last)."""
    force = dict(grid.force)
    for text in overrides:
        path, value = parse_override(text)
        key = ".".join(path)
        _check_override_key(key, f"--set {key}")
        if key in grid.grid:
            raise ConfigError(
                f"--set {key}: the grid's matrix varies {key} ({grid.grid[key]})",
                hint=f"drop {key} from `grid:` to set one value for every cell, or leave out --set {key}",
            )
        force[key] = value
    return dataclasses.replace(grid, root=str(root) if root is not None else grid.root, force=force)


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# --- reading the file -----------------------------------------------------------------------------------
def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file's structure (the cells are checked by `expand`)."""
    path = Path(path).expanduser()
    data = load_yaml(path)
    return parse_grid(
        data, name=path.name.removesuffix(".yaml").removesuffix(".yml"), base_dir=path.parent, source=path
    )


def parse_grid(
    data: Mapping[str, Any], *, name: str = "sweep", base_dir: Path | None = None, source: Path | None = None
) -> Grid:
    """A `Grid` from the mapping a grid file holds."""
    where = str(source) if source else "the grid"
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            hint=f"a grid file has: {', '.join(GRID_KEYS)}",
        )
    base: dict[str, Any] = {}
    if data.get("config"):
        base_path = Path(str(data["config"])).expanduser()
        if not base_path.is_absolute() and base_dir is not None:
            base_path = base_dir / base_path
        base = load_yaml(base_path)
        if isinstance(base.get("method"), str):
            base["method"] = {"name": base["method"]}
    methods = _methods(data.get("methods"), base, where)
    set_ = _overrides(data.get("set"), f"{where}: set")
    grid = _matrix(data.get("grid"), where)
    return Grid(
        name=str(data.get("name") or name),
        base=base,
        protocols=_axis(data, "protocols", [base.get("protocol") or "b2n"], str, where),
        methods=methods,
        datasets=_axis(
            data, "datasets", [_get(base, "data.dataset")] if _get(base, "data.dataset") else None, str, where
        ),
        shots=_axis(data, "shots", [_get(base, "data.shots", 16)], int, where),
        seeds=_axis(data, "seeds", [base.get("seed", 1)], int, where),
        set=set_,
        grid=grid,
        include=_entries(data.get("include"), "include", where),
        exclude=_entries(data.get("exclude"), "exclude", where),
        out=None if data.get("out") is None else str(data["out"]),
        db=None if data.get("db") is None else str(data["db"]),
        source=source,
    )


def _get(d: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _axis(data: Mapping[str, Any], key: str, default: list[Any] | None, kind: type, where: str) -> list[Any]:
    values = data.get(key)
    if values is None:
        values = default
    if values is None:
        raise ConfigError(f"{where}: no {key} given", hint=f"add e.g. `{key}: [...]` to the grid file")
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise ConfigError(f"{where}: {key} is empty", hint=f"give at least one value for {key}")
    out = []
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{where}: {key} must be integers, got {v!r}")
        if kind is str and not isinstance(v, str):
            raise ConfigError(f"{where}: {key} must be names, got {v!r}")
        out.append(v)
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}: {key} lists a value twice: {out}")
    return out


def _methods(value: Any, base: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    if value is None:
        name = _get(base, "method.name")
        if not name:
            raise ConfigError(f"{where}: no methods given", hint="add e.g. `methods: [coop, maple]`")
        return {str(name): {}}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: methods must be a list of names or a mapping name -> overrides")
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: methods lists a method twice: {value}")
        return {v: {} for v in value}
    if isinstance(value, dict) and value:
        return {str(k): _overrides(v, f"{where}: methods.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: methods must be a list of names or a mapping name -> overrides, got {value!r}")


def _overrides(value: Any, where: str, *, check: bool = True) -> dict[str, Any]:
    """Dotted key -> value; nested mappings are flattened (``optim: {lr: 1}`` is ``optim.lr: 1``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted keys to values, got {value!r}")
    flat: dict[str, Any] = {}
    for key, v in value.items():
        if isinstance(v, dict):  # a section: its keys below this one
            for sub, sv in _overrides(v, where, check=False).items():
                flat[f"{key}.{sub}"] = sv
        else:
            flat[str(key)] = v
    if check:
        for key in flat:
            _check_override_key(key, where)
    return flat


def _check_override_key(key: str, where: str) -> None:
    axis = next((a for a, k in AXES.items() if key == k or (a == "method" and key == "method")), None)
    if axis is not None:
        raise ConfigError(
            f"{where}: {key} is a sweep axis, not an override",
            hint=f"list its values under `{axis if axis in ('shots',) else axis + 's'}:` (or in an include entry)",
        )
    if key in SWEEP_KEYS or key in ("device", "quiet"):
        raise ConfigError(
            f"{where}: {key} is decided for the whole sweep",
            hint="out and db go at the top of the grid file (or --out/--db); the sweep sets device and quiet",
        )


def _matrix(value: Any, where: str) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: grid must map dotted keys to lists of values, e.g. grid: {{optim.lr: [0.002]}}")
    out = {}
    for key, values in value.items():
        key = str(key)
        _check_override_key(key, f"{where}: grid")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key} must be a non-empty list of values, got {values!r}")
        out[key] = values
    return out


def _entries(value: Any, what: str, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: {what} must be a list of mappings, e.g. [{{method: coop, dataset: dtd}}]")
    allowed = {*AXES, "set"} if what == "include" else set(AXES)
    for i, entry in enumerate(value):
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ConfigError(
                f"{where}: {what}[{i}] has unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
                hint=f"{what} entries take: {', '.join(sorted(allowed))}",
            )
    return [dict(v) for v in value]


# --- expansion ------------------------------------------------------------------------------------------
MAX_CELLS_ENV = "RESTORE_MAX_CELLS"
DEFAULT_MAX_CELLS = 10_000  # a sweep of more runs is most likely a typo; checking each cell takes ~1 ms


def count_cells(grid: Grid) -> int:
    """How many cells the grid asks for, from the axis lengths alone (nothing expanded): the product of
    the axes and the override matrix, plus the includes — before excludes and merged duplicates, so an
    upper bound of what `expand` returns."""
    n = len(grid.protocols) * len(grid.methods) * len(grid.datasets) * len(grid.shots) * len(grid.seeds)
    for values in grid.grid.values():
        n *= len(values)
    return n + sum(_include_size(entry) for entry in grid.include)


def _include_size(entry: Mapping[str, Any]) -> int:
    """How many cells one include entry names: the product of the lengths of its list-valued axes."""
    n = 1
    for axis in AXES:
        if isinstance(entry.get(axis), list):
            n *= len(entry[axis])
    return n


def max_cells() -> int:
    """The most cells a grid may have: ``$RESTORE_MAX_CELLS``, else `DEFAULT_MAX_CELLS`."""
    text = os.environ.get(MAX_CELLS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_CELLS
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise ConfigError(
            f"${MAX_CELLS_ENV} must be a whole number of cells (1 or more), got {text[:40]!r}",
            hint=f"e.g. {MAX_CELLS_ENV}=100000, or unset it for the default {DEFAULT_MAX_CELLS:,}",
        )
    return int(text)


def check_size(grid: Grid, limit: int | None = None) -> int:
    """The grid's cell count (`count_cells`); `ConfigError` with the count when it is over ``limit``
    (default `max_cells`). Called before any cell is built, so an absurd grid costs nothing."""
    limit = max_cells() if limit is None else limit
    n = count_cells(grid)
    if n > limit:
        sizes = [("protocols", len(grid.protocols)), ("methods", len(grid.methods)),
                 ("datasets", len(grid.datasets)), ("shot counts", len(grid.shots)), ("seeds", len(grid.seeds)),
                 *((f"values of {k}", len(v)) for k, v in grid.grid.items())]  # fmt: skip
        product = " x ".join(f"{size:,} {what}" for what, size in sizes if size > 1) or "1"
        extra = f" + {len(grid.include):,} includes" if grid.include else ""
        raise ConfigError(
            f"the grid has {n:,} cells ({product}{extra}), more than the limit of {limit:,}",
            hint=f"split it into smaller sweeps, or raise the limit: {MAX_CELLS_ENV}={n} restore sweep ...",
        )
    return n


def expand(grid: Grid, *, limit: int | None = None) -> list[Cell]:
    """Every cell of the grid, checked (`ConfigError` naming the first bad cell), duplicates merged.
    A grid of more than ``limit`` cells (default `max_cells`) is refused before any is built."""
    check_size(grid, limit)
    return list(iter_cells(grid))


def iter_cells(grid: Grid) -> Iterator[Cell]:
    """The cells of `expand`, one at a time (a generator: each is built and checked when it is asked for)."""
    seen: set[str] = set()
    keys = list(grid.grid)
    for protocol, method, dataset, shots, seed in itertools.product(
        grid.protocols, grid.methods, grid.datasets, grid.shots, grid.seeds
    ):
        axes = {"protocol": protocol, "method": method, "dataset": dataset, "shots": shots, "seed": seed}
        if any(_matches(rule, axes) for rule in grid.exclude):
            continue
        for values in itertools.product(*grid.grid.values()):
            cell = _cell(grid, axes, tuple(zip(keys, values, strict=True)), {})
            if world_key(cell) not in seen:
                seen.add(world_key(cell))
                yield cell
    for i, entry in enumerate(grid.include):
        values: dict[str, list[Any]] = {}
        for axis, options in (
            ("protocol", grid.protocols), ("method", list(grid.methods)), ("dataset", grid.datasets),
            ("shots", grid.shots), ("seed", grid.seeds),
        ):  # fmt: skip
            if axis in entry:  # one value, or a list of them: the entry names a cell for each
                given = entry[axis] if isinstance(entry[axis], list) else [entry[axis]]
                if not given:
                    raise ConfigError(f"include[{i}]: {axis} is an empty list", hint=f"give at least one {axis}")
                values[axis] = [_axis_value(v, axis, f"include[{i}]") for v in given]
            elif len(options) == 1:
                values[axis] = [options[0]]
            else:
                raise ConfigError(
                    f"include[{i}] does not say its {axis}, and the sweep has several ({options})",
                    hint=f"add `{axis}: ...` to the include entry (a list names a cell for each value)",
                )
        # An include's own overrides name it like a grid point (label and tag), so it never poses as the
        # plain cell of the same axes; they still take precedence over everything else.
        point = tuple(_overrides(entry.get("set"), f"include[{i}]: set").items())
        for combo in itertools.product(*values.values()):
            cell = _cell(grid, dict(zip(values, combo, strict=True)), point, {})
            if world_key(cell) not in seen:
                seen.add(world_key(cell))
                yield cell


def _axis_value(value: Any, axis: str, where: str) -> Any:
    """An include entry's value for one axis: a name, or an integer for shots and seed."""
    if axis in ("shots", "seed"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {axis} must be an integer, got {value!r}")
    elif not isinstance(value, str):
        raise ConfigError(f"{where}: {axis} must be a name, got {value!r}")
    return value


def world_key(cell: Cell) -> str:
    return json.dumps(cell.config.identity(), sort_keys=True, default=str)


def _matches(rule: Mapping[str, Any], axes: Mapping[str, Any]) -> bool:
    return all(axes.get(k) == v for k, v in rule.items())


def _cell(grid: Grid, axes: Mapping[str, Any], point: tuple[tuple[str, Any], ...], extra: Mapping[str, Any]) -> Cell:
    method = str(axes["method"])
    label = cell_label(
        str(axes["protocol"]), str(axes["dataset"]), method, int(axes["shots"]), int(axes["seed"]), point
    )
    data = _deep_copy(grid.base)
    base_method = data.get("method") if isinstance(data.get("method"), dict) else {}
    if base_method and base_method.get("name") not in (None, method):
        base_method = {}  # the base file's method options were for its own method
    data["method"] = {**base_method, "name": method}
    overrides = {**grid.set, **grid.methods.get(method, {}), **dict(point), **extra, **grid.force}
    for key, value in overrides.items():
        _put(data, key, value, label)
    if grid.root is not None and _get(data, "data.root") is None and not _has_home(str(axes["dataset"])):
        _put(data, "data.root", grid.root, label)
    tag = str(_get(data, "tag") or "")
    if point:
        data["tag"] = f"{tag},{point_tag(point)}" if tag else point_tag(point)
    data["protocol"] = axes["protocol"]
    if not isinstance(data.setdefault("data", {}), dict):
        raise ConfigError(f"grid cell {label}: data is a value ({data['data']!r}), not a section")
    data["data"]["dataset"] = axes["dataset"]
    data["data"]["shots"] = axes["shots"]
    data["seed"] = axes["seed"]
    plugins.record_imports(data)  # `restore --import M sweep`: the worker processes import M too
    try:
        config = build_run_config(_deep_copy(data))
        _check_cell(config)
    except RestoreError as e:
        raise type(e)(f"grid cell {label}: {e.message}", hint=e.hint) from None
    return Cell(
        protocol=str(axes["protocol"]),
        method=config.method_name,
        dataset=str(axes["dataset"]),
        shots=int(axes["shots"]),
        seed=int(axes["seed"]),
        point=point,
        data=data,
        config=config,
    )


def _has_home(dataset: str) -> bool:
    """Whether the dataset lives in a folder of its own when a run names no root (the generated world)."""
    try:
        return get_dataset(dataset).default_root is not None
    except ConfigError:
        return False  # an unknown name: the cell's own check says so


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def _put(data: dict[str, Any], key: str, value: Any, label: str) -> None:
    node = data
    *parents, last = key.split(".")
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"grid cell {label}: override {key}: {p!r} is a value, not a section")
        node = child
    node[last] = value


def _check_cell(config: RunConfig) -> None:
    """What a run would reject that needs no disk: the protocol, the dataset name, the backbone setting."""
    spec = get_dataset(config.data.dataset) if config.data.dataset else None
    if spec is None:
        raise ConfigError("no dataset given", hint="list datasets under `datasets:`")
    if spec.test_only:
        raise ConfigError(
            f"{config.data.dataset!r} is a test-only dataset and cannot be trained on",
            hint="train on its source dataset (e.g. imagenet) and test on it with the xd or dg protocol",
        )
    check_backbone(config.model.backbone)


# --- the hash the engine will record --------------------------------------------------------------------
def expected_hashes(cell: Cell, device_type: str) -> frozenset[str]:
    """The config hash(es) the engine records for this cell's run on ``device_type`` ('cpu' or 'cuda'), as
    `restore.engine.plan.record_configs` gives them; a precision the device cannot run names the cell."""
    return frozenset(c.hash() for c in resolved_configs(cell, device_type))


def resolved_configs(cell: Cell, device_type: str) -> list[RunConfig]:
    """The cell's run config(s) as the engine will resolve and record them (`record_configs`)."""
    try:
        return record_configs(cell.config, device_type)
    except RestoreError as e:
        raise type(e)(f"grid cell {cell.label}: {e.message}", hint=e.hint) from None


def describe_cells(cells: Sequence[Cell]) -> str:
    """How many runs, over which axes (for the sweep's first line)."""
    parts = []
    for axis, plural in (("protocol", "protocols"), ("method", "methods"), ("dataset", "datasets"),
                         ("shots", "shot counts"), ("seed", "seeds")):  # fmt: skip
        n = len({getattr(c, axis) for c in cells})
        parts.append(f"{n} {axis if n == 1 and axis != 'shots' else plural if n > 1 else 'shot count'}")
    points = len({c.point for c in cells if c.point})
    if points:
        parts.append(f"{points} grid point{'s' if points > 1 else ''}")
    return f"{len(cells)} run{'s' if len(cells) != 1 else ''} ({', '.join(parts)})"
