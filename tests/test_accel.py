"""The GPU path's settings and bookkeeping, checked on the CPU.

Config keys (``train: {cuda_graphs, precision, deterministic}``) and their errors; the batch
plan (full batches plus one fixed remainder, every image once per epoch); the graph step's
bookkeeping run through a simulated capture backend (captures change no number, one graph per
batch shape, a new capture after an lr change, resume equal to an uninterrupted run); and that a
CPU run at the defaults gives bitwise the numbers of the eager fp32 loop.
"""

import copy
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from kdpipe.config_schema import validate_config as validate  # the YAML schema plus the method registry's part
from kdpipe.errors import InputError

from kdpipe import plan
from kdpipe.models import build_model
from kdpipe.training import accel
from kdpipe.training.classify import Classifier
from kdpipe.training.graphs import (EagerStep, GraphedStep, GraphsRequiredError, SimulatedGraphs, batch_plan,
                                    batch_shapes, restore, signature, snapshot)
from kdpipe.training.loop import Recipe, fit
from kdpipe.training.settings import requested_settings, run_train_block

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
CPU = torch.device("cpu")


# --- config keys ------------------------------------------------------------------------------

def test_defaults_and_yaml_booleans():
    assert requested_settings({}) == {"cuda_graphs": "auto", "precision": "auto", "deterministic": True}
    # YAML 1.1 reads bare on/off as booleans
    assert requested_settings(yaml.safe_load("cuda_graphs: on"))["cuda_graphs"] == "on"
    assert requested_settings(yaml.safe_load("cuda_graphs: off"))["cuda_graphs"] == "off"


@pytest.mark.parametrize("bad, key", [({"cuda_graphs": "maybe"}, "cuda_graphs"), ({"precision": "fp16"}, "precision"),
                                      ({"deterministic": "yes"}, "deterministic")])
def test_bad_values_name_their_key(bad, key):
    with pytest.raises(ValueError, match=f"train.{key}"):
        requested_settings(bad)


def test_resolve_per_device():
    cpu = accel.resolve({}, CPU)
    assert (cpu.cuda_graphs, cpu.precision, cpu.deterministic) == (False, "fp32", True)
    gpu = accel.resolve({}, torch.device("cuda", 0))  # resolving needs no GPU
    assert (gpu.cuda_graphs, gpu.precision) == (True, "bf16")
    assert accel.resolve({"cuda_graphs": "off", "precision": "fp32"}, torch.device("cuda")).as_metrics() == {
        "precision": "fp32", "cuda_graphs": False, "deterministic": True}
    assert accel.resolve({"precision": "bf16"}, CPU).precision == "bf16"  # CPU autocast: allowed
    with pytest.raises(GraphsRequiredError) as caught:  # a kdpipe InputError: the CLI prints one line
        accel.resolve({"cuda_graphs": "on"}, CPU)
    assert str(caught.value) == ("train.cuda_graphs: on, but CUDA graphs need a CUDA device and this job runs on "
                                 "cpu; set train.cuda_graphs: auto (eager fallback) or off")


def _config(overlay: dict | None = None) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for k, v in (overlay or {}).items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def test_schema_accepts_the_keys_and_fills_defaults():
    cfg = _config()
    del cfg["train"]
    cfg["train"] = {}
    validate(cfg, SCHEMA)
    assert cfg["train"] == {"cuda_graphs": "auto", "precision": "auto", "deterministic": True}
    cfg = _config({"train": yaml.safe_load("{cuda_graphs: off, precision: fp32, deterministic: false}")})
    validate(cfg, SCHEMA)


@pytest.mark.parametrize("overlay, key", [
    ({"train": {"cuda_graphs": "sometimes"}}, "cuda_graphs"),
    ({"train": {"precision": "fp16"}}, "precision"),
    ({"train": {"deterministic": "yes"}}, "deterministic"),
    ({"train": {"graphs": "on"}}, "graphs"),
])
def test_schema_rejects_bad_values(overlay, key):
    with pytest.raises(Exception, match=key):
        validate(_config(overlay), SCHEMA)


