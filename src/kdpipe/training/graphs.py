"""One training step for every family: eager, or replayed as a CUDA graph.

The loop calls ``step(batch)`` and never knows which it got. A step is the family's whole
``loss(batch)`` (the student's forward, a KD teacher's forward, every loss term), the backward
pass and the optimiser's update. ``GraphedStep`` captures that, once per batch shape, by hand
(``torch.cuda.graph``, PyTorch's "whole network capture" recipe):

* Static inputs: each batch is made outside the graph (shuffling and augmentation stay random
  per batch and per epoch, drawn from the epoch's generator as before) and copied into the
  graph's input buffers; the graph replays on them.
* Static shapes: a family's batches have at most two shapes, the full batch and the epoch's
  last partial batch of ``n % batch_size`` images, the same size every epoch (``batch_plan``).
  Each shape gets its own graph, so every image is still seen exactly once per epoch.
* Warm-up without side effects: before a capture, a few eager steps run on a side stream (so
  cuDNN/cuBLAS settle and the optimiser's state exists), then the model's parameters and
  buffers and the optimiser's state are put back exactly as they were; state the warm-up created
  (SGD's momentum, Adam's moments and step) is zeroed, which is what a first step starts from.
  So a capture changes no number, and a run resumed from a checkpoint, which captures again,
  continues exactly where the uninterrupted run was.
* Learning rate: captured as a constant, so a graph is dropped and captured again when the lr
  changes (at a milestone: three times in 240 epochs). The same holds for anything else a
  family's loss reads as a Python number: a family whose loss depends on the epoch (it has an
  ``epoch`` attribute, which the loop sets) is captured again every epoch, unless it says more
  precisely when its loss changes with a ``graph_key()`` method (e.g. a warm-up weight
  ``min(epoch / 20, 1)`` changes only during the first 20 epochs).
* Adam is made ``capturable`` (its step counter lives on the GPU); SGD needs nothing.

The capture backend is swappable: ``SimulatedGraphs`` runs the same bookkeeping on the CPU with
the step body executed eagerly on every "replay", which is how tests check on a machine without
CUDA that captures, warm-ups, lr changes and the remainder batch change no number.
"""

import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn


def batch_plan(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of an epoch over ``n`` shuffled items.

    Every item exactly once; ``n // batch_size`` full batches and, when ``n % batch_size``,
    one last batch of that size: at most two shapes, the same every epoch.
    """
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1; got n={n}, batch_size={batch_size}")
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def batch_shapes(n: int, batch_size: int) -> list[int]:
    """The distinct batch sizes an epoch has (what the graph path captures): one or two."""
    return sorted({stop - start for start, stop in batch_plan(n, batch_size)}, reverse=True)


def _tensors(batch) -> tuple[torch.Tensor, ...]:
    items = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError("a graphed step needs batches that are tensors or tuples of tensors")
    return items


def signature(batch) -> tuple:
    """What a captured graph is specific to: each input's shape, strides, dtype and device."""
    return tuple((tuple(t.shape), t.stride(), t.dtype, str(t.device)) for t in _tensors(batch))


class EagerStep:
    """Today's step: loss, zero the gradients, backward, update. On the CPU in fp32 it is exactly
    the loop's step of before (the autocast context is then a no-op)."""

    captures = 0
    kind = "eager"

    def __init__(self, family, optimizer: torch.optim.Optimizer, autocast=nullcontext):
        self.family, self.optimizer, self.autocast = family, optimizer, autocast

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def set_state(self, key) -> None:
        pass

    def __call__(self, batch):
        with self.autocast():
            total, terms = self.family.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return total, terms


class CudaGraphs:
    """The real backend: a side stream for warm-ups, ``torch.cuda.graph`` for captures."""

    name = "cuda"

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device=device)

    @contextmanager
    def side_stream(self):
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, body, reset):
        """Record ``body`` (nothing runs yet); return what replays it and hands back its outputs."""
        reset()  # gradients are None: the captured backward allocates them in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = body()

        def replay():
            graph.replay()
            return outputs

        replay.graph = graph  # keeps the graph (and its memory pool) alive with the replay
        return replay


class SimulatedGraphs:
    """CPU stand-in with the same contract: capturing runs nothing, each replay runs the body.

    Counts captures, so tests can see when the step would capture again.
    """

    name = "simulated"

    def __init__(self):
        self.captured: list[tuple] = []

    def side_stream(self):
        return nullcontext()

    def capture(self, body, reset):
        reset()
        self.captured.append(None)

        def replay():
            reset()  # a replayed backward writes fresh gradients; it never accumulates
            return body()

        return replay


