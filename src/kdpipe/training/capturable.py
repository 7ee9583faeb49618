"""Can a family's training step be captured as a CUDA graph? Checked on the CPU.

A CUDA graph records GPU work; it cannot record the host reading a tensor's value (``.item()``,
``bool(t)``, ``float(t)``, ``.tolist()``, printing: each waits for the GPU) nor an operation whose
output shape depends on the data (boolean-mask indexing, ``nonzero``, ``unique``). On a GPU either
makes the capture fail (kdpipe.training.graphs then runs eagerly, or stops under
``cuda_graphs: "on"``); on the CPU, where ``SimulatedGraphs`` runs the step eagerly, nothing fails.

``check_step`` runs one whole step of a built family — its ``loss(batch)``, zero the gradients,
backward, the optimiser's update: ``graphs.EagerStep``, what a graph captures — on a copy of the
family under PyTorch's ``FakeTensorMode``, where tensors have shapes and no values: reading a value
raises ``DataDependentOutputException`` and a data-dependent shape ``DynamicOutputShapeException``.
Either becomes ``NotCapturable`` naming the method or family, the operation and the line of code.

What it cannot see: a Python number the step reads (frozen at capture: ``Method.epoch_key`` and
``graph_key`` say when to capture again), and reading a tensor made from a Python literal inside the
step (fake tensors keep such constants' values). Adam is checked as the CPU builds it, not in the
``capturable`` form the GPU path switches it to.
"""

import copy
import os
import traceback

import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException, FakeCopyMode,
                                           FakeTensorMode)

from kdpipe.training.graphs import EagerStep, _tensors
from kdpipe.training.loop import Recipe

_TORCH_DIR = os.path.dirname(torch.__file__)


class NotCapturable(RuntimeError):
    """A training step does something a CUDA graph cannot capture; the message names what and where."""


def _where(err: BaseException) -> str:
    """The innermost frame of the traceback outside torch (and this module): the offending line."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if not f.filename.startswith(_TORCH_DIR) and f.filename != __file__]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}, in {f.name}: {(f.line or '').strip()})"


def _op(err) -> str:
    func = getattr(err, "func", None)
    return str(getattr(func, "overloadpacket", func))


def check_step(family, recipe: Recipe, *, what: str, seed: int = 0) -> list[str]:
    """Run one training step of ``family`` under FakeTensorMode; return its loss terms' names.

    The family itself is left untouched: the step runs on a fake copy of it (models, teacher, data),
    with the optimiser ``recipe`` makes, on the family's first training batch (drawn for real, as the
    loop draws batches outside the graph). ``what`` names the method or family in the error.
    """
    batch = next(iter(family.train_batches(torch.Generator().manual_seed(seed))))
    mode = FakeTensorMode()
    with FakeCopyMode(mode):
        fake = copy.deepcopy(family)
    fake_batch = tuple(mode.from_tensor(t, static_shapes=True) for t in _tensors(batch))
    optimizer = recipe.make_optimizer(fake.model.parameters())
    try:
        with mode:
            _, terms = EagerStep(fake, optimizer)(fake_batch)
    except DataDependentOutputException as err:
        raise NotCapturable(
            f"{what}: {_op(err)} reads a tensor's value on the host (.item(), bool(t), float(t), .tolist(), "
            f"print), which waits for the GPU; a CUDA graph cannot capture it{_where(err)}") from err
    except DynamicOutputShapeException as err:
        raise NotCapturable(
            f"{what}: {_op(err)} makes a data-dependent shape (boolean-mask indexing, nonzero, unique); "
            f"a CUDA graph cannot capture it{_where(err)}") from err
    return list(terms)


def describe(run_cfg: dict) -> str:
    """How an error names a run's step: the classifier's method, or the family and its method/variant."""
    family = run_cfg["family"]
    if family == "classify":
        return f"method {run_cfg['method']!r}"
    if family == "autoencoder":
        return f"autoencoder pair, variant {run_cfg['variant']['name']!r}"
    return f"{family} family, method {run_cfg['method']!r}"


def check_run(run_cfg: dict, train: dict, test: dict, teacher_path=None) -> list[str]:
    """Build the family a run config describes, as a training job does (on the CPU), and check its step."""
    from kdpipe.training.run import family_builder

    torch.manual_seed(run_cfg["seed"])
    family, _, _ = family_builder(run_cfg["family"])(run_cfg, train, test, torch.device("cpu"), teacher_path)
    return check_step(family, Recipe.from_dict(run_cfg["train"]), what=describe(run_cfg), seed=run_cfg["seed"])
