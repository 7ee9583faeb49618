"""How a training job uses its device: CUDA graphs, precision and determinism (config ``train:``).

The three keys live in the config's top-level ``train:`` block, which kdpipe.plan copies into
every run's ``train`` recipe (a recipe may override them for its own runs):

    train:
      cuda_graphs: auto     # auto: on for CUDA, off on CPU | on: CUDA graphs or an error | off
      precision: auto       # auto: bf16 autocast on CUDA, fp32 on CPU | bf16 | fp32
      deterministic: true   # bitwise-repeatable runs on the same GPU model and software

On the CPU with the defaults nothing here changes the loop: graphs off, fp32, and no
determinism switch is touched (the CPU is deterministic already), so a CPU run gives bitwise the
numbers it gave before these keys existed (tests/test_accel.py).
"""

import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from kdpipe.training.graphs import graphs_required  # graphs imports nothing from here
from kdpipe.training.settings import DEFAULTS, GRAPHS, KEYS, PRECISIONS, requested_settings  # noqa: F401

# cuBLAS needs a fixed workspace to be deterministic; either value works (CUDA docs, torch's
# "Reproducibility" notes). Read when cuBLAS first starts in the process, so set it before that.
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


@dataclass(frozen=True)
class Accel:
    """The resolved settings of one job (what metrics.json records)."""

    cuda_graphs: bool
    precision: str  # "bf16" | "fp32"
    deterministic: bool
    requested: tuple = ()  # the config's values, for messages and metrics

    @property
    def autocast_dtype(self):
        return torch.bfloat16 if self.precision == "bf16" else None

    def as_metrics(self) -> dict:
        return {"precision": self.precision, "cuda_graphs": self.cuda_graphs, "deterministic": self.deterministic}


def resolve(train_cfg: dict | None, device: torch.device) -> Accel:
    """What this job does on ``device``.

    ``cuda_graphs: on`` on a CPU is an error (the user asked for something this job cannot do;
    it would otherwise silently run a different, slower path), a kdpipe InputError naming the key.
    ``precision: bf16`` on the CPU is allowed: it runs under CPU autocast (slow on most CPUs;
    useful to test the bf16 path).
    """
    s = requested_settings(train_cfg)
    cuda = torch.device(device).type == "cuda"
    if s["cuda_graphs"] == "on" and not cuda:
        raise graphs_required(f"CUDA graphs need a CUDA device and this job runs on {device}")
    graphs = cuda if s["cuda_graphs"] == "auto" else s["cuda_graphs"] == "on"
    precision = ("bf16" if cuda else "fp32") if s["precision"] == "auto" else s["precision"]
    return Accel(cuda_graphs=graphs, precision=precision, deterministic=s["deterministic"],
                 requested=tuple(sorted(s.items())))


def prepare_environment(train_cfg: dict | None) -> None:
    """Before CUDA starts in this process: the cuBLAS workspace a deterministic run needs.

    Only an environment variable; harmless on a CPU-only job.
    """
    if not requested_settings(train_cfg)["deterministic"]:
        return
    current = os.environ.get(CUBLAS_ENV)
    if current not in CUBLAS_DETERMINISTIC:
        if current:
            print(f"kdpipe: {CUBLAS_ENV}={current} is not deterministic; using {CUBLAS_DETERMINISTIC[0]}",
                  file=sys.stderr)
        os.environ[CUBLAS_ENV] = CUBLAS_DETERMINISTIC[0]


def apply_determinism(accel: Accel, device: torch.device) -> None:
    """CUDA only: deterministic kernels (an error names any op that has none) or benchmark mode.

    The CPU is left exactly as it was: switching on deterministic algorithms there may pick other
    kernels, and the CPU loop must keep its numbers.
    """
    if torch.device(device).type != "cuda":
        return
    if accel.deterministic:
        torch.use_deterministic_algorithms(True)
        # Deterministic mode also fills every torch.empty with NaN (an extra kernel per allocation,
        # captured into graphs too); kdpipe never reads memory it did not write, so keep it off.
        _fill_uninitialized_memory(False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True  # fastest convolution per shape, chosen by timing
        torch.backends.cudnn.deterministic = False


def _fill_uninitialized_memory(on: bool) -> None:
    try:  # torch >= 2.1
        import torch.utils.deterministic as switch
    except ImportError:
        return
    if hasattr(switch, "fill_uninitialized_memory"):
        switch.fill_uninitialized_memory = on


def autocast(accel: Accel, device: torch.device):
    """The forward passes' precision context: bf16 autocast, or nothing at all for fp32.

    The cast cache is off: inside a CUDA graph a cached weight copy would outlive the capture
    (torch.cuda.make_graphed_callables says the same), and the cache only saves time between
    forwards of one autocast region.
    """
    if accel.precision != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


def full_precision(device):
    """Autocast off: what a loss's own arithmetic (matrix products, a regressor) and every metric
    run under, on the float32 tensors ``float32_outputs`` hands them, whatever ``precision`` says.

    On the CPU in fp32 autocast is off already, so nothing changes there.
    """
    return torch.autocast(torch.device(device).type, enabled=False)


def to_float32(value):
    """Floating tensors in any nesting of tuples, lists and dicts, as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, tuple):
        return tuple(to_float32(v) for v in value)
    if isinstance(value, list):
        return [to_float32(v) for v in value]
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    return value


def _networks(family) -> list[nn.Module]:
    """The family's networks whose outputs a loss reads: its module attributes, and modules in list
    attributes (mutual learning's peers), each once."""
    found = {}
    for value in vars(family).values():
        for m in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(m, nn.Module):
                found[id(m)] = m
    return list(found.values())


@contextmanager
def float32_outputs(family, accel: Accel):
    """Under bf16, every network of the family (model, teacher) hands float32 outputs to the loss.

    So the losses' softmax, log-softmax, KL, cross-entropy and feature distances always run in
    fp32 whatever autocast would pick for them, and so do the evaluation's softmax and top-k.
    Nothing is hooked under fp32.
    """
    if accel.precision != "bf16":
        yield
        return
    handles = [m.register_forward_hook(lambda _m, _args, out: to_float32(out)) for m in _networks(family)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
