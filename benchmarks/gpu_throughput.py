"""Training throughput on one GPU: plain eager PyTorch against kdpipe's step, and GPU sharing.

    PYTHONPATH=src python -u benchmarks/gpu_throughput.py [--budget 240] [--models resnet20,resnet56]
        [--procs 1,2,4] [--seconds 3] [--summary out.json] [--dry-run]

For each model (in this order, as long as the time budget lasts: resnet20 and resnet56 at CIFAR-100
shapes, batch 64, then the processes sharing one GPU, then resnet8x4, resnet32x4, the multi-exit
ResNet-18 (BYOT, batch 128) and the autoencoder pair at 256 x 256, batch 8), images per second of:

* a plain eager PyTorch step (channels-last, SGD or Adam, one loss; batches made beforehand),
* kdpipe's step (the family's own batches: shuffling and augmentation on the GPU, its full loss)
  eager fp32, CUDA graphs fp32, CUDA graphs bf16 (kdpipe's default on a GPU), and graphs bf16 with
  ``deterministic: false``,
* the evaluation pass (fp32, as the training loop runs it),

each with its ratio to the plain eager step and, where the issue sets one, its target (resnet20:
>= 27,000 images/s and >= 3.5x the plain eager step; resnet56: >= 3x). For the KD pairs, a KD-soft
student's step against the same student alone plus one teacher forward per batch (target: no
slower). Then 1, 2 and 4 processes sharing the GPU, each running kdpipe's default step on the
first model: all start together and stop at one common deadline, and only steps finished before
it count, so the total is what the GPU gives that many jobs at once (KDPIPE_JOBS_PER_GPU, docs/gpu.md).

Every measurement is printed (and flushed) as one line when it is taken, and ``--summary`` gets it
at once (atomically rewritten JSON); a run cut off by a time limit keeps what it measured.
Each measurement runs for ``--min-seconds`` after a warm-up pass (captures, cuDNN/cuBLAS set-up).
Data are random tensors of the real shapes. Without a CUDA GPU it says so and exits 0;
``--dry-run`` (or KDPIPE_GPU_CHECK_DRY_RUN=1) runs every stage on the CPU at toy size instead
(simulated graphs, figures meaningless): what CI runs to test this script's plumbing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import check_summary  # noqa: E402
from kdpipe.training import accel  # noqa: E402

# name: (kind, arch, batch size, training images per pass)
MODELS = {
    "resnet20": ("classify", "resnet20", 64, 64 * 100),
    "resnet56": ("classify", "resnet56", 64, 64 * 100),
    "resnet8x4": ("classify", "resnet8x4", 64, 64 * 100),
    "resnet32x4": ("classify", "resnet32x4", 64, 64 * 100),
    "multi_exit_resnet18": ("self_distill", "resnet18", 128, 128 * 40),
    "ae_pair_256": ("autoencoder", None, 8, 8 * 60),
}
SHARING_AFTER = 2  # the sharing measurement runs after this many models (those with targets)
DRY_RUN_IMAGES = {"classify": 32, "self_distill": 32, "autoencoder": 8}  # toy passes on the CPU
DRY_RUN_BATCH = {"classify": 16, "self_distill": 16, "autoencoder": 4}


def model_spec(name: str, device) -> tuple:
    """(kind, arch, batch size, images per pass): the real ones on a GPU, toy ones in a dry run."""
    kind, arch, batch, images = MODELS[name]
    return (kind, arch, batch, images) if device.type == "cuda" else (kind, arch, DRY_RUN_BATCH[kind],
                                                                       DRY_RUN_IMAGES[kind])


def shapes(device) -> dict:
    """Widths and image size of the BYOT network and the autoencoder pair: the paper's on a GPU,
    toy ones in a dry run (the CPU would take minutes per autoencoder step at 256 x 256)."""
    return {"multi_exit_width": 64, "ae_width": 32, "ae_size": 256} if device.type == "cuda" else \
        {"multi_exit_width": 8, "ae_width": 8, "ae_size": 32}
KD_PAIRS = {"resnet20": "resnet56", "resnet8x4": "resnet32x4"}
VARIANTS = {  # name: (cuda graphs, precision, deterministic)
    "eager fp32": (False, "fp32", True),
    "graphs fp32": (True, "fp32", True),
    "graphs bf16": (True, "bf16", True),  # kdpipe's default on a GPU
    "graphs bf16 nondet": (True, "bf16", False),  # last: cuDNN benchmark mode stays on afterwards
}
DEFAULT_STEP = "graphs bf16"
# The targets for kdpipe's default step (images/s at batch 64, ratio to the plain eager step)
TARGETS = {"resnet20": {"images_per_s": 27_000, "ratio": 3.5}, "resnet56": {"ratio": 3.0}}
AE_VARIANT = {"name": "e1d4_e2d3_maxpool", "order": 0, "pairs": [[1, 4], [2, 3]], "adapter": "maxpool", "alpha": 0.5,
              "match": "formula", "norm": "l1"}
DRY_RUN_ENV = "KDPIPE_GPU_CHECK_DRY_RUN"


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def empty_cache():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def say(text: str) -> None:
    print(text, flush=True)


def build_family(name: str, device, n: int | None = None, method: str = "alone", teacher_arch: str | None = None):
    """A kdpipe family on random data of the model's real shapes, and its optimiser recipe."""
    from kdpipe.training.loop import Recipe

    kind, arch, batch, images = model_spec(name, device)
    n = n or images
    g = torch.Generator(device=device).manual_seed(0)
    if kind in ("classify", "self_distill"):
        from kdpipe.models import build_model
        from kdpipe.training.classify import Classifier

        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
        y = torch.randint(0, 100, (n,), device=device, generator=g)
        test = (x[: min(n, 2000)], y[: min(n, 2000)])
        if kind == "classify":
            teacher = None
            if teacher_arch:
                teacher = build_model(teacher_arch, 100).to(device, memory_format=torch.channels_last)
            family = Classifier(build_model(arch, 100), (x, y), test, method=method, batch_size=batch, device=device,
                                teacher=teacher, kd={"temperature": 4, "alpha": 0.9})
        else:
            from kdpipe.training.self_distill import MultiExitClassifier, build_multi_exit

            family = MultiExitClassifier(build_multi_exit(arch, 100, shapes(device)["multi_exit_width"]), (x, y), test, method="self_distill",
                                         batch_size=batch, device=device,
                                         kd={"temperature": 3, "alpha": 0.3, "lam": 0.03, "detach_teacher": True})
        return family, Recipe(epochs=1, batch_size=batch, lr=0.05)
    from kdpipe.models.autoencoder import build_pair
    from kdpipe.training.ae_pair import AutoEncoderPairFamily

    def pairs(count):
        size = shapes(device)["ae_size"]
        photos = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, device=device, generator=g)
        labels = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, device=device, generator=g)
        ids = torch.randint(0, 19, (count, size, size), dtype=torch.uint8, device=device, generator=g)
        return {"photos": photos, "labels_rgb": labels, "label_ids": ids}

    model = build_pair({"width": shapes(device)["ae_width"], "variant": AE_VARIANT})
    family = AutoEncoderPairFamily(model, pairs(n), pairs(100), batch_size=batch, alpha=0.5, norm="l1", augment=True,
                                   device=device)
    return family, Recipe(epochs=1, batch_size=batch, lr=2e-4, optimizer="adam", betas=(0.5, 0.999), weight_decay=0)


