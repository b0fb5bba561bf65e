"""`restore diff RUN_A RUN_B`: what differs between two run folders, read from the files a run writes.

- config: every dotted key whose value differs (or that one run lacks), marked when the key cannot change
  results (`restore.engine.run_config.ADMIN_KEYS`: output folders, reporting switches);
- metrics: top-1 of every evaluated split and the harmonic mean, with the difference B - A;
- shift: the per-layer feature shift each run recorded (metrics.json ``shift``), vision and text, with the
  difference per layer and in total.

Reads config.yaml as plain YAML (not through the method registry), so runs of methods this process does not
know, or of older versions, still compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from restore.errors import ConfigError
from restore.options import flatten, load_yaml

CONFIG_FILE, METRICS_FILE, RUN_FILE = "config.yaml", "metrics.json", "run.json"
_ABSENT = object()


@dataclass
class ConfigChange:
    key: str
    a: Any  # _ABSENT when run A has no such key
    b: Any
    affects_result: bool


class _Difference:
    """B − A of a value both runs may lack (None)."""

    a: float | None
    b: float | None

    @property
    def diff(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass
class MetricChange(_Difference):
    name: str  # "base top1", "novel top1", "hm", ...
    a: float | None
    b: float | None


@dataclass
class LayerShift(_Difference):
    layer: int
    a: float | None
    b: float | None


@dataclass
class RunDiff:
    a: Path
    b: Path
    config: list[ConfigChange]
    metrics: list[MetricChange]
    shift: dict[str, list[LayerShift]]  # "vision" / "text" -> per layer
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def value(v: Any) -> Any:
            return None if v is _ABSENT else v

        return {
            "a": str(self.a),
            "b": str(self.b),
            "config": [
                {
                    "key": c.key,
                    "a": value(c.a),
                    "b": value(c.b),
                    "in_a": c.a is not _ABSENT,
                    "in_b": c.b is not _ABSENT,
                    "affects_result": c.affects_result,
                }
                for c in self.config
            ],
            "metrics": [{"name": m.name, "a": m.a, "b": m.b, "diff": m.diff} for m in self.metrics],
            "shift": {
                tower: [{"layer": s.layer, "a": s.a, "b": s.b, "diff": s.diff} for s in layers]
                for tower, layers in self.shift.items()
            },
            "notes": self.notes,
        }


# --- reading a run folder -------------------------------------------------------------------------------
def read_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(config mapping, metrics.json or None when the run has not finished) of a run folder."""
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{path} is not a run folder (no {CONFIG_FILE})",
            hint="pass two folders a run wrote, e.g. runs/b2n/dtd/coop/shots16_seed1-<hash>",
        )
    config = load_yaml(path / CONFIG_FILE)
    try:
        metrics = json.loads((path / METRICS_FILE).read_text())
    except FileNotFoundError:
        metrics = None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path / METRICS_FILE}: {e}", hint="is the run still writing it?") from None
    return config, metrics


# --- the three comparisons ------------------------------------------------------------------------------
def _affects_result(key: str) -> bool:
    from restore.engine.run_config import ADMIN_KEYS  # slow: the engine loads torch

    return not any(key == k or key.startswith(f"{k}.") for k in ADMIN_KEYS)


def diff_config(a: dict[str, Any], b: dict[str, Any]) -> list[ConfigChange]:
    """The dotted keys whose values differ, in A's key order then B's new keys."""
    fa, fb = flatten(a), flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    return [
        ConfigChange(k, fa.get(k, _ABSENT), fb.get(k, _ABSENT), _affects_result(k))
        for k in keys
        if fa.get(k, _ABSENT) != fb.get(k, _ABSENT)
    ]


def _scores(metrics: dict[str, Any]) -> dict[str, float]:
    """{"base top1": 80.0, ..., "hm": 75.0} from metrics.json's ``metrics`` section."""
    out: dict[str, float] = {}
    for split, value in metrics.items():
        if isinstance(value, dict) and "top1" in value:
            out[f"{split} top1"] = float(value["top1"])
    if isinstance(metrics.get("hm"), int | float):
        out["hm"] = float(metrics["hm"])
    return out


