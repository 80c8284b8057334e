"""PNG figures for a trained head: per-task training curves and the task-affinity heatmap.

matplotlib with the Agg backend (no display needed); imported only when a figure is drawn.
"""
from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict], tasks: list[str], path: Path) -> Path:
    """One panel per task: train and validation loss by epoch."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for k, (ax, task) in enumerate(zip(axes[0], tasks)):
        ax.plot(epochs, [h["train"][k] for h in history], label="train")
        if history and history[0]["val"] is not None:
            ax.plot(epochs, [h["val"][k] for h in history], label="validation")
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def affinity_heatmap(matrix: list[list[float]], tasks: list[str], path: Path) -> Path:
    """Cosine similarity of the tasks' gradients on the shared trunk, averaged over training."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.2 * len(tasks) + 1))
    im = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="gradient cosine")
    ax.set_title("task affinity")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