def test_every_run_config_carries_the_settings():
    cfg = _config({"train": {"precision": "fp32"}})
    cfg["classify"]["teacher_train"] = {**cfg["classify"]["teacher_train"], "cuda_graphs": False}
    runs = plan.training_runs(cfg)
    assert runs
    for (family, name), run in runs.items():
        assert run["train"]["precision"] == "fp32"
        assert run["train"]["deterministic"] is True
        expected = "off" if run.get("role") == "teacher" else "auto"  # a recipe's own value wins
        assert run["train"]["cuda_graphs"] == expected, name
    assert run_train_block({}, {"epochs": 1}) == {"epochs": 1, **requested_settings({})}


# --- the batch plan -------------------------------------------------------------------------

@pytest.mark.parametrize("n, b", [(100, 32), (96, 32), (5, 8), (0, 4), (2975, 8), (50000, 64)])
def test_batch_plan_covers_every_item_once_in_at_most_two_shapes(n, b):
    spans = batch_plan(n, b)
    seen = [i for start, stop in spans for i in range(start, stop)]
    assert seen == list(range(n))
    sizes = [stop - start for start, stop in spans]
    assert all(s == b for s in sizes[:-1])
    expected = [] if n == 0 else sorted({min(b, n)} | ({n % b} if n > b and n % b else set()), reverse=True)
    assert batch_shapes(n, b) == expected


def test_signature_tells_layouts_apart():
    x = torch.zeros(4, 3, 8, 8)
    assert signature((x,)) != signature((x.contiguous(memory_format=torch.channels_last),))
    assert signature((x, torch.zeros(4))) == signature((torch.ones(4, 3, 8, 8), torch.ones(4)))
    assert signature((x[:2],)) != signature((x,))


# --- the graph step's bookkeeping, on a simulated backend ---------------------------------------

