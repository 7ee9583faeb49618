"""The one training loop: every family (classifier, multi-exit, autoencoder pair) runs through it.

A family supplies its model, its batches, its loss and its evaluation (the ``Family`` protocol);
the loop owns the optimiser and schedule, the per-epoch checkpoint, resuming, the progress bar
and the history. Randomness for epoch ``e`` comes from a generator seeded by (seed, e), so a
run resumed at epoch ``e`` draws exactly the batches an uninterrupted run would have.

How the step runs is the job's ``train`` settings' business (kdpipe.training.accel): on a CUDA
device by default the whole step is replayed as a CUDA graph under bf16 autocast
(kdpipe.training.graphs); on the CPU the step is the eager fp32 step it always was.
"""

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import torch
from torch import nn
from tqdm import tqdm

from kdpipe.errors import NonFiniteLossError
from kdpipe.io import atomic_save
from kdpipe.training import accel as accel_mod
from kdpipe.training.graphs import graph_state, make_step


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule: SGD with momentum (or Adam), lr multiplied by ``lr_gamma`` at each milestone."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9  # SGD's momentum
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if k in ("lr_milestones", "betas") else v) for k, v in d.items() if k in known})

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                               nesterov=self.nesterov)

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch``: a pure function, so nothing about it needs saving."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)


class Family(Protocol):
    model: nn.Module  # everything the optimiser trains and the checkpoint holds
    score_key: str  # the evaluation figure that picks the best epoch (higher is better)

    def train_batches(self, generator: torch.Generator) -> Iterator: ...

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def evaluate(self) -> dict[str, float]: ...


@dataclass
class Outcome:
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    resumed_from_epoch: int = 0
    settings: dict = field(default_factory=dict)  # precision, CUDA graphs, determinism: for metrics.json

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def fingerprint(run_config: dict) -> str:
    """Identifies what a checkpoint was trained for: resume only into the same run."""
    return hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()[:16]


def input_identity(path) -> list:
    """What changes when an input file is rebuilt: a resumed run must not mix old and new inputs."""
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    return g


def state_digest(obj) -> str:
    """sha256 of a checkpoint's content, in order: each tensor's dtype, shape and bytes, each other
    value's type and repr. Computed again after loading, it finds bytes flipped inside a tensor,
    which torch.load accepts silently."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)};".encode())
        h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}{len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def save_resume(state: dict, path: Path) -> None:
    """The epoch's checkpoint, with the digest of its content (checked by _load_resume)."""
    atomic_save({**state, "checksum": state_digest(state)}, path)


def _load_resume(path: Path, expected: str, model: nn.Module, optimizer) -> tuple[int, Outcome]:
    if not path.exists():
        return 0, Outcome()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file costs the epochs it held, not the run
        print(f"kdpipe: cannot read checkpoint {path} ({err}); starting from epoch 0", file=sys.stderr)
        return 0, Outcome()
    checksum = state.pop("checksum", None) if isinstance(state, dict) else None
    if checksum is None:
        print(f"kdpipe: checkpoint {path} has no checksum (written by an older kdpipe), so it cannot be "
              "verified; starting from epoch 0", file=sys.stderr)
        return 0, Outcome()
    if state_digest(state) != checksum:  # damaged like a truncated file, only torch.load cannot tell
        print(f"kdpipe: checkpoint {path} fails its checksum (damaged); starting from epoch 0", file=sys.stderr)
        return 0, Outcome()
    if state.get("fingerprint") != expected:
        print(f"kdpipe: ignoring {path}: it belongs to a different configuration", file=sys.stderr)
        return 0, Outcome()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    epoch = int(state["epoch"])
    print(f"kdpipe: resuming from {path} after epoch {epoch}", file=sys.stderr)
    return epoch, Outcome(history=list(state["history"]), best=dict(state["best"]), resumed_from_epoch=epoch)


