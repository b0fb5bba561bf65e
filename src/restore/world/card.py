"""The world CLIP's model card, written from its training record so the numbers in it are the measured ones."""

from __future__ import annotations

from typing import Any

from restore.data.protocols import base_class_count
from restore.world.tasks import TASKS, ZERO_SHOT_TEMPLATE


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def zero_shot_rows(record: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, acc in record["zero_shot"].items():
        task = TASKS[name]
        chance = 1 / len(task.classes)
        rows.append([name, str(len(task.classes)), f"{100 * chance:.1f}", f"{100 * acc:.1f}", f"{acc / chance:.1f}x"])
    return rows


def regime_rows(regime: dict[str, tuple[float, float]]) -> list[list[str]]:
    rows = []
    for name, (base, novel) in regime.items():
        task = TASKS[name]
        n_base = base_class_count(len(task.classes))
        n_novel = len(task.classes) - n_base
        rows.append(
            [
                name,
                f"{n_base} + {n_novel}",
                task.shift.describe(),
                f"{100 / n_base:.1f} / {100 / n_novel:.1f}",
                f"{100 * base:.1f}",
                f"{100 * novel:.1f}",
                f"{novel * n_novel:.1f}x",  # novel accuracy / chance (1 / n_novel)
            ]
        )
    return rows


def render_card(
    record: dict[str, Any],
    choices: dict[str, Any] | None = None,
    regime: dict[str, tuple[float, float]] | None = None,
) -> str:
    """The card; ``regime`` = (base, novel) zero-shot accuracy per downstream task, measured from the weights."""
    cfg = record["config"]
    m, w = cfg["model"], cfg["world"]
    hours = record["seconds"] / 3600
    parts = [
        "# World CLIP: a tiny CLIP pretrained on a SYNTHETIC world",
        "",
        "**Synthetic.** This model has only ever seen procedurally generated images of coloured shapes "
        "(`restore.world.generator`) and their generated captions. Its numbers say nothing about real images; "
        "it exists so that prompt-learning methods can be run and compared end to end on a CPU in minutes, "
        "with pretrained knowledge for them to keep or lose.",
        "",
        "## How it was made",
        "",
        "```",
        "restore world pretrain --config src/restore/world/weights/world_clip.yaml --out <folder>",
        "```",
        "",
        f"- Contrastive pretraining (symmetric cross-entropy, learnable temperature clamped at 100) from a "
        f"random initialisation, seed {cfg['seed']}: {cfg['steps']} steps of {cfg['batch_size']} generated "
        f"image-caption pairs ({record['pairs']:,} pairs, none repeated).",
        f"- AdamW, lr {cfg['lr']} (linear warm-up {cfg['warmup_steps']} steps, cosine to "
        f"{cfg['final_lr_ratio']} x lr), weight decay {cfg['weight_decay']} on matrices, torch threads "
        f"{cfg['threads']}.",
        f"- Generator: two objects in {100 * w['two_object_prob']:.0f}% of images; hard-negative groups of "
        f"{w['group_size']} (one scene varied in one attribute) with probability {w['hard_group_prob']}; "
        f"captions name an object's colour with probability {w.get('colour_mention', 0.85)}; soft targets (a "
        f"caption counts as a match for every image it truly describes): {'on' if cfg['soft_targets'] else 'off'}.",
        f"- Curriculum: easy scenes (one large or medium solid object on a plain background) make up "
        f"{100 * cfg.get('curriculum_start', 0):.0f}% of the data at the start, falling linearly to "
        f"{100 * cfg.get('curriculum_end', 0):.0f}% at step {cfg.get('curriculum_steps', 0)}.",
        f"- Wall time of the training steps {record['seconds']:.0f} s ({hours:.2f} h; periodic evaluations "
        f"excluded), {record['pairs_per_second']:.0f} pairs/s, of which {record['data_seconds']:.0f} s generating "
        "data. The machine (2 CPU cores) was shared with other jobs, so the wall time overstates the compute"
        + (f"; {record['machine']}" if record.get("machine") else "")
        + ".",
        "- Reproduction: the config fixes the seed, the data (batch t is generator indices [t*B, (t+1)*B)), the "
        "model size and the schedule. The same machine type and thread count repeat the run; other CPUs may "
        "differ in the last bits (BLAS kernels), which can move the numbers below slightly.",
        *[f"- {note}" for note in record.get("notes", [])],
        "",
        "## Sizes",
        "",
        _table(
            ["", "value"],
            [
                ["parameters", f"{record['parameters']:,}"],
                ["image", f"{m['image_size']}x{m['image_size']} RGB, patch {m['patch_size']}"],
                ["vision tower", f"width {m['vision_width']}, {m['vision_layers']} layers"],
                ["text tower", f"width {m['text_width']}, {m['text_layers']} layers, context {m['context_length']}"],
                ["embedding", f"{m['embed_dim']}-d joint space; token table: the world's BPE ids only"],
                ["heads", f"head width {m['head_width']}"],
            ],
        ),
        "",
        "Inputs: images resized to the model's size and normalised with OpenAI CLIP's mean and std; text "
        "through CLIP's BPE tokenizer (`restore.clip.tokenize`, context 32). Token ids outside the world's "
        "vocabulary share one 'unknown' embedding row.",
        "",
        "## Zero-shot accuracy",
        "",
        f'Top-1 on each task\'s full test split, one prompt per class: "{ZERO_SHOT_TEMPLATE}". '
        "A test (`tests/world/test_weights.py`) recomputes these from the shipped weights.",
        "",
        _table(["task", "classes", "chance %", "zero-shot %", "vs chance"], zero_shot_rows(record)),
        "",
        f"During training (periodic evaluation on the first {cfg['eval_per_class']} test images per class):",
        "",
        _table(
            ["step", "seconds", "loss", *record["zero_shot"].keys()],
            [
                [str(h["step"]), str(h["seconds"]), f"{h['loss']:.3f}"]
                + [f"{100 * h[n]:.1f}" for n in record["zero_shot"]]
                for h in record["history"]
            ],
        ),
    ]
    if choices:
        parts += ["", "## What each design choice bought", "", choices.get("intro", "")]
        parts += ["", _table(choices["header"], choices["rows"])]
        if choices.get("notes"):
            parts += ["", choices["notes"]]
    parts += [
        "",
        "## Tasks",
        "",
        _table(
            ["task", "classes", "what varies", "camera"],
            [[n, str(len(t.classes)), t.description, t.shift.describe()] for n, t in TASKS.items()],
        ),
        "",
        "Generated on first use into `$RESTORE_CACHE/world/<task>/` (CoOp layout, `split_world_<Task>.json`, "
        "24 / 8 / 50 images per class for train / val / test). For base-to-novel, `color_shape` and "
        "`pattern_shape` order their labels so that the base half and the novel half each contain every colour "
        "(pattern) and every shape: a novel class is an unseen combination of seen attributes. The tinted tasks "
        "alternate colours between the halves: a novel class is a colour never named in training.",
        "",
        *(
            [
                "## The downstream regime",
                "",
                "The tasks that README's quickstart and `configs/sweeps/world_regime.yaml` run (docs/world.md says "
                "why): zero-shot top-1 on each half of the test split, each half classified among its own classes "
                f'as base-to-novel does, prompt "{ZERO_SHOT_TEMPLATE}". The tinted tasks are seen through a camera '
                "whose colour filters turn every hue; pretraining never saw it.",
                "",
                _table(
                    [
                        "task",
                        "base + novel",
                        "camera",
                        "chance % (base / novel)",
                        "base %",
                        "novel %",
                        "novel vs chance",
                    ],
                    regime_rows(regime),
                ),
                "",
            ]
            if regime
            else []
        ),
        "## Use",
        "",
        "```python",
        "from restore.world.weights import load_world_clip",
        "from restore.world.tasks import ensure_task",
        "",
        "model = load_world_clip()            # restore.clip.model.CLIP, eval mode",
        'root = ensure_task("color_shape")     # $RESTORE_CACHE/world/color_shape',
        "```",
        "",
    ]
    return "\n".join(parts)