def tiny_data(n=100, classes=10, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def classifier(method="alone", teacher=None, seed=0, batch_size=32):
    x, y = tiny_data()
    torch.manual_seed(seed)
    return Classifier(build_model("resnet8", 10), (x, y), (x[:40], y[:40]), method=method, batch_size=batch_size,
                      device=CPU, teacher=teacher, kd={"temperature": 4, "alpha": 0.9})


def teacher_model():
    torch.manual_seed(123)
    return build_model("resnet8", 10)


RECIPE = {"epochs": 3, "batch_size": 32, "lr": 0.05, "lr_milestones": [2]}
ADAM = {"epochs": 3, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "betas": [0.5, 0.999], "weight_decay": 0,
        "lr_milestones": [1]}


def train(tmp_path, family, recipe, settings=None, backend=None, name="run"):
    cfg = {"run": name, "train": {**recipe, **(settings or {})}}
    out = fit(family, Recipe.from_dict(cfg["train"]), seed=0, device=CPU, resume_path=tmp_path / f"{name}.pt",
              run_config=cfg, graph_backend=backend)
    return {k: v.clone() for k, v in family.model.state_dict().items()}, out


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same(a, b):
    (wa, oa), (wb, ob) = a, b
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert without_seconds(oa.history) == without_seconds(ob.history)


def test_cpu_defaults_are_the_eager_fp32_loop_bitwise(tmp_path):
    """Issue 11 item 5: at the defaults a CPU run is the loop of before, bit for bit."""
    default = train(tmp_path, classifier(), RECIPE, name="default")
    forced = train(tmp_path, classifier(), RECIPE, {"cuda_graphs": "off", "precision": "fp32"}, name="forced")
    assert_same(default, forced)
    assert default[1].settings == {"precision": "fp32", "cuda_graphs": False, "deterministic": True,
                                   "graph_captures": 0}


@pytest.mark.parametrize("family, recipe", [("alone", RECIPE), ("kd_soft", RECIPE), ("kd_hard", ADAM)])
def test_simulated_graphs_change_no_number(tmp_path, family, recipe):
    """Warm-ups undone, static buffers, one graph per shape, re-capture after an lr change: the
    graph bookkeeping gives bitwise the eager run's weights and history (SGD and Adam, KD teacher)."""
    teacher = teacher_model() if family != "alone" else None
    eager = train(tmp_path, classifier(family, teacher), recipe, name="eager")
    backend = SimulatedGraphs()
    graphed = train(tmp_path, classifier(family, copy.deepcopy(teacher)), recipe, backend=backend, name="graphed")
    assert_same(eager, graphed)
    # 100 images in batches of 32: a full shape and a remainder of 4, captured again after the lr milestone
    assert len(backend.captured) == 2 * 2
    assert graphed[1].settings["graph_captures"] == 4


def test_warmup_and_restore_leave_no_trace():
    fam = classifier()
    opt = Recipe.from_dict(RECIPE).make_optimizer(fam.model.parameters())
    EagerStep(fam, opt)(next(iter(fam.train_batches(torch.Generator().manual_seed(0)))))  # momentum exists
    before = copy.deepcopy((fam.model.state_dict(), opt.state_dict()))
    saved = snapshot(fam.model, opt)
    for batch in fam.train_batches(torch.Generator().manual_seed(1)):
        EagerStep(fam, opt)(batch)
    restore(saved, fam.model, opt)
    after = (fam.model.state_dict(), opt.state_dict())
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k
    for p, st in before[1]["state"].items():
        assert torch.equal(st["momentum_buffer"], after[1]["state"][p]["momentum_buffer"])


def test_extra_shapes_run_eagerly_beyond_the_cap():
    fam = classifier(batch_size=7)  # 100 = 14 x 7 + 2
    opt = Recipe.from_dict(RECIPE).make_optimizer(fam.model.parameters())
    backend = SimulatedGraphs()
    step = GraphedStep(fam, opt, backend=backend, max_graphs=1, warmup=1)
    step.set_lr(0.05)
    for batch in fam.train_batches(torch.Generator().manual_seed(0)):
        step(batch)
    assert step.captures == 1  # the remainder ran eagerly


class KilledAt(Exception):
    pass


class Dies(Classifier):
    """Stands for a SIGKILL between epochs: the checkpoint of ``die_at`` epochs is on disk."""

    die_at = None

    def train_batches(self, generator):
        if self.die_at is not None and self._epochs == self.die_at:
            raise KilledAt
        self._epochs += 1
        yield from super().train_batches(generator)


def dies(die_at=None):
    x, y = tiny_data()
    torch.manual_seed(0)
    fam = Dies(build_model("resnet8", 10), (x, y), (x[:40], y[:40]), method="alone", batch_size=32, device=CPU)
    fam._epochs, fam.die_at = 0, die_at
    return fam


def test_resume_with_graphs_equals_uninterrupted(tmp_path):
    """A resumed run captures again: it must still continue exactly where the straight run was."""
    recipe = {**RECIPE, "epochs": 4, "lr_milestones": [3]}
    straight = train(tmp_path, dies(), recipe, backend=SimulatedGraphs(), name="straight")
    with pytest.raises(KilledAt):
        train(tmp_path, dies(die_at=2), recipe, backend=SimulatedGraphs(), name="killed")
    resumed = train(tmp_path, dies(), recipe, backend=SimulatedGraphs(), name="killed")
    assert resumed[1].resumed_from_epoch == 2
    assert_same(straight, resumed)


def test_bf16_on_cpu_stays_close_to_fp32(tmp_path):
    fp32 = train(tmp_path, classifier("kd_soft", teacher_model()), RECIPE, {"precision": "fp32"}, name="fp32")
    bf16 = train(tmp_path, classifier("kd_soft", teacher_model()), RECIPE, {"precision": "bf16"}, name="bf16")
    assert bf16[1].settings["precision"] == "bf16"
    for a, b in zip(fp32[1].history, bf16[1].history):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)
    # the loss terms reached the loss as float32, and the model's weights stay float32
    assert all(v.dtype == torch.float32 for v in bf16[0].values() if v.is_floating_point())


def test_float32_outputs_hook_is_removed_after_the_run(tmp_path):
    fam = classifier()
    train(tmp_path, fam, RECIPE, {"precision": "bf16"}, name="hooks")
    assert not fam.model._forward_hooks


def test_graphs_on_for_a_cpu_job_stops_it(tmp_path):
    with pytest.raises(GraphsRequiredError, match="need a CUDA device"):
        train(tmp_path, classifier(), RECIPE, {"cuda_graphs": "on"}, name="on")


