"""Typed configs from YAML: dataclasses checked field by field, dotted overrides, a stable hash.

Every config in the project is a dataclass. `from_dict` rejects unknown keys and wrong values with a
`ConfigError` that lists the valid keys or choices, so a typo never silently runs the default.
Constraints beyond the type live in field metadata: ``choices``, ``min``, ``max``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from restore.errors import ConfigError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, *, help: str = "", **constraints: Any) -> Any:
    """A dataclass field with a help text and constraints (choices=[...], min=, max=)."""
    meta = {"help": help, **constraints}
    if isinstance(default, list | dict | set):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class _BadValue(ConfigError):
    """A value of the right type that is still invalid (e.g. NaN for a number)."""


# Every integer setting must fit a signed 64-bit integer (what SQLite, NumPy and torch store); fields with a
# smaller sane range say so with ``max=``. Checked when the config is read, before anything is written.
INT_LIMIT = 2**63 - 1
SHOW_CHARS = 60  # how much of a rejected value an error message echoes


def short(value: Any, limit: int = SHOW_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error line stays one readable line whatever was given.
    Integers too long for ``repr`` (Python refuses past 4300 digits) are described by their size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4000:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return clip_text(repr(value), limit)


def clip_text(text: str, limit: int = SHOW_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[: max(limit - 15, 10)]}... ({len(text)} chars)"


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (typing.Union, types.UnionType):  # Optional[Literal[...]] names its choices and None
        return " | ".join("None" if a is type(None) else _type_name(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert where YAML/the command line is loose."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except _BadValue:
                raise  # the type fits, the value does not: that message is the useful one
            except ConfigError:
                pass
        choices = [c for a in args if get_origin(a) is Literal for c in get_args(a)]
        if choices:  # an optional choice: list the choices, as for a plain Literal
            raise ConfigError(
                f"{where}: {short(value)} is not one of {choices} (or null)", hint=f"valid choices: {choices} or null"
            )
        raise ConfigError(f"{where}: {short(value)} is not a {' or '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(
            f"{where}: {short(value)} is not one of {list(choices)}", hint=f"valid choices: {list(choices)}"
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {short(value)}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short(value)}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > INT_LIMIT:
                raise _BadValue(
                    f"{where}: {short(value)} does not fit a 64-bit integer",
                    hint=f"give a value between {-INT_LIMIT} and {INT_LIMIT}",
                )
            return value
        raise ConfigError(f"{where}: expected an integer, got {short(value)}")
    if tp is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {short(value)}")
        if not math.isfinite(number):
            # A NaN learning rate would only surface epochs later as a NaN loss; refuse it here.
            raise _BadValue(f"{where}: {number} is not a finite number", hint="give a finite value")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {short(value)}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value).expanduser()
        raise ConfigError(f"{where}: expected a path, got {short(value)}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: cannot read {short(value)} as {_type_name(tp)}")


def _check_constraints(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: {short(value)} is not one of {list(meta['choices'])}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{where}: {short(value)} is below the minimum {meta['min']}", hint=_range_hint(meta))
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{where}: {short(value)} is above the maximum {meta['max']}", hint=_range_hint(meta))


def _past_64_bits(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and (
        abs(value) > INT_LIMIT
    )


def _range_hint(meta: typing.Mapping[str, Any]) -> str:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"give a value from {low} to {high}"
    return f"give a value of at least {low}" if low is not None else f"give a value of at most {high}"


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; every key must be a field, every value must fit its type."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {short(data)}")
    data = dict(data or {})
    named = f"{where}: " if where else ""
    for k in data:
        if not isinstance(k, str):
            raise ConfigError(f"{named}config key {short(k)} is {_a(type(k).__name__)}, not a name")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            f"{clip_text(', '.join(prefix + k for k in unknown), 200)}",
            hint=f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(fields))}",
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        if _past_64_bits(value):  # the field's own range says more than "does not fit 64 bits"
            _check_constraints(value, fields[name].metadata, key)
        coerced = _coerce(value, hints[name], key)
        _check_constraints(coerced, fields[name].metadata, key)
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {clip_text(str(e), 200)}") from None


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-able data: dataclasses to dicts, paths to strings, tuples to lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


MAX_VALUES = 100_000  # a config is a few hundred values; more is a mistake or a YAML alias bomb


def check_plain(data: Any, where: str) -> None:
    """Refuse what YAML can express but a config cannot be: mapping keys that are not strings (``1:``,
    ``2001-01-01:``), and documents whose aliases expand to more than `MAX_VALUES` values ("billion laughs",
    which would exhaust memory when the config is copied or hashed). Iterative: no recursion limit."""
    stack, seen = [(data, "")], 0
    while stack:
        value, key = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError(
                f"{where} is too large: more than {MAX_VALUES} values (after expanding YAML aliases)",
                hint="a run config holds a few hundred values at most",
            )
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(
                        f"{where}: config key {short(k)}{f' under {clip_text(key)}' if key else ''} is "
                        f"{_a(type(k).__name__)}, not a name",
                        hint="config keys are names such as optim or lr (quote them in YAML if they look like numbers)",
                    )
                stack.append((v, f"{key}.{k}" if key else k))
        elif isinstance(value, list | tuple):
            stack.extend((v, key) for v in value)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _safe_load(text: str) -> Any:
    """yaml.safe_load, with nesting deeper than the parser's recursion, and scalars YAML reads but Python cannot
    build (an integer of more than 4300 digits, the date 2001-02-30), as ConfigErrors."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError("the YAML is nested too deeply to be a config") from None
    except yaml.YAMLError:
        raise
    except (ValueError, OverflowError) as e:  # raised by YAML's int/float/timestamp constructors
        raise ConfigError(
            f"a value cannot be read: {clip_text(str(e), 120)}", hint="numbers have at most 19 digits"
        ) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=0.002`` -> (["optim", "lr"], 0.002); the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {short(text)} is not of the form key.path=value", hint="e.g. --set optim.lr=0.002")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override {short(text)} has an empty key")
    try:
        value = _safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except ConfigError as e:
        raise ConfigError(f"override {short(text)}: {e.message}", hint=e.hint) from None
    check_plain(value, f"override {short(key.strip())}")
    return path, value


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested mapping (a copy). Validity is checked later by `from_dict`."""
    check_plain(data, "the config")
    out = json.loads(json.dumps(data, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {short(text)}: {short(part)} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, with one clear error for a missing file, bad YAML or a non-mapping."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = _safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{p} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except ConfigError as e:
        raise ConfigError(f"{p}: {e.message}", hint=e.hint) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of config sections, not a {type(data).__name__}")
    check_plain(data, str(p))
    return data


def flatten(data: typing.Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config: ``{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}``. Lists and empty mappings
    stay values (an empty section is still a setting two configs can differ in)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, typing.Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) of each field: for `restore methods` and `--help` texts."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows
