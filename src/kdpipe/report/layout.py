"""Page layout helpers for the report: A4 pages of wrapped text, tables and pictures."""

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType: the PDF's text can be searched and extracted
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

A4 = (8.27, 11.69)
ROWS_PER_PAGE = 38


def fmt(mean: float, std: float) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def within_spread(diff: float, *stds: float) -> str:
    """A note for a positive difference no larger than the seeds' spread (empty when it is larger)."""
    spread = max(stds)
    return "" if pd.isna(spread) or diff > spread else " (within one standard deviation across seeds)"


def page():
    return plt.figure(figsize=A4)


def text(fig, y: float, body: str, size: float = 10, width: int = 95, **kw) -> float:
    """Write wrapped text at height y (figure fraction, from the top down); return the next free y."""
    lines = []
    for para in body.split("\n"):
        lines += textwrap.wrap(para, width) or [""]
    fig.text(0.08, y, "\n".join(lines), fontsize=size, va="top", **kw)
    return y - (len(lines) * size * 1.45) / (A4[1] * 72)


def table(fig, rect, columns: list[str], rows: list[list[str]], size: float = 8):
    ax = fig.add_axes(rect)
    ax.axis("off")
    cells = ax.table(cellText=rows, colLabels=columns, loc="upper center", cellLoc="center")
    cells.auto_set_font_size(False)
    cells.set_fontsize(size)
    cells.scale(1, 1.3)
    return ax


def image(fig, rect, path: Path):
    ax = fig.add_axes(rect)
    ax.imshow(mpimg.imread(path))
    ax.axis("off")


def heading(fig, title: str) -> None:
    fig.text(0.08, 0.95, title, fontsize=15, weight="bold", va="top")


def save(pdf, fig) -> None:
    pdf.savefig(fig)
    plt.close(fig)
