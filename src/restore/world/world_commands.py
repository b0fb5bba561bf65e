"""`restore world ...`: pretrain the world CLIP, generate the tasks, evaluate, write the model card, look at samples."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from restore.errors import CheckpointError, ConfigError

app = typer.Typer(
    name="world",
    help="The built-in SYNTHETIC world: a tiny CLIP pretrained on generated images, and tasks in the same world.",
    no_args_is_help=True,
)


def _echo(msg: str) -> None:
    typer.echo(msg)


@app.command()
def pretrain(
    config: Path = typer.Option(None, help="pretraining config YAML (default: the one shipped with the weights)"),
    out: Path = typer.Option(Path("world_clip_run"), help="folder for the weights, config and training record"),
    steps: int = typer.Option(None, help="override the config's step count (a shorter run does not reproduce)"),
    threads: int = typer.Option(None, help="override the config's torch thread count", min=1, max=1024),
    seed: int = typer.Option(None, help="override the config's seed"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Pretrain the world CLIP from scratch; with the shipped config this reproduces the shipped weights.

    The training state is saved in OUT at every evaluation; running the same command again resumes there.
    """
    # slow: torch and the world's modules load when the command runs, not at CLI start
    from restore.world.pretrain import PretrainConfig, save_run
    from restore.world.pretrain import pretrain as run
    from restore.world.weights import WEIGHTS_DIR

    cfg = PretrainConfig.from_yaml(config or WEIGHTS_DIR / "world_clip.yaml")
    cfg = cfg.with_overrides(steps=steps, threads=threads, seed=seed)
    _echo(f"pretraining the synthetic-world CLIP: {cfg.steps} steps x {cfg.batch_size} pairs, seed {cfg.seed}")
    result = run(cfg, log=_echo, progress=progress, state_dir=out)
    paths = save_run(result, out)
    _echo(f"{result.seconds:.0f} s, {result.pairs / result.seconds:.0f} pairs/s; wrote {paths['weights']}")


@app.command()
def tasks(
    names: list[str] = typer.Argument(None, help="tasks to generate (default: all)"),
    root: Path = typer.Option(None, help="folder to write into (default: $RESTORE_CACHE/world)"),
) -> None:
    """Generate the world's classification tasks (CoOp layout, split files) and list them."""
    # slow: torch and the world's modules load when the command runs, not at CLI start
    from restore.world.tasks import TASKS, ensure_task

    for name in names or list(TASKS):
        path = ensure_task(name, root)
        task = TASKS[name]
        counts = "/".join(str(c * len(task.classes)) for c in task.counts)
        _echo(f"{name:<14} {len(task.classes):>3} classes  train/val/test {counts:<12} {path}")


@app.command()
def evaluate(
    weights: Path = typer.Option(None, help="a world CLIP safetensors file (default: the shipped one)"),
    threads: int = typer.Option(2, help="torch threads", min=1, max=1024),
) -> None:
    """Zero-shot top-1 accuracy of a world CLIP on each task's full test split."""
    import torch

    # slow: torch and the world's modules load when the command runs, not at CLI start
    from restore.world.pretrain import evaluate as run_eval
    from restore.world.tasks import TASKS, task_images
    from restore.world.weights import load_clip, load_world_clip

    torch.set_num_threads(threads)
    model = load_clip(weights) if weights else load_world_clip()
    acc = run_eval(model, {n: task_images(n, "test") for n in TASKS})
    for name, a in acc.items():
        chance = 1 / len(TASKS[name].classes)
        _echo(f"{name:<14} {100 * a:5.1f}%   (chance {100 * chance:4.1f}%, {a / chance:4.1f}x)")


@app.command()
def card(
    record: Path = typer.Option(None, help="training record JSON (default: the shipped one)"),
    out: Path = typer.Option(None, help="where to write the card (default: beside the record, MODEL_CARD.md)"),
) -> None:
    """Write the model card from a training record (and the measured design choices, if recorded)."""
    # slow: torch and the world's modules load when the command runs, not at CLI start
    from restore.world.accuracy import base_novel_zero_shot
    from restore.world.card import render_card
    from restore.world.tasks import REGIME
    from restore.world.weights import WEIGHTS_DIR, load_clip, load_world_clip

    record = record or WEIGHTS_DIR / "world_clip.json"
    if not record.exists():
        raise CheckpointError(f"no training record at {record}", hint="run `restore world pretrain` first")
    try:
        data = json.loads(record.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{record} is not valid JSON: {e}") from e
    choices_path = record.parent / "design_choices.json"
    choices = json.loads(choices_path.read_text()) if choices_path.exists() else None
    target = out or record.parent / "MODEL_CARD.md"
    weights = record.with_suffix(".safetensors")  # save_run writes <name>.json beside <name>.safetensors
    model = load_clip(weights) if weights.exists() else load_world_clip()
    regime = {name: base_novel_zero_shot(model, name) for name in REGIME}
    target.write_text(render_card(data, choices, regime))
    _echo(f"wrote {target}")


@app.command()
def samples(
    out: Path = typer.Option(Path("world_samples.png"), help="PNG grid to write"),
    seed: int = typer.Option(0),
    count: int = typer.Option(16, min=1, max=256),
    scale: int = typer.Option(3, min=1, max=8, help="pixel upscaling of the grid"),
) -> None:
    """Write a grid of generated images and print their captions: what the world CLIP learned from."""
    import numpy as np
    from PIL import Image

    # slow: torch and the world's modules load when the command runs, not at CLI start
    from restore.world.generator import generate

    batch = generate(seed, range(count))
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    s = batch.images.shape[1]
    grid = np.zeros((rows * s, cols * s, 3), dtype=np.uint8)
    for i, img in enumerate(batch.images):
        r, c = divmod(i, cols)
        grid[r * s : (r + 1) * s, c * s : (c + 1) * s] = img
    try:  # always a PNG, whatever the name ends with (PIL guesses the format from the suffix otherwise)
        Image.fromarray(grid).resize((cols * s * scale, rows * s * scale), Image.NEAREST).save(out, format="PNG")
    except OSError as e:
        # slow: torch and the world's modules load when the command runs, not at CLI start
        from restore.errors import ConfigError

        raise ConfigError(f"cannot write {out}: {e.strerror or e}", hint="pass --out a writable PNG path") from None
    for i, caption in enumerate(batch.captions):
        _echo(f"{i:>3}  {caption}")
    _echo(f"wrote {out}")