def diff_metrics(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[MetricChange]:
    """Top-1 of every split either run evaluated, and HM, with both values (None: not evaluated)."""
    sa, sb = _scores((a or {}).get("metrics", {})), _scores((b or {}).get("metrics", {}))
    names = list(sa) + [k for k in sb if k not in sa]
    names.sort(key=lambda n: n == "hm")  # HM last, the splits in their order
    return [MetricChange(n, sa.get(n), sb.get(n)) for n in names]


def diff_shift(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, list[LayerShift]]:
    """Per-layer shift of each tower (layers one run lacks are None there); empty when neither recorded it."""
    pa, pb = ((m or {}).get("metrics", {}).get("shift") or {} for m in (a, b))
    out: dict[str, list[LayerShift]] = {}
    for tower in ("vision", "text"):
        va, vb = pa.get(tower) or [], pb.get(tower) or []
        if va or vb:
            out[tower] = [
                LayerShift(i, va[i] if i < len(va) else None, vb[i] if i < len(vb) else None)
                for i in range(max(len(va), len(vb)))
            ]
    return out


def diff_runs(run_a: str | Path, run_b: str | Path) -> RunDiff:
    """Everything `restore diff` shows."""
    (ca, ma), (cb, mb) = read_run(run_a), read_run(run_b)
    notes = [f"{name} has not finished (no {METRICS_FILE})" for name, m in (("A", ma), ("B", mb)) if m is None]
    sa, sb = ((m or {}).get("metrics", {}).get("shift") or {} for m in (ma, mb))
    if sa and sb and sa.get("measure") != sb.get("measure"):
        notes.append(f"the shifts were measured differently: {sa.get('measure')} (A), {sb.get('measure')} (B)")
    for name, s, other in (("A", sa, sb), ("B", sb, sa)):
        if other and not s:
            notes.append(f"{name} recorded no feature shift (shift_images=0, or a method without prompts)")
    return RunDiff(Path(run_a), Path(run_b), diff_config(ca, cb), diff_metrics(ma, mb), diff_shift(ma, mb), notes)


# --- terminal output ------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if not isinstance(value, list | dict) else json.dumps(value)


def _num(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def render(d: RunDiff) -> list[Any]:
    """Rich renderables: the config, metrics and shift tables (what the terminal shows)."""
    out: list[Any] = [Text(f"A: {d.a}\nB: {d.b}")]
    if d.config:
        t = Table(title="config (keys that differ)", title_justify="left")
        for col in ("key", "A", "B"):
            t.add_column(col, overflow="fold")
        for c in d.config:
            key = c.key if c.affects_result else f"{c.key} [dim](not part of the result)[/]"
            t.add_row(key, _show(c.a), _show(c.b))
        out.append(t)
    else:
        out.append(Text("config: identical"))
    if d.metrics:
        t = Table(title="metrics (%)", title_justify="left")
        for col in ("", "A", "B", "B - A"):
            t.add_column(col, justify="right" if col else "left")
        for m in d.metrics:
            t.add_row(m.name, _num(m.a, 2), _num(m.b, 2), _num(m.diff, 2, sign=True))
        out.append(t)
    for tower, layers in d.shift.items():
        t = Table(title=f"{tower} shift per layer", title_justify="left")
        for col in ("layer", "A", "B", "B - A"):
            t.add_column(col, justify="right")
        for s in layers:
            t.add_row(str(s.layer), _num(s.a, 4), _num(s.b, 4), _num(s.diff, 4, sign=True))
        ta, tb = (sum(v for v in (getattr(s, side) for s in layers) if v is not None) for side in ("a", "b"))
        t.add_row("total", _num(ta, 4), _num(tb, 4), _num(tb - ta, 4, sign=True), style="bold")
        out.append(t)
    out.extend(Text(f"note: {n}") for n in d.notes)
    return out
