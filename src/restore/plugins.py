"""The one extension point: methods, datasets, backbones and commands that live outside the core.

They come from three places, all loaded the same way and by every command:

- this package's own extensions (the synthetic world), declared in `BUILTIN` below;
- Python entry points of installed distributions, in the groups of `GROUPS`;
- modules named with ``restore --import MODULE`` (repeatable) or ``$RESTORE_IMPORT`` (comma-separated). A run
  records them in its ``config.yaml`` (``imports:``), and reading that config imports them again, so
  ``restore eval --checkpoint`` of a run of an out-of-tree method works in a fresh process.

Per group, an entry point's object is:

- ``restore.methods`` / ``restore.datasets``: a module (importing it registered its methods or datasets with
  `restore.methods.base.register` / `restore.data.register_dataset`) or a callable without arguments that
  registers them; loaded the first time a method or dataset is looked up;
- ``restore.backbones``: a callable returning the frozen CLIP; the entry point's name is the backbone setting;
- ``restore.commands``: a Typer app, mounted as ``restore <entry point name>``.
"""

from __future__ import annotations

import importlib
import os
import types
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

from restore.errors import ConfigError, RestoreWarning

METHODS, DATASETS, BACKBONES, COMMANDS = "restore.methods", "restore.datasets", "restore.backbones", "restore.commands"
GROUPS = (METHODS, DATASETS, BACKBONES, COMMANDS)
ENV_VAR = "RESTORE_IMPORT"

# The package's own extensions, as "module" or "module:attribute" per group and name: declared like entry
# points so the core names none of them (issue 15: the synthetic world plugs in as any extension would).
BUILTIN: dict[str, dict[str, str]] = {
    DATASETS: {"world": "restore.world.datasets"},
    BACKBONES: {"world": "restore.world.weights:load_world_clip"},
    COMMANDS: {"world": "restore.world.world_commands:app"},
}

_loaded_groups: set[str] = set()
_imported: list[str] = []  # modules imported through --import / $RESTORE_IMPORT / a run's `imports:`


class PluginWarning(RestoreWarning):
    """An installed extension failed to load: the command goes on without it."""


def _resolve(target: str) -> Any:
    """The object a "module" or "module:attribute" string names."""
    module, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attribute.split(".")):
        obj = getattr(obj, part)
    return obj


def entry_points(group: str) -> dict[str, Callable[[], Any]]:
    """name -> loader of each extension of ``group``: the built-in ones first, then installed entry points (an
    installed one may not replace a built-in name)."""
    found: dict[str, Callable[[], Any]] = {
        name: (lambda t=target: _resolve(t)) for name, target in BUILTIN.get(group, {}).items()
    }
    for ep in metadata.entry_points(group=group):
        found.setdefault(ep.name, ep.load)
    return found


def _register(obj: Any) -> None:
    """A module registered on import; a callable registers when called."""
    if not isinstance(obj, types.ModuleType) and callable(obj):
        obj()


def load_group(group: str) -> None:
    """Load every extension of a registering group (methods, datasets) once per process. A broken installed
    extension is a warning, not the end of every command."""
    if group in _loaded_groups:
        return
    _loaded_groups.add(group)  # first: an extension that looks a name up while loading must not recurse
    for name, load in entry_points(group).items():
        try:
            _register(load())
        except Exception as e:  # third-party code: reported, never fatal
            warnings.warn(f"extension {name!r} ({group}) could not be loaded: {e}", PluginWarning, stacklevel=2)


def backbone_loader(name: str) -> Callable[[], Any] | None:
    """The loader a backbone extension named ``name`` provides, or None (nothing is imported for other names)."""
    load = entry_points(BACKBONES).get(name.lower())
    return None if load is None else load()


def backbone_names() -> list[str]:
    return sorted(entry_points(BACKBONES))


def commands() -> dict[str, Any]:
    """name -> Typer app of each command extension that loads (a broken one is left out with a warning)."""
    apps = {}
    for name, load in entry_points(COMMANDS).items():
        try:
            apps[name] = load()
        except Exception as e:
            warnings.warn(f"command extension {name!r} could not be loaded: {e}", PluginWarning, stacklevel=2)
    return apps


# --- modules named by the user ---------------------------------------------------------------------------
def parse_modules(text: str | None) -> list[str]:
    """Module names of $RESTORE_IMPORT: separated by commas or whitespace."""
    return [m for m in (text or "").replace(",", " ").split() if m]


def import_modules(modules: Iterable[str]) -> list[str]:
    """Import each module (registering what it defines) and remember it for the run's config; returns the
    names. A module that cannot be imported is one ConfigError naming it."""
    names = []
    for module in modules:
        module = str(module).strip()
        if not module:
            continue
        try:
            importlib.import_module(module)
        except Exception as e:  # user code: whatever it raises is one message
            raise ConfigError(
                f"cannot import {module!r} (named by --import, ${ENV_VAR} or a run's imports:): "
                f"{type(e).__name__}: {e}",
                hint="the module must be importable here: install it, or add its folder to PYTHONPATH",
            ) from None
        if module not in _imported:
            _imported.append(module)
        names.append(module)
    return names


def import_from_env() -> list[str]:
    return import_modules(parse_modules(os.environ.get(ENV_VAR)))


def imported_modules() -> list[str]:
    """The modules imported by name in this process, in order (what a run records as ``imports:``)."""
    return list(_imported)


def record_imports(config: dict[str, Any]) -> None:
    """Add this process's imported modules to a config mapping's ``imports:`` (a run records them; a sweep's
    worker processes import them from there)."""
    recorded = config.get("imports") if isinstance(config.get("imports"), list) else []
    if _imported:
        config["imports"] = [*recorded, *(m for m in _imported if m not in recorded)]
