"""Matplotlib set-up and finishing shared by the benchmark scripts' figures (PNG, no display)."""

from __future__ import annotations


def subplots(*args, **kwargs):
    """`plt.subplots` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def finish(ax, *, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
           grid_axis: str = "both", legend_size: float | None = None) -> None:
    """Labels, a light grid and the legend of one panel."""
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.legend(fontsize=legend_size)


def save(fig, path: str) -> None:
    """Writes the figure as a PNG at 120 dpi and frees it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