class Runner:
    """kdpipe's step for one family and variant, as the training loop drives it."""

    def __init__(self, family, recipe, variant, device):
        from kdpipe.training.graphs import SimulatedGraphs, make_step

        graphs, precision, deterministic = VARIANTS[variant]
        if device.type == "cpu":
            precision = "fp32"  # dry run: CPU bf16 autocast is very slow, and tests cover it elsewhere
        self.acc = accel.Accel(cuda_graphs=graphs, precision=precision, deterministic=deterministic,
                               requested=(("cuda_graphs", "on" if graphs else "off"),))
        accel.apply_determinism(self.acc, device)
        self.family, self.device = family, device
        self.optimizer = recipe.make_optimizer(family.model.parameters())
        self.autocast = lambda: accel.autocast(self.acc, device)
        # dry run (this script's own code on a machine without CUDA): simulated graphs
        backend = SimulatedGraphs() if graphs and device.type == "cpu" else None
        self.step = make_step(family, self.optimizer, self.acc, device, autocast=self.autocast, backend=backend)
        self.step.set_lr(recipe.lr)
        self.epoch = 0

    def steps(self):
        """Training steps without end, one pass after another; yields each step's images."""
        self.family.model.train()
        with accel.float32_outputs(self.family, self.acc):
            while True:
                g = torch.Generator(device=self.device).manual_seed(self.epoch)
                self.epoch += 1
                for batch in self.family.train_batches(g):
                    self.step(batch)
                    yield len(batch[0])

    def train_pass(self) -> int:
        self.family.model.train()
        g = torch.Generator(device=self.device).manual_seed(self.epoch)
        self.epoch += 1
        n = 0
        with accel.float32_outputs(self.family, self.acc):
            for batch in self.family.train_batches(g):
                self.step(batch)
                n += len(batch[0])
        return n

    def eval_pass(self) -> int:
        """The evaluation as the training loop runs it: fp32 outside autocast."""
        self.family.model.eval()
        with torch.no_grad(), accel.full_precision(self.device), accel.float32_outputs(self.family, self.acc):
            self.family.evaluate()
        return len(getattr(self.family, "test_y", getattr(self.family, "test_x", [])))


