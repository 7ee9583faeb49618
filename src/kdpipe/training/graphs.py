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

* A failed capture changes nothing either: the previous stream is current again, the capture is
  ended, the graph and its memory pool are freed, the parameters and optimiser state are put back,
  and the error names its first cause (where in kdpipe it happened), not the CUDA errors that
  follow it. On CUDA the warm-ups run with ``torch.cuda.set_sync_debug_mode("error")``, so a step
  that reads a tensor on the host stops there, named, before any capture.

The capture backend is swappable: ``SimulatedGraphs`` runs the same bookkeeping on the CPU with
the step body executed eagerly when "capturing" (the Python a real capture runs) and on every
"replay", which is how tests check on a machine without CUDA that captures, warm-ups, lr
changes, the remainder batch and failed captures change no number.
"""

import gc
import sys
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdpipe.errors import InputError

_PACKAGE = str(Path(__file__).resolve().parents[1])  # src/kdpipe: where a failure's location is looked for


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


class CaptureFailed(RuntimeError):
    """A capture that did not finish; its message is the first cause (``describe``)."""


class GraphsRequiredError(InputError):
    """``train.cuda_graphs: on`` and this job's step could not be captured (or on a device without
    CUDA): one ``kdpipe:`` line naming the cause and the setting to change, not a traceback."""


def graphs_required(cause: str) -> GraphsRequiredError:
    return GraphsRequiredError(f"train.cuda_graphs: on, but {cause}; "
                               "set train.cuda_graphs: auto (eager fallback) or off")


def describe(err: BaseException) -> str:
    """``Type: first line of the message (at file:line in function)``: the innermost kdpipe frame,
    so a user sees which loss line read a tensor on the host, not torch's internals."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    frames = [f for f in traceback.extract_tb(err.__traceback__) if str(Path(f.filename).resolve()).startswith(_PACKAGE)]
    if frames:
        f = frames[-1]
        where = Path(f.filename).resolve().relative_to(Path(_PACKAGE).parent).as_posix()
        text += f" (at {where}:{f.lineno} in {f.name})"
    return text


def _end_pool(device_index: int, pool) -> None:
    """Tell the caching allocator a capture into ``pool`` is over and give the pool back.

    ``CUDAGraph.capture_end`` raises on a failed capture before it does this itself (torch 2.11 and
    2.14 alike), which would leave the allocator routing this stream's allocations to a dead pool.
    An error from the first call means capture_end (or a failed capture_begin) already ended it.
    Both functions are private: a torch build without one skips that call (and a release without
    its end), so the capture's real cause, not an AttributeError, is what gets reported.
    """
    end = getattr(torch._C, "_cuda_endAllocateToPool", None)
    release = getattr(torch._C, "_cuda_releasePool", None)
    if end is None:
        return
    try:
        end(device_index, pool)
    except (RuntimeError, AttributeError):
        return
    if release is None:
        return
    try:
        release(device_index, pool)
    except (RuntimeError, AttributeError):
        pass


class CudaGraphs:
    """The real backend: a side stream for warm-ups and captures; captures by hand (not the
    ``torch.cuda.graph`` context, which raises in ``capture_end`` before it restores the previous
    stream, and reports a failed capture as "operation failed due to a previous error")."""

    name = "cuda"

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)

    def _index(self) -> int:
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    @contextmanager
    def side_stream(self):
        """Warm-ups: on the side stream, with any host sync an error that names the operation."""
        mode = torch.cuda.get_sync_debug_mode()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(self.stream):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    yield
                finally:
                    torch.cuda.set_sync_debug_mode(mode)
        finally:  # also after an error: what follows on the main stream must see the warm-ups done
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def capture(self, body, reset):
        """Record ``body`` (no kernel runs); return what replays it and hands back its outputs.

        On failure everything is undone before ``CaptureFailed`` (first cause) is raised.
        """
        reset()  # gradients are None: the captured backward allocates them in the graph's pool
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # as torch.cuda.graph does: room for the graph's pool
        graph, pool = torch.cuda.CUDAGraph(), torch.cuda.graph_pool_handle()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        outputs, cause, ended = None, None, False
        with torch.cuda.stream(self.stream):  # its exit makes the previous stream current again
            try:
                graph.capture_begin(pool=pool)
                outputs = body()
            except Exception as err:  # the first cause; what fails after it is a consequence
                cause = err
            try:
                graph.capture_end()  # ends the stream's capture, also an invalidated one
                ended = True
            except Exception as err:
                cause = cause or err
        if cause is None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

            def replay():
                graph.replay()
                return outputs

            replay.graph = graph  # keeps the graph (and its memory pool) alive with the replay
            return replay
        outputs = None
        reset()  # the gradients the capture allocated live in its pool
        if not ended:
            _end_pool(self._index(), pool)
        try:
            graph.reset()  # drops the half-made graph; frees its pool once nothing in it is alive
        except Exception:
            pass
        del graph
        message = describe(cause)
        raise CaptureFailed(message) from cause

    def after_failure(self) -> None:
        """Once the failed capture's exception is gone: free what its frames held in the pool."""
        gc.collect()
        torch.cuda.empty_cache()


class SimulatedGraphs:
    """CPU stand-in with the same contract: capturing runs the body once, as a real capture runs
    its Python (the caller undoes its effects, as it undoes a failed capture's), so a step that
    fails part-way through a capture fails here too; each replay runs the body.

    Counts captures, so tests can see when the step would capture again.
    """

    name = "simulated"

    def __init__(self):
        self.captured: list[tuple] = []

    def side_stream(self):
        return nullcontext()

    def capture(self, body, reset):
        reset()
        body()  # the Python a real capture runs (its effects are undone by the caller), so it can fail here
        self.captured.append(None)

        def replay():
            reset()  # a replayed backward writes fresh gradients; it never accumulates
            return body()

        return replay

    def after_failure(self) -> None:
        pass


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
        reset = lambda: opt.zero_grad(set_to_none=True)  # noqa: E731
        try:
            with self.backend.side_stream():
                for _ in range(self.warmup):
                    reset()
                    body()
            restore(saved, model, opt)  # the capture records on the state a first step starts from
            replay = self.backend.capture(body, reset=reset)
        finally:
            # Also after a failed warm-up or capture (which may have run part of a step): an eager
            # fallback starts clean. After a real capture nothing ran, and this copies equal values.
            restore(saved, model, opt)
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
                # The warm-up's and the capture's changes were undone (restore): no number changes.
                cause = str(err) if isinstance(err, CaptureFailed) else describe(err)
                if not self.fall_back:  # cuda_graphs: on
                    raise graphs_required(f"the CUDA graph capture failed ({cause})") from err
                self.failed = cause
                self.entries.clear()
            if self.failed:  # outside the except: its traceback, and what it held, are gone
                getattr(self.backend, "after_failure", lambda: None)()
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
