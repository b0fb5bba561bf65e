"""The paper's explanatory figures as PNG files: per-layer shift curves (Fig. 4a), discrepancy against
accuracy gain over zero-shot CLIP (Fig. 3), and a t-SNE of image and text features (Fig. 5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from restore.analysis.shift import ShiftProfile
from restore.fileio import atomic_path


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_layer_shifts(profiles: dict[str, ShiftProfile], path: Path, title: str = "") -> Path:
    """Fig. 4a: s_l per layer, vision (solid) and text (dashed), one colour per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    colours = plt.get_cmap("tab10")
    for i, (label, prof) in enumerate(profiles.items()):
        c = colours(i % 10)
        axes[0].plot(range(1, len(prof.vision) + 1), prof.vision, "-o", color=c, label=f"{label} (vision)", ms=3)
        axes[0].plot(range(1, len(prof.text) + 1), prof.text, "--s", color=c, label=f"{label} (text)", ms=3)
        axes[1].plot(range(1, len(prof.discrepancy) + 1), prof.discrepancy, "-o", color=c, label=label, ms=3)
    axes[0].set(xlabel="layer", ylabel="feature shift $s_l$", title="feature shift per layer")
    axes[1].set(xlabel="layer", ylabel="$(s_l^v - s_l^t)^2$", title="inter-modal discrepancy per layer")
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    measure = next(iter(profiles.values())).measure if profiles else ""
    fig.suptitle(title or f"Feature shift ({measure})")
    return _save(fig, path)


@dataclass
class GainPoint:
    label: str
    discrepancy: float
    base_gain: float  # accuracy minus zero-shot CLIP's, in points
    novel_gain: float


def plot_discrepancy_vs_gain(points: Sequence[GainPoint], path: Path, title: str = "") -> Path:
    """Fig. 3: total inter-modal discrepancy against the base and novel accuracy gain over zero-shot."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = np.array([p.discrepancy for p in points], dtype=float)
    for ax, attr, name in ((axes[0], "base_gain", "base"), (axes[1], "novel_gain", "novel")):
        y = np.array([getattr(p, attr) for p in points], dtype=float)
        ax.scatter(x, y, color="tab:blue")
        for p, xi, yi in zip(points, x, y, strict=True):
            ax.annotate(p.label, (xi, yi), fontsize=8, xytext=(3, 3), textcoords="offset points")
        if len(points) >= 3 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 20)
            r = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else float("nan")
            ax.plot(xs, slope * xs + intercept, "--", color="gray", label=f"fit, r = {r:.2f}")
            ax.legend(fontsize=8)
        ax.axhline(0, color="black", lw=0.5)
        ax.set(xlabel="inter-modal discrepancy $\\sum_l (s_l^v - s_l^t)^2$", ylabel=f"{name} accuracy gain (points)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Discrepancy of feature shift vs. gain over zero-shot CLIP")
    return _save(fig, path)


@dataclass
class TsnePanel:
    title: str
    image_features: np.ndarray  # (N, D)
    image_labels: np.ndarray  # (N,)
    text_features: np.ndarray  # (C, D), row c is class c
    classnames: Sequence[str] | None = None  # class c's name, for the legend; None: "class c"


def tsne_embed(panel: TsnePanel, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Joint 2-D t-SNE of a panel's image and text features (so their relative positions mean something)."""
    from sklearn.manifold import TSNE  # slow: scikit-learn, for t-SNE only

    feats = np.concatenate([panel.image_features, panel.text_features]).astype(np.float64)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12
    perplexity = float(max(2, min(30, (len(feats) - 1) // 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(
        feats
    )
    n = len(panel.image_features)
    return emb[:n], emb[n:]


#: Classes named in the t-SNE legend; beyond this the colours repeat (tab20) and the legend says so.
TSNE_LEGEND_CLASSES = 20


def tsne_figure(panels: Sequence[TsnePanel], title: str = "", seed: int = 0):
    """Fig. 5: images as dots and class texts as stars, coloured by class, one panel per (method, split); a
    legend names the classes by colour and the two markers."""
    from matplotlib.lines import Line2D  # slow: matplotlib, for figures only

    cols = min(len(panels), 4)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False, layout="constrained")
    most = max((len(p.text_features) for p in panels), default=0)
    k = 10 if most <= 10 else 20  # tab10's colours are the easier to tell apart; tab20 pairs light and dark
    cmap = plt.get_cmap(f"tab{k}")
    n_classes = 0
    names: list[str] = []
    for ax, panel in zip(axes.flat, panels, strict=False):
        img, txt = tsne_embed(panel, seed)
        ax.scatter(
            img[:, 0], img[:, 1], c=[cmap(int(c) % k) for c in panel.image_labels], s=22, alpha=0.85,
            edgecolors="white", linewidths=0.4,
        )  # fmt: skip
        ax.scatter(
            txt[:, 0], txt[:, 1], c=[cmap(c % k) for c in range(len(txt))], marker="*", s=260,
            edgecolors="black", linewidths=0.9,
        )  # fmt: skip
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(txt) > n_classes:
            n_classes = len(txt)
            names = list(panel.classnames or [f"class {c}" for c in range(len(txt))])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [
        Line2D([], [], marker="o", linestyle="", color="gray", markeredgecolor="white", label="image"),
        Line2D([], [], marker="*", linestyle="", color="gray", markeredgecolor="black", markersize=12,
               label="class text"),
    ]  # fmt: skip
    shown = min(n_classes, TSNE_LEGEND_CLASSES)
    handles += [
        Line2D([], [], marker="s", linestyle="", color=cmap(c % k), markersize=8, label=names[c]) for c in range(shown)
    ]
    if n_classes > shown:
        handles.append(Line2D([], [], linestyle="", label=f"+{n_classes - shown} more classes (colours repeat)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, title="classes")
    fig.suptitle(title or "t-SNE of image (dots) and class-text (stars) features")
    return fig


def plot_tsne(panels: Sequence[TsnePanel], path: Path, title: str = "", seed: int = 0) -> Path:
    """`tsne_figure` written as a PNG."""
    return _save(tsne_figure(panels, title, seed), path)
