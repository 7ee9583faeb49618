"""No table, figure or report outlives a run it was made from.

Snakemake rebuilds a missing file only when a job downstream of it has to run anyway
(snakemake/snakemake#1978): after a training job fails or is killed (Snakemake then removes its
outputs), or after a metrics.json is deleted, the tables, figures and report made from the old run
stay, and ``snakemake results/report.pdf`` says "Nothing to be done". So, when the workflow loads
for a real run and again right after a failed one, every existing aggregate output (a file of a
rule without wildcards, under results/: tables, figures, the report) one of whose inputs under
results/ is missing is removed, and so, transitively, is everything made from it. Snakemake then
finds the report missing and rebuilds the chain, down to the missing run (which resumes from its
resume.pt when it has one).

Inputs outside results/ (prepared data) are not followed: they are rebuilt from their sources, can
be deleted to save space, and their absence says nothing about whether a table is current.
"""

import contextlib
import io
import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

RESULTS = "results"
# Snakemake options that run no job (they plan, list, draw, lint, touch or clean): the sweep only says
# what a real run would remove. A dry run (-n) in particular changes no file, as Snakemake promises,
# and so still says "Nothing to be done" where the real run will rebuild: the lines printed say why.
NO_JOB_OPTIONS = (
    "dryrun", "touch", "unlock", "lint", "summary", "detailed_summary", "list_changes", "list_input_changes",
    "list_params_changes", "list_untracked", "list_rules", "list_target_rules", "dag", "rulegraph", "filegraph",
    "d3dag", "print_compilation", "report", "archive", "containerize", "generate_unit_tests", "cleanup_metadata",
    "cleanup_shadow", "delete_all_output", "delete_temp_output", "list_conda_envs", "conda_cleanup_envs",
    "conda_create_envs_only",
)


def under_results(path: str) -> bool:
    """A relative path inside results/ that climbs nowhere (what the sweep may ever remove)."""
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and parts[0] == RESULTS and ".." not in parts and not os.path.isabs(path)


def stale_outputs(products: Mapping[str, Iterable[str]], exists: Callable[[str], bool]) -> dict[str, str]:
    """The existing outputs to remove, in the order found, each with the input that condemns it.

    ``products`` maps each output to its inputs. An existing output goes when one of its inputs does
    not exist, or goes itself (so everything made from a missing run goes, however far down)."""
    products = {out: list(ins) for out, ins in products.items()}
    gone: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for out, ins in products.items():
            if out in gone or not exists(out):
                continue
            cause = next((i for i in ins if i in gone or not exists(i)), None)
            if cause is not None:
                gone[out] = cause
                changed = True
    return gone


def _reason(cause: str, gone: Mapping[str, str]) -> str:
    if cause in gone:
        return f"its input {cause} goes too"
    return f"its input {cause} is missing (its job failed or was killed, or it was deleted)"


def _refusal(root: Path, path: str) -> str | None:
    """Why ``path`` may not be removed, or None. Only a file or a symlink itself (never what a link
    points to), inside results/, reached through no symlinked folder below results/."""
    if not under_results(path):
        return "not inside results/"
    full = root / path
    if not stat.S_ISREG(os.lstat(full).st_mode) and not os.path.islink(full):
        return "not a file"
    results = os.path.realpath(root / RESULTS)  # results/ itself may be a link to a scratch disk
    if os.path.commonpath([os.path.realpath(full.parent), results]) != results:
        return "its folder leads outside results/"
    return None


def sweep(root: str | os.PathLike, products: Mapping[str, Iterable[str]], *, remove: bool,
          note: str = "", echo: Callable[[str], None] | None = None) -> tuple[list[str], list[str]]:
    """Remove (``remove``) or only name the stale outputs of ``products`` (paths relative to ``root``),
    one ``kdpipe:`` line each. Returns (removed, refused): a stale file that is not safe to remove
    (a folder, or reached through a link out of results/) is left, and the caller must stop."""
    root = Path(root)
    echo = echo or (lambda line: print(line, file=sys.stderr))
    removed, refused = [], []
    gone = stale_outputs(products, lambda p: (root / p).exists())
    for path, cause in gone.items():
        why = _reason(cause, gone)
        if not remove:
            echo(f"kdpipe: {path} is stale: {why}; a real run removes and rebuilds it{note}")
            continue
        try:
            refusal = _refusal(root, path)
            if refusal is None:
                os.unlink(root / path)  # the name only: a symlink's target is never touched
        except FileNotFoundError:  # removed meanwhile: what was wanted
            continue
        if refusal:
            refused.append(path)
            echo(f"kdpipe: {path} is stale: {why}; not removed ({refusal}): remove it by hand")
        else:
            removed.append(path)
            echo(f"kdpipe: removed {path}: {why}; it will be rebuilt")
    return removed, refused


def runs_jobs(argv: list[str]) -> bool:
    """Whether this ``snakemake`` command line runs jobs (not -n, --touch, --unlock, --summary, ...),
    read with Snakemake's own parser; anything it cannot read counts as not running jobs."""
    if not argv or "snakemake" not in Path(argv[0]).as_posix():
        return False  # loaded by some other program: it did not ask to rebuild anything
    from snakemake.cli import get_argument_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = get_argument_parser().parse_known_args(argv[1:])
    except SystemExit:
        return False
    return not any(getattr(args, name, None) for name in NO_JOB_OPTIONS)


def locked(root: str | os.PathLike) -> bool:
    """Another Snakemake works in ``root`` (or a killed one left its lock: `--unlock` clears it), as
    Snakemake's default (file) record keeps its locks."""
    locks = Path(root) / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())