def timed(fn, min_seconds: float) -> float:
    """Images per second of ``fn`` (returns images), called until ``min_seconds`` have passed (at least once)."""
    sync()
    t0 = time.perf_counter()
    images = 0
    while True:
        images += fn()
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return images / elapsed


def plain_eager(name: str, device, steps: int, min_seconds: float) -> float:
    """A plain PyTorch step: channels-last, batches made beforehand, one loss, no augmentation."""
    from kdpipe.models import build_model

    kind, arch, batch, _ = model_spec(name, device)
    torch.use_deterministic_algorithms(False)  # PyTorch's defaults: what "today's eager step" ran with
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False
    if kind == "autoencoder":
        from kdpipe.models.autoencoder import build_pair

        model = build_pair({"width": shapes(device)["ae_width"], "variant": AE_VARIANT}).to(device)
        size = shapes(device)["ae_size"]
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
        x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        y = torch.rand(batch, 3, size, size, device=device) * 2 - 1

        def one():
            o1, o2, _ = model(x, y)
            loss = (o1 - y).abs().mean() + (o2 - x).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        if kind == "self_distill":
            from kdpipe.training.self_distill import build_multi_exit

            model = build_multi_exit(arch, 100, shapes(device)["multi_exit_width"])
        else:
            model = build_model(arch, 100)
        model = model.to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 100, (batch,), device=device)

        def one():
            out = model(x)
            logits = out[0][-1] if kind == "self_distill" else out
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(5 if device.type == "cuda" else 1):
        one()

    def run():
        for _ in range(steps):
            one()
        return steps * batch

    return timed(run, min_seconds)


def teacher_forward(arch: str, device, batch: int, steps: int, precision: str, min_seconds: float) -> float:
    from kdpipe.models import build_model

    model = build_model(arch, 100).to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" and device.type == "cuda" \
        else nullcontext

    def run():
        with torch.no_grad(), ctx():
            for _ in range(steps):
                model(x)
        return steps * batch

    run()
    return timed(run, min_seconds)