def test_cublas_workspace_set_only_when_deterministic(monkeypatch):
    monkeypatch.delenv(accel.CUBLAS_ENV, raising=False)
    accel.prepare_environment({"deterministic": False})
    import os

    assert accel.CUBLAS_ENV not in os.environ
    accel.prepare_environment({})
    assert os.environ[accel.CUBLAS_ENV] == ":4096:8"
    monkeypatch.setenv(accel.CUBLAS_ENV, ":16:8")
    accel.prepare_environment({})
    assert os.environ[accel.CUBLAS_ENV] == ":16:8"


def test_determinism_switches_leave_the_cpu_alone():
    before = torch.are_deterministic_algorithms_enabled()
    accel.apply_determinism(accel.resolve({}, CPU), CPU)
    assert torch.are_deterministic_algorithms_enabled() == before


# --- the report's jobs appendix says how each training job ran ---------------------------------

def test_jobs_table_and_appendix_show_precision_and_graphs(tmp_path):
    import json

    from matplotlib.backends.backend_pdf import PdfPages

    from kdpipe.report.jobs import jobs_appendix
    from kdpipe.tables.jobs import jobs_table

    bench = tmp_path / "train"
    bench.mkdir()
    metrics = []
    for run, extra in (("new", {"precision": "bf16", "cuda_graphs": True}), ("old", {})):
        (bench / f"d-classify-{run}.tsv").write_text("s\tmax_rss\tcpu_time\n1.0\t100\t0.9\n")
        m = tmp_path / f"{run}.json"
        m.write_text(json.dumps({"config": {"dataset": "d"}, "family": "classify", "run": run, "seed": 0,
                                 "best": {}, "last": {}, "device": "cuda:0 (NVIDIA H100)", **extra}))
        metrics.append(m)
    table = jobs_table(sorted(bench.iterdir()), metrics, out_csv=tmp_path / "jobs.csv").set_index("job")
    assert table.loc["d-classify-new", ["precision", "cuda_graphs"]].tolist() == ["bf16", "yes"]
    assert table.loc["d-classify-old", ["precision", "cuda_graphs"]].tolist() == ["fp32", "no"]
    with PdfPages(tmp_path / "a.pdf") as pdf:
        jobs_appendix(pdf, table.reset_index())
    assert (tmp_path / "a.pdf").stat().st_size > 0


class EpochWeighted(Classifier):
    """A loss that reads the epoch as a Python number (as a DKD warm-up weight would), and does not
    say what of it matters (no graph_key): the step can only capture again every epoch."""

    epoch = 0
    graph_key = None

    def loss(self, batch):
        total, terms = super().loss(batch)
        return total * min((self.epoch + 1) / 2, 1.0), terms


def test_a_loss_that_depends_on_the_epoch_is_captured_again(tmp_path):
    x, y = tiny_data()

    def fam():
        torch.manual_seed(0)
        return EpochWeighted(build_model("resnet8", 10), (x, y), (x[:40], y[:40]), method="alone", batch_size=32,
                             device=CPU)

    recipe = {**RECIPE, "lr_milestones": []}
    eager = train(tmp_path, fam(), recipe, name="eager")
    backend = SimulatedGraphs()
    graphed = train(tmp_path, fam(), recipe, backend=backend, name="graphed")
    assert_same(eager, graphed)
    assert len(backend.captured) == 2 * 3  # two shapes, every epoch (no graph_key to say better)

    class Keyed(EpochWeighted):
        def graph_key(self):
            return min((self.epoch + 1) / 2, 1.0)

    keyed = Keyed(build_model("resnet8", 10), (x, y), (x[:40], y[:40]), method="alone", batch_size=32, device=CPU)
    backend = SimulatedGraphs()
    train(tmp_path, keyed, recipe, backend=backend, name="keyed")
    assert len(backend.captured) == 2 * 2  # the weight changes once: epochs 0 | 1, 2


class FailingBackend(SimulatedGraphs):
    def capture(self, body, reset):
        raise RuntimeError("capture refused")