def fit(
    family: Family,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device,
    resume_path: str | Path,
    run_config: dict,
    inputs: list | None = None,
    desc: str = "train",
    graph_backend=None,
) -> Outcome:
    """Train ``family.model`` for ``recipe.epochs``, resuming from ``resume_path`` if it matches.

    A checkpoint matches when it was written for the same run config and the same input files
    (``inputs``: data, teacher; identified by size and modification time). The run config's
    ``train`` block picks CUDA graphs, precision and determinism (kdpipe.training.accel);
    ``graph_backend`` replaces the CUDA graph backend (tests run the graph bookkeeping on the CPU).
    """
    resume_path = Path(resume_path)
    model = family.model
    acc = accel_mod.resolve(run_config.get("train"), device)
    accel_mod.apply_determinism(acc, device)
    optimizer = recipe.make_optimizer(model.parameters())
    fp = fingerprint({"config": run_config, "inputs": [input_identity(p) for p in inputs or []]})
    start, outcome = _load_resume(resume_path, fp, model, optimizer)
    autocast = lambda: accel_mod.autocast(acc, device)  # noqa: E731
    step = make_step(family, optimizer, acc, device, autocast=autocast, backend=graph_backend)
    with accel_mod.float32_outputs(family, acc):
        _epochs(family, recipe, step, optimizer, outcome, start=start, seed=seed, device=device, fp=fp,
                resume_path=resume_path, desc=desc)
    failed = getattr(step, "failed", None)  # a graphed step that fell back to eager steps says why
    outcome.settings = {**acc.as_metrics(), "cuda_graphs": step.kind == "graphs" and not failed,
                        "graph_captures": step.captures}
    if failed:
        outcome.settings["cuda_graphs_error"] = failed
    return outcome


def first_non_finite(means: dict[str, float], finite_steps: dict[str, int]) -> str | None:
    """The loss term to blame for a non-finite epoch mean, or None when every mean is finite.

    Once one term is NaN the weights are, and every term follows a step later: the one with the
    fewest finite steps went first; on a tie a named term before the total it feeds.
    """
    bad = [name for name in means if not math.isfinite(means[name])]
    return min(bad, key=lambda n: (finite_steps[n], n == "loss")) if bad else None


def _non_finite_message(run: str, name: str, value: float, epoch: int, resume_path: Path) -> str:
    what = "the total loss" if name == "loss" else f"loss term '{name}'"
    held = (f"{resume_path} holds epoch {epoch - 1} (the last finite one)" if epoch > 1
            else "no epoch was saved")
    return (f"run {run}: {what} is {value} in epoch {epoch}; stopping. {held}; "
            "fix the config (e.g. lower lr) and rerun")


def _epochs(family, recipe, step, optimizer, outcome, *, start, seed, device, fp, resume_path, desc):
    model = family.model
    quiet = not sys.stderr.isatty()
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        lr = recipe.lr_at(epoch)
        step.set_lr(lr)
        if hasattr(family, "epoch"):
            family.epoch = epoch  # a loss that depends on the epoch (DKD's warm-up weight) reads it
        step.set_state(graph_state(family))  # a graphed step captures again when that changes
        model.train()
        sums: dict[str, torch.Tensor] = {}
        finite: dict[str, torch.Tensor] = {}  # steps at which each term was finite
        steps = 0
        g = epoch_generator(seed, epoch, device)
        bar = tqdm(
            family.train_batches(g),
            desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}",
            leave=False,
            mininterval=10.0 if quiet else 0.1,  # a log file gets a line every 10 s, not a flood
        )
        for batch in bar:
            total, terms = step(batch)
            # Sum on the device; one transfer per epoch instead of a sync per step.
            for name, value in {"loss": total, **terms}.items():
                value = value.detach().float()
                sums[name] = sums.get(name, 0) + value
                finite[name] = finite.get(name, 0) + torch.isfinite(value)
            steps += 1
        # The epoch's one transfer to the host; a non-finite mean stops the run before its checkpoint,
        # so resume.pt keeps the last finite epoch.
        means = {name: float(v) / max(steps, 1) for name, v in sums.items()}
        if not all(map(math.isfinite, means.values())):
            bad = first_non_finite(means, {name: int(n) for name, n in finite.items()})
            raise NonFiniteLossError(_non_finite_message(desc, bad, means[bad], epoch + 1, resume_path))
        model.eval()
        with torch.no_grad(), accel_mod.full_precision(device):  # metrics in fp32 whatever precision says
            scores = family.evaluate()
        row = {"epoch": epoch + 1, "lr": lr}
        row.update(means)
        row.update(scores)
        row["seconds"] = time.perf_counter() - t0
        outcome.history.append(row)
        if not outcome.best or row[family.score_key] > outcome.best[family.score_key]:
            outcome.best = dict(row)
        print(
            f"{desc} epoch {epoch + 1}/{recipe.epochs} "
            + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch",)),
            file=sys.stderr,
        )
        save_resume(
            {
                "fingerprint": fp,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": outcome.history,
                "best": outcome.best,
            },
            resume_path,
        )