class Report:
    """Each measurement printed as one line when taken and put in the JSON summary at once."""

    def __init__(self, summary: Path | None):
        self.summary, self.rows = summary, {}
        check_summary.update(summary, "gpu_throughput", value={"device": device_name(), "torch": torch.__version__,
                                                               "targets": TARGETS, "rows": {}, "finished": False})

    def record(self, model: str, what: str, value: float, text: str) -> None:
        self.rows.setdefault(model, {})[what] = value
        say(f"{model:<22}{what:<24}{text}")
        check_summary.update(self.summary, "gpu_throughput", "rows", model, value=self.rows[model])

    def note(self, key: str, value) -> None:
        check_summary.update(self.summary, "gpu_throughput", key, value=value)


def images_for(name: str, device) -> int:
    return model_spec(name, device)[3]


def verdict(name: str, images_per_s: float, ratio: float) -> str:
    target = TARGETS.get(name)
    if not target:
        return ""
    wanted = [f">= {target['images_per_s']:,} images/s" if "images_per_s" in target else "",
              f">= {target['ratio']}x" if "ratio" in target else ""]
    met = images_per_s >= target.get("images_per_s", 0) and ratio >= target.get("ratio", 0)
    return f"  target {' and '.join(w for w in wanted if w)}: {'MET' if met else 'MISSED'}"