def test_auto_falls_back_to_eager_when_a_capture_fails_and_on_raises(tmp_path, monkeypatch):
    """cuda_graphs: auto keeps training eagerly (same numbers), and says so; on stops the run."""
    fam = classifier()
    opt = Recipe.from_dict(RECIPE).make_optimizer(fam.model.parameters())
    on = GraphedStep(fam, opt, backend=FailingBackend(), fall_back=False)
    on.set_lr(0.05)
    with pytest.raises(GraphsRequiredError) as caught:  # a kdpipe InputError, so the CLI prints one line
        on(next(iter(fam.train_batches(torch.Generator().manual_seed(0)))))
    assert isinstance(caught.value, InputError)
    assert str(caught.value).startswith("train.cuda_graphs: on, but the CUDA graph capture failed (RuntimeError: "
                                        "capture refused (at ")  # the cause, where it was raised
    assert str(caught.value).endswith("; set train.cuda_graphs: auto (eager fallback) or off")
    assert str(caught.value).count("\n") == 0

    eager = train(tmp_path, classifier(), RECIPE, name="eager")
    import kdpipe.training.loop as loop

    monkeypatch.setattr(loop, "make_step", lambda family, optimizer, acc, device, autocast, backend=None:
                        GraphedStep(family, optimizer, autocast, backend=FailingBackend(), fall_back=True))
    fell_back = train(tmp_path, classifier(), RECIPE, name="fell-back")
    assert_same(eager, fell_back)
    assert fell_back[1].settings["cuda_graphs"] is False
    assert "capture refused" in fell_back[1].settings["cuda_graphs_error"]


def _cli_run(tmp_path, cuda_graphs: str) -> list[str]:
    """``kdpipe train`` arguments for a 1-epoch resnet8 run on 8 random 32 x 32 images, on the CPU."""
    import json

    from kdpipe.data.prepared import save_split

    x, y = tiny_data(n=8, size=32)
    for split in ("train", "test"):
        save_split(tmp_path / f"{split}.pt", x, y, [str(i) for i in range(10)])
    run = next(r for (family, _), r in plan.training_runs(_config()).items()
               if family == "classify" and r["method"] == "alone")
    run = {**run, "arch": "resnet8", "device": "cpu", "augment": False, "run": "graphs-on",
           "train": {**run["train"], "epochs": 1, "batch_size": 4, "lr_milestones": [], "cuda_graphs": cuda_graphs}}
    out = tmp_path / "run"
    return ["train", "--run-config", json.dumps(run), "--train", str(tmp_path / "train.pt"),
            "--test", str(tmp_path / "test.pt"), "--model", str(out / "model.pt"), "--metrics",
            str(out / "metrics.json"), "--history", str(out / "history.csv"), "--resume", str(out / "resume.pt")]


def test_kdpipe_train_with_graphs_on_stops_on_one_line(tmp_path, capsys, monkeypatch):
    """cuda_graphs: on that cannot be honoured (a CPU job; a capture that fails) ends `kdpipe train`
    with one `kdpipe:` line naming the cause and the setting, not a traceback."""
    from kdpipe import cli

    assert cli.main(_cli_run(tmp_path, "on")) == 1
    assert capsys.readouterr().err == ("kdpipe: train.cuda_graphs: on, but CUDA graphs need a CUDA device and this "
                                       "job runs on cpu; set train.cuda_graphs: auto (eager fallback) or off\n")

    import kdpipe.training.loop as loop

    monkeypatch.setattr(loop, "make_step", lambda family, optimizer, acc, device, autocast, backend=None:
                        GraphedStep(family, optimizer, autocast, backend=FailingBackend(), fall_back=False))
    assert cli.main(_cli_run(tmp_path, "off")) == 1  # off resolves on the CPU; the backend stands in for on
    err = capsys.readouterr().err
    line = err.split("\r")[-1]  # after the epoch's progress bar, which redraws its line with \r
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert line.startswith("kdpipe: train.cuda_graphs: on, but the CUDA graph capture failed (RuntimeError: "
                           "capture refused (at kdpipe/training/graphs.py:")
    assert line.endswith("; set train.cuda_graphs: auto (eager fallback) or off\n"), line


# --- a failed capture leaves the process clean (issue 15 item 2) --------------------------------

class FailsOnCall(Classifier):
    """Its loss runs the forward (train-mode BatchNorm updates its running statistics) and then
    raises on call ``fail_at``: a step that fails part-way through."""

    fail_at = None

    def loss(self, batch):
        self.calls = getattr(self, "calls", 0) + 1
        total, terms = super().loss(batch)
        if self.calls == self.fail_at:
            raise RuntimeError("operation not permitted when stream is capturing")
        return total, terms


