"""The study figures, drawn with matplotlib's Agg backend into small PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edge_fer import fileio
from edge_fer.errors import UserError

DPI = 72


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "experiment reports need matplotlib: python3 -m pip install '.[train]' in the edge-fer checkout"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, buf.getvalue())
    return path.name


def confusion_grid(items: list[tuple[str, dict]], path: Path) -> str:
    """Row-normalised confusion matrices side by side: items = (title, report) with the
    report's labels and confusion_matrix."""
    plt = _plt()
    n = len(items)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (title, rep) in zip(axes.flat, items):
        cm = np.asarray(rep["confusion_matrix"], float)
        frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        labels = [c[:5] for c in rep["labels"]]
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        small = len(labels) > 5
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    f"{100 * frac[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6 if small else 8,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
        ax.set_title(f"{title}\nacc {rep['accuracy']:.3f}, n {rep['n']}", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def curves(items: list[tuple[str, list[dict]]], path: Path) -> str:
    """Training loss and held-out accuracy per epoch (the trainer's log.csv) per variant."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for name, log in items:
        if not log:
            continue
        ep = [r["epoch"] for r in log]
        a.plot(ep, [r["train_loss"] for r in log], marker=".", label=name)
        b.plot(ep, [r["val_acc"] for r in log], marker=".", label=name)
    a.set_title("training loss", fontsize=9)
    b.set_title("accuracy on the run's held-out selection faces", fontsize=9)
    for ax in (a, b):
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def acc_vs_ms(points: list[tuple[str, float, float]], path: Path, xlabel: str) -> str:
    """Accuracy against ms/face: points = (name, ms, accuracy)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, ms, acc in points:
        ax.scatter([ms], [acc], s=20)
        ax.annotate(name, (ms, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ms = [p[1] for p in points]
    if ms and max(ms) > 5 * min(ms):  # a wide range: log scale with 1-2-5 ticks
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("test accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)


def recall_bars(items: list[tuple[str, dict]], path: Path) -> str:
    """Per-class recall per variant (variants sharing one vocabulary)."""
    plt = _plt()
    classes = items[0][1]["labels"]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(classes) * max(1, len(items) / 3)), 3))
    w = 0.8 / len(items)
    for k, (name, rep) in enumerate(items):
        r = [rep["per_class"][c]["recall"] for c in classes]
        ax.bar(np.arange(len(classes)) + k * w - 0.4 + w / 2, r, w, label=name)
    ax.set_xticks(range(len(classes)), classes, fontsize=7)
    ax.set_ylabel("recall", fontsize=8)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=min(len(items), 4))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)