def measure_model(name: str, device, report: Report, min_seconds: float, deadline: float) -> None:
    """One model's row, measurement by measurement; stops early (what is done is kept) at ``deadline``."""
    kind, arch, batch, _ = model_spec(name, device)
    n = images_for(name, device)
    plain = plain_eager(name, device, max(1, n // batch), min_seconds)
    report.record(name, "plain eager", plain, f"{plain:>12,.0f} images/s  (batch {batch})")
    for variant in VARIANTS:
        if time.monotonic() > deadline:
            say(f"{name:<22}{'(stopped)':<24}time budget spent: the other variants are not measured")
            break
        family, recipe = build_family(name, device, n)
        r = Runner(family, recipe, variant, device)
        r.train_pass()  # warm-up: captures, cuDNN/cuBLAS set-up
        ips = timed(r.train_pass, min_seconds)
        ratio = ips / plain
        report.record(name, variant, ips, f"{ips:>12,.0f} images/s  {ratio:.2f}x plain eager"
                      + (verdict(name, ips, ratio) if variant == DEFAULT_STEP else ""))
        if variant == DEFAULT_STEP:
            r.eval_pass()
            ev = timed(r.eval_pass, min_seconds)
            report.record(name, "eval (fp32)", ev, f"{ev:>12,.0f} images/s")
        del r, family
        empty_cache()
    accel.apply_determinism(accel.resolve({}, device), device)  # back to the default
    if name in KD_PAIRS and DEFAULT_STEP in report.rows.get(name, {}) and time.monotonic() < deadline:
        teacher = KD_PAIRS[name]
        family, recipe = build_family(name, device, n, method="kd_soft", teacher_arch=teacher)
        r = Runner(family, recipe, DEFAULT_STEP, device)
        r.train_pass()
        kd = timed(r.train_pass, min_seconds)
        fwd = teacher_forward(teacher, device, batch, max(1, n // batch), "bf16", min_seconds)
        alone = report.rows[name][DEFAULT_STEP]
        bound = 1 / (1 / alone + 1 / fwd)  # images/s of "student alone + one teacher forward per batch"
        report.record(name, f"teacher {teacher} fwd", fwd, f"{fwd:>12,.0f} images/s  (bf16, no grad)")
        report.record(name, "kd_soft " + DEFAULT_STEP, kd,
                      f"{kd:>12,.0f} images/s  alone + teacher forward = {bound:,.0f}: KD "
                      f"{'within' if kd >= 0.97 * bound else 'OVER'} (ratio {kd / bound:.2f})")
        del r, family
        empty_cache()


def print_table(rows: dict) -> None:
    cols = ["plain eager", *VARIANTS, "eval (fp32)"]
    say(f"\nimages/s on {device_name()} (torch {torch.__version__}); ratio to the plain eager step")
    say(f"{'model':<22}" + "".join(f"{c:>20}" for c in cols))
    for model, row in rows.items():
        cells = []
        for c in cols:
            v = row.get(c)
            ratio = "" if c in ("plain eager", "eval (fp32)") or not v else f" ({v / row['plain eager']:.2f}x)"
            cells.append(f"{v:,.0f}{ratio}" if v else "-")
        say(f"{model:<22}" + "".join(f"{c:>20}" for c in cells))


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (dry run: figures mean nothing)"


WORKER = "--worker"


def read_json_when_there(path: Path, wait_s: float) -> dict:
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.002)
    raise TimeoutError(f"{path} did not appear within {wait_s:g} s")


def worker(name: str, sync_dir: Path, index: int, device) -> None:
    """One of N processes sharing the GPU: warm up, say so, wait for the common start, count the
    images of the steps that finished before the common deadline."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    accel.apply_determinism(accel.resolve({}, device), device)
    family, recipe = build_family(name, device, images_for(name, device))
    r = Runner(family, recipe, DEFAULT_STEP, device)
    steps = r.steps()
    for _ in range(2 * max(1, images_for(name, device) // model_spec(name, device)[2])):  # warm-up: capture, set-up
        next(steps)
    sync()
    (sync_dir / f"ready-{index}").touch()
    go = read_json_when_there(sync_dir / "go.json", 600)
    start, deadline = go["start"], go["deadline"]
    time.sleep(max(0.0, start - time.time()))
    sync()
    t0 = time.time()
    ends: list[tuple[float, int]] = []  # (when the step ended or its CUDA event, images)
    if device.type == "cuda":
        first = torch.cuda.Event(enable_timing=True)
        first.record()
        while time.time() < deadline:
            images = next(steps)
            done = torch.cuda.Event(enable_timing=True)
            done.record()
            ends.append((done, images))
        sync()
        ends = [(t0 + first.elapsed_time(e) / 1000, images) for e, images in ends]
    else:
        while time.time() < deadline:
            images = next(steps)
            ends.append((time.time(), images))
    counted = sum(images for end, images in ends if end <= deadline)
    print(json.dumps({"images": counted, "window_s": deadline - max(start, t0), "steps": len(ends),
                      "late_steps": sum(end > deadline for end, _ in ends)}), flush=True)


def sharing(name: str, procs: list[int], seconds: float, device, report: Report, deadline: float) -> None:
    """1, 2, 4 ... processes on one GPU, all with one common start and deadline."""
    say(f"\n{name}: {seconds:g}-s window, kdpipe's default step (graphs, bf16); images/s of all processes "
        "together, steps finished before the common deadline only")
    base = None
    for p in procs:
        if time.monotonic() > deadline:
            say(f"sharing: time budget spent, {p} processes not measured")
            break
        with tempfile.TemporaryDirectory(prefix="kdpipe-sharing-") as tmp:
            tmp = Path(tmp)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
            cmd = [sys.executable, "-u", __file__, WORKER, name, str(tmp), device.type]
            ws = [subprocess.Popen(cmd + [str(i)], env=env, stdout=subprocess.PIPE, text=True) for i in range(p)]
            try:
                wait_until = time.monotonic() + 300
                while sum((tmp / f"ready-{i}").exists() for i in range(p)) < p:
                    if time.monotonic() > wait_until or any(w.poll() is not None for w in ws):
                        raise RuntimeError(f"sharing: a worker of {p} failed or hung before the start")
                    time.sleep(0.01)
                start = time.time() + 0.2  # every worker is waiting: they all begin at this instant
                go = tmp / "go.json"
                (tmp / "go.tmp").write_text(json.dumps({"start": start, "deadline": start + seconds}))
                os.replace(tmp / "go.tmp", go)
                outs = [json.loads(w.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1]) for w in ws]
            finally:
                for w in ws:
                    if w.poll() is None:
                        w.kill()
                        w.wait()
        total = sum(o["images"] for o in outs) / seconds
        base = base or total
        report.record(f"sharing {name}", f"{p} process{'es' if p > 1 else ''}", total,
                      f"{total:>12,.0f} images/s  " + (f"{total / base:.2f}x one process " if base else "")
                      + 
                      f"({sum(o['late_steps'] for o in outs)} steps after the deadline not counted)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240,
                        help="seconds this script may take (about): no new measurement starts once it is spent")
    parser.add_argument("--models", default=None, help=f"comma-separated, in order, of {', '.join(MODELS)} (default all)")
    parser.add_argument("--procs", default="1,2,4", help="processes sharing the GPU, e.g. 1,2,4 (empty: skip)")
    parser.add_argument("--seconds", type=float, default=3.0, help="the common window of each sharing measurement")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="each throughput figure is timed this long")
    parser.add_argument("--quick", action="store_true", help="resnet20 only, 1 and 2 processes, a 60-s budget")
    parser.add_argument("--summary", type=Path, default=None, help="JSON file to record each measurement in, as taken")
    parser.add_argument("--dry-run", "--cpu-smoke", dest="dry_run", action="store_true",
                        default=os.environ.get(DRY_RUN_ENV) == "1",
                        help=f"every stage on the CPU at toy size (also {DRY_RUN_ENV}=1); no figure means anything")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        say("gpu_throughput: no CUDA GPU is visible, so nothing was measured; run it on a GPU machine "
            "(PYTHONPATH=src python benchmarks/gpu_throughput.py)")
        check_summary.update(args.summary, "gpu_throughput", value={"device": None, "finished": True, "rows": {},
                                                                   "note": "no CUDA GPU: nothing measured"})
        return 0
    if args.quick:
        args.models, args.procs, args.budget = args.models or "resnet20", "1,2", min(args.budget, 60)
    models = args.models.split(",") if args.models else list(MODELS)
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    procs = [int(p) for p in args.procs.split(",") if p]
    if args.dry_run:
        args.min_seconds, args.seconds = 0.0, 1.0  # a toy step on a busy CPU can take a tenth of a second
    accel.prepare_environment({})  # deterministic cuBLAS workspace, before cuBLAS starts
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    t_start = time.monotonic()
    end = t_start + args.budget
    report = Report(args.summary)
    say(f"gpu_throughput on {device_name()} (torch {torch.__version__}); budget {args.budget:g} s; each figure "
        f"timed >= {args.min_seconds:g} s after a warm-up pass")
    tasks = [("model", m) for m in models[:SHARING_AFTER]] + ([("sharing", models[0])] if procs else []) \
        + [("model", m) for m in models[SHARING_AFTER:]]
    longest = 0.0
    skipped = []
    for kind, name in tasks:
        left = end - time.monotonic()
        # a model costs about what the longest so far did; sharing about its windows plus start-ups
        need = longest if kind == "model" else len(procs) * (args.seconds + (2 if args.dry_run else 15))
        if left <= 0 or need > left:
            skipped.append(f"{kind} {name}")
            say(f"skipped {kind} {name}: {max(left, 0):.0f} s left of the budget, it needs about {need:.0f} s")
            report.note("skipped", skipped)
            continue
        t0 = time.monotonic()
        if kind == "model":
            measure_model(name, device, report, args.min_seconds, end)
            longest = max(longest, time.monotonic() - t0)
        else:
            sharing(name, procs, args.seconds, device, report, end)
    print_table({m: r for m, r in report.rows.items() if m in MODELS})
    report.note("seconds", round(time.monotonic() - t_start, 1))
    report.note("finished", True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        accel.prepare_environment({})
        dev = torch.device("cuda", 0) if sys.argv[4] == "cuda" else torch.device("cpu")
        worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[5]), dev)
        sys.exit(0)
    sys.exit(main())