class CaptureEndFails(SimulatedGraphs):
    """Runs the whole step (weights, momentum and BatchNorm move) and then fails, as capture_end does."""

    def capture(self, body, reset):
        super().capture(body, reset)
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")


def _graphed(monkeypatch, chosen):
    import kdpipe.training.loop as loop

    monkeypatch.setattr(loop, "make_step", lambda family, optimizer, acc, device, autocast, backend=None:
                        GraphedStep(family, optimizer, autocast, backend=chosen, fall_back=True))


@pytest.mark.parametrize("recipe", [RECIPE, ADAM])
def test_a_capture_that_fails_part_way_changes_no_number(tmp_path, monkeypatch, recipe):
    """The loss fails on its 4th call: after the 3 warm-ups, inside the (simulated) capture, after
    the forward moved BatchNorm's statistics. The run continues eagerly with the eager run's numbers
    and metrics.json's settings name the first cause."""
    eager = train(tmp_path, classifier(), recipe, name="eager")
    _graphed(monkeypatch, SimulatedGraphs())
    x, y = tiny_data()
    torch.manual_seed(0)
    fam = FailsOnCall(build_model("resnet8", 10), (x, y), (x[:40], y[:40]), method="alone", batch_size=32,
                      device=CPU, kd={"temperature": 4, "alpha": 0.9})
    fam.fail_at = 4
    failed = train(tmp_path, fam, recipe, name="failed")
    assert fam.calls > 4  # it did go on, eagerly
    assert_same(eager, failed)
    assert failed[1].settings["cuda_graphs"] is False
    assert failed[1].settings["cuda_graphs_error"].startswith(
        "RuntimeError: operation not permitted when stream is capturing (at kdpipe/training/graphs.py:")


def test_a_capture_that_fails_after_the_whole_step_changes_no_number(tmp_path, monkeypatch):
    eager = train(tmp_path, classifier("kd_soft", teacher_model()), RECIPE, name="eager")
    _graphed(monkeypatch, CaptureEndFails())
    failed = train(tmp_path, classifier("kd_soft", teacher_model()), RECIPE, name="failed")
    assert_same(eager, failed)
    assert "operation failed due to a previous error" in failed[1].settings["cuda_graphs_error"]


def test_describe_names_the_innermost_kdpipe_line():
    from kdpipe.training.graphs import describe

    try:
        batch_plan(-1, 4)
    except ValueError as err:
        text = describe(err)
    assert text.startswith("ValueError: need n >= 0 and batch_size >= 1; got n=-1, batch_size=4 (at "
                           "kdpipe/training/graphs.py:")
    assert text.endswith(" in batch_plan)")


class FakeCuda:
    """Just enough of torch.cuda for CudaGraphs on a machine without a GPU: streams, a graph whose
    capture_end fails like an invalidated capture's, and the allocator's pool calls, all recorded."""

    def __init__(self, monkeypatch, end_fails=True, pool_calls=("_cuda_endAllocateToPool", "_cuda_releasePool")):
        import torch._C

        self.calls, self.mode = [], 0
        fake = self

        class Stream:
            def __init__(self, device=None):
                pass

            def wait_stream(self, other):
                pass

        self.main = self.current = Stream()

        class Graph:
            def capture_begin(self, pool=None):
                fake.calls.append(("capture_begin", pool))

            def capture_end(self):
                fake.calls.append(("capture_end", fake.current is fake.side))
                if end_fails:
                    raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

            def reset(self):
                fake.calls.append(("graph.reset",))

            def replay(self):
                fake.calls.append(("replay",))

        @contextmanager
        def stream(s):
            before, self.current = self.current, s
            try:
                yield
            finally:
                self.current = before

        def set_mode(mode):
            self.mode = {"default": 0, "warn": 1, "error": 2}.get(mode, mode)

        def record(name):
            return lambda *args: self.calls.append((name, *args))

        for name, value in {"Stream": Stream, "CUDAGraph": Graph, "stream": stream,
                            "current_stream": lambda device=None: self.current,
                            "synchronize": lambda device=None: None, "empty_cache": lambda: None,
                            "graph_pool_handle": lambda: (0, 7), "current_device": lambda: 0,
                            "get_sync_debug_mode": lambda: self.mode, "set_sync_debug_mode": set_mode}.items():
            monkeypatch.setattr(torch.cuda, name, value)
        for name in ("_cuda_endAllocateToPool", "_cuda_releasePool"):  # private: a build may lack them
            if name in pool_calls:
                monkeypatch.setattr(torch._C, name, record(name.removeprefix("_cuda_")), raising=False)
            else:
                monkeypatch.delattr(torch._C, name, raising=False)
        from kdpipe.training.graphs import CudaGraphs

        self.backend = CudaGraphs(torch.device("cuda", 0))
        self.side = self.backend.stream