def _model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in list(model.parameters()) + list(model.buffers())]


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Copies of everything a training step changes: parameters, buffers, optimiser state."""
    return {
        "model": [t.detach().clone() for t in _model_tensors(model)],
        "optimizer": {id(p): {k: v.detach().clone() for k, v in st.items() if isinstance(v, torch.Tensor)}
                      for p, st in optimizer.state.items()},
    }


@torch.no_grad()
def restore(saved: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put back a ``snapshot`` in place (the tensors keep their addresses, which a graph records).

    Optimiser state that did not exist at the snapshot is zeroed: SGD (dampening 0) and Adam start
    from zero moments and step 0, so the next step computes what a first step computes.
    """
    for t, v in zip(_model_tensors(model), saved["model"]):
        t.copy_(v)
    for p, st in optimizer.state.items():
        before = saved["optimizer"].get(id(p), {})
        for k, v in st.items():
            if not isinstance(v, torch.Tensor):
                continue
            if k in before:
                v.copy_(before[k])
            else:
                v.zero_()


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Adam with its step counter on the parameter's device, so its update can be captured.

    Also after loading a checkpoint written without graphs (its groups say capturable=False and
    its step counters were loaded onto the CPU).
    """
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if isinstance(st.get("step"), torch.Tensor) and st["step"].device != p.device:
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


@dataclass
class _Entry:
    static: tuple
    replay: object
    lr: float


class GraphedStep:
    """The whole training step replayed as a graph, one graph per batch shape (see the module doc)."""

    kind = "graphs"

    def __init__(self, family, optimizer: torch.optim.Optimizer, autocast=nullcontext, *, backend,
                 warmup: int = 3, max_graphs: int = 4, fall_back: bool = False):
        self.family, self.optimizer, self.autocast = family, optimizer, autocast
        self.fall_back = fall_back  # cuda_graphs: auto runs eagerly when a capture fails; on raises
        self.failed: str | None = None
        self.backend, self.warmup, self.max_graphs = backend, warmup, max_graphs
        self.entries: dict[tuple, _Entry] = {}
        self.lr: float | None = None
        self.state_key = None
        self.captures = 0
        self.eager = EagerStep(family, optimizer, autocast)
        self._warned = False

    def set_lr(self, lr: float) -> None:
        if lr != self.lr:
            self.entries.clear()  # each graph has the old lr baked in: capture again on next use
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def set_state(self, key) -> None:
        """Whatever else the captured loss read as constants (``graph_state``): capture again when it changes."""
        if key != self.state_key:
            self.entries.clear()
        self.state_key = key

    def _body(self, static):
        def body():
            with self.autocast():
                total, terms = self.family.loss(static)
            total.backward()
            self.optimizer.step()
            return total, terms

        return body

    def _capture(self, batch) -> _Entry:
        model, opt = self.family.model, self.optimizer
        static = tuple(t.clone() for t in _tensors(batch))  # clone keeps the layout (channels-last)
        body = self._body(static)
        saved = snapshot(model, opt)
        try:
            with self.backend.side_stream():
                for _ in range(self.warmup):
                    opt.zero_grad(set_to_none=True)
                    body()
        finally:
            restore(saved, model, opt)  # also when the warm-up fails: an eager fallback starts clean
        replay = self.backend.capture(body, reset=lambda: opt.zero_grad(set_to_none=True))
        self.captures += 1
        return _Entry(static=static, replay=replay, lr=self.lr)

    def __call__(self, batch):
        if self.failed:
            return self.eager(batch)
        key = signature(batch)
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.max_graphs:
                if not self._warned:
                    print(f"kdpipe: more than {self.max_graphs} batch shapes; extra shapes run eagerly",
                          file=sys.stderr)
                    self._warned = True
                return self.eager(batch)
            try:
                entry = self.entries[key] = self._capture(batch)
            except Exception as err:
                if not self.fall_back:
                    raise
                # The warm-up's changes were undone (restore) and capturing changes no number.
                self.failed = f"{type(err).__name__}: {err}"
                self.entries.clear()
                print(f"kdpipe: CUDA graph capture failed ({self.failed}); this run continues eagerly",
                      file=sys.stderr)
                return self.eager(batch)
        for dst, src in zip(entry.static, _tensors(batch)):
            dst.copy_(src)
        return entry.replay()


def graph_state(family):
    """What, besides the lr, a family's captured loss depends on (see the module doc)."""
    key = getattr(family, "graph_key", None)
    if callable(key):
        return key()
    return getattr(family, "epoch", None)


def make_step(family, optimizer, accel, device: torch.device, autocast=nullcontext, backend=None):
    """The step this job uses: graphed when ``accel.cuda_graphs`` (or a backend is given for tests).

    With ``cuda_graphs: auto`` a failed capture falls back to eager steps (metrics.json says so);
    with ``on`` it is an error.
    """
    if backend is None and not accel.cuda_graphs:
        return EagerStep(family, optimizer, autocast)
    if backend is None:
        backend = CudaGraphs(device)
    if backend.name == "cuda":
        make_capturable(optimizer)
    fall_back = dict(accel.requested).get("cuda_graphs", "auto") == "auto"
    return GraphedStep(family, optimizer, autocast, backend=backend, fall_back=fall_back)
