"""Figures (matplotlib, PNG): one module per report section."""

from kdpipe.io import atomic_file


def save_png(fig, path, dpi: int) -> None:
    """Write ``fig`` as a PNG through a fresh temp file renamed over ``path`` (kdpipe.io): never
    through a link someone planted at the figure's name, never half-written."""
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