def test_cuda_backend_failed_capture_reports_the_first_cause_and_cleans_up(monkeypatch):
    from kdpipe.training.graphs import CaptureFailed

    cuda = FakeCuda(monkeypatch)
    resets = []

    def body():
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")

    with pytest.raises(CaptureFailed) as caught:
        cuda.backend.capture(body, reset=lambda: resets.append(1))
    assert str(caught.value).startswith("RuntimeError: CUDA error: operation not permitted when stream is capturing")
    assert "previous error" not in str(caught.value)
    assert cuda.current is cuda.main  # the previous stream is current again
    assert cuda.calls == [("capture_begin", (0, 7)), ("capture_end", True),  # ended on the capture stream
                          ("endAllocateToPool", 0, (0, 7)), ("releasePool", 0, (0, 7)), ("graph.reset",)]
    assert len(resets) == 2  # gradients dropped before the capture and after it failed


@pytest.mark.parametrize("present", [(), ("_cuda_endAllocateToPool",)])
def test_a_torch_without_the_private_pool_calls_still_reports_the_first_cause(monkeypatch, present):
    """torch._C's allocator-pool functions are private; where a build lacks one, the cleanup skips
    it and the failed capture still names its first cause, not an AttributeError."""
    from kdpipe.training.graphs import CaptureFailed

    cuda = FakeCuda(monkeypatch, pool_calls=present)

    def body():
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    with pytest.raises(CaptureFailed) as caught:
        cuda.backend.capture(body, reset=lambda: None)
    assert str(caught.value).startswith("RuntimeError: CUDA error: operation not permitted when stream is capturing")
    assert cuda.current is cuda.main
    ended = [("endAllocateToPool", 0, (0, 7))] if present else []  # no release without its end call
    assert cuda.calls == [("capture_begin", (0, 7)), ("capture_end", True), *ended, ("graph.reset",)]


def test_cuda_backend_successful_capture_and_warmup_sync_mode(monkeypatch):
    cuda = FakeCuda(monkeypatch, end_fails=False)
    seen = []
    replay = cuda.backend.capture(lambda: seen.append(cuda.current is cuda.side) or "outputs", reset=lambda: None)
    assert cuda.current is cuda.main and seen == [True]
    assert replay() == "outputs"
    assert cuda.calls == [("capture_begin", (0, 7)), ("capture_end", True), ("replay",)]  # the pool stays the graph's
    # warm-ups: on the side stream with host syncs an error; the previous mode and stream come back, also after a failure
    cuda.mode = 1
    with pytest.raises(KeyError):
        with cuda.backend.side_stream():
            seen.append((cuda.current is cuda.side, cuda.mode))
            raise KeyError("boom")
    assert seen[-1] == (True, 2)
    assert (cuda.current, cuda.mode) == (cuda.main, 1)


# --- fill_uninitialized_memory (issue 15 item 9) ----------------------------------------------------

def test_deterministic_cuda_turns_off_fill_uninitialized_memory():
    import torch.utils.deterministic as switch

    saved = (torch.are_deterministic_algorithms_enabled(), switch.fill_uninitialized_memory,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        switch.fill_uninitialized_memory = True
        accel.apply_determinism(accel.resolve({}, torch.device("cuda")), torch.device("cuda"))  # needs no GPU
        assert torch.are_deterministic_algorithms_enabled()
        assert switch.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(saved[0])
        switch.fill_uninitialized_memory = saved[1]
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]
