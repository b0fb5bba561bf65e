"""The world's tasks as datasets of the registry (``world_shapes``, ``world_color_shape``, ``world_pattern_shape``):
every protocol, few-shot sampler and command works on them unchanged. They are generated on first use into
``$RESTORE_CACHE/world`` (or the data root a run names). SYNTHETIC: numbers on them say nothing about real images.
"""

from __future__ import annotations

from pathlib import Path

from restore.data.registry import DatasetSpec, get_dataset, register_dataset
from restore.errors import ConfigError
from restore.world.tasks import TASKS, Task, cache_root, ensure_task

PREFIX = "world_"


def dataset_name(task: str) -> str:
    return PREFIX + task


def world_root() -> Path:
    return cache_root() / "world"


def _spec(task: Task) -> DatasetSpec:
    def generate(root: Path, name: str = task.name) -> Path:
        return ensure_task(name, root)

    return DatasetSpec(
        name=dataset_name(task.name),
        title="World" + task.title,
        folder=task.name,
        split_file=task.split_file,
        classes=len(task.classes),
        aliases=(f"world/{task.name}",),
        description=f"SYNTHETIC world task: {task.description}",
        generate=generate,
        default_root=world_root,
        layout=f"  {task.name}/images/<class>/*.png\n  {task.name}/{task.split_file}   (generated on first use)",
    )


def _register() -> None:
    for task in TASKS.values():
        name = dataset_name(task.name)
        try:
            get_dataset(name)
        except ConfigError:
            register_dataset(_spec(task))


_register()
