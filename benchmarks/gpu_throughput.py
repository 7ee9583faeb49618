"""Training throughput on one GPU: plain eager PyTorch against kdpipe's step, and GPU sharing.

    PYTHONPATH=src python benchmarks/gpu_throughput.py [--quick] [--models resnet20,resnet56] [--procs 1,2,4]

For resnet20, resnet56, resnet8x4, resnet32x4 (CIFAR-100 shapes, batch 64), the multi-exit
ResNet-18 (BYOT, batch 128) and the autoencoder pair at 256 x 256 (batch 8), all in one run on
the same GPU, images per second of:

* a plain eager PyTorch step (channels-last, SGD or Adam, one loss; batches made beforehand),
* kdpipe's step (the family's own batches: shuffling and augmentation on the GPU, its full loss)
  eager fp32, CUDA graphs fp32, CUDA graphs bf16, and graphs bf16 with ``deterministic: false``,
* the evaluation pass, fp32 and bf16,

with each figure's ratio to the plain eager step; for the two KD pairs, a KD-soft student's
step against the same student alone plus one teacher forward per batch; then 1, 2 and 4
processes sharing the GPU, each running kdpipe's default step (graphs, bf16), images/s in all:
what tells you how many jobs per GPU to allow (KDPIPE_JOBS_PER_GPU, README).

Data are random tensors of the real shapes. Without a CUDA GPU it says so and exits 0.
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

from kdpipe.training import accel  # noqa: E402

# name: (kind, arch, batch size, training images per timed pass)
MODELS = {
    "resnet20": ("classify", "resnet20", 64, 64 * 100),
    "resnet56": ("classify", "resnet56", 64, 64 * 100),
    "resnet8x4": ("classify", "resnet8x4", 64, 64 * 100),
    "resnet32x4": ("classify", "resnet32x4", 64, 64 * 100),
    "multi_exit_resnet18": ("self_distill", "resnet18", 128, 128 * 40),
    "ae_pair_256": ("autoencoder", None, 8, 8 * 60),
}
KD_PAIRS = {"resnet20": "resnet56", "resnet8x4": "resnet32x4"}
VARIANTS = {  # name: (cuda graphs, precision, deterministic)
    "eager fp32": (False, "fp32", True),
    "graphs fp32": (True, "fp32", True),
    "graphs bf16": (True, "bf16", True),
    "graphs bf16 nondet": (True, "bf16", False),  # last: cuDNN benchmark mode stays on afterwards
}
AE_VARIANT = {"name": "e1d4_e2d3_maxpool", "order": 0, "pairs": [[1, 4], [2, 3]], "adapter": "maxpool", "alpha": 0.5,
              "match": "formula", "norm": "l1"}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_family(name: str, device, n: int | None = None, method: str = "alone", teacher_arch: str | None = None):
    """A kdpipe family on random data of the model's real shapes, and its optimiser recipe."""
    from kdpipe.training.loop import Recipe

    kind, arch, batch, images = MODELS[name]
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

            family = MultiExitClassifier(build_multi_exit(arch, 100, 64), (x, y), test, method="self_distill",
                                         batch_size=batch, device=device,
                                         kd={"temperature": 3, "alpha": 0.3, "lam": 0.03, "detach_teacher": True})
        return family, Recipe(epochs=1, batch_size=batch, lr=0.05)
    from kdpipe.models.autoencoder import build_pair
    from kdpipe.training.ae_pair import AutoEncoderPairFamily

    def pairs(count):
        photos = torch.randint(0, 256, (count, 3, 256, 256), dtype=torch.uint8, device=device, generator=g)
        labels = torch.randint(0, 256, (count, 3, 256, 256), dtype=torch.uint8, device=device, generator=g)
        ids = torch.randint(0, 19, (count, 256, 256), dtype=torch.uint8, device=device, generator=g)
        return {"photos": photos, "labels_rgb": labels, "label_ids": ids}

    model = build_pair({"width": 32, "variant": AE_VARIANT})
    family = AutoEncoderPairFamily(model, pairs(n), pairs(100), batch_size=batch, alpha=0.5, norm="l1", augment=True,
                                   device=device)
    return family, Recipe(epochs=1, batch_size=batch, lr=2e-4, optimizer="adam", betas=(0.5, 0.999), weight_decay=0)


class Runner:
    """kdpipe's step for one family and variant, as the training loop drives it."""

    def __init__(self, family, recipe, variant, device):
        from kdpipe.training.graphs import SimulatedGraphs, make_step

        graphs, precision, deterministic = VARIANTS[variant]
        if device.type == "cpu":
            precision = "fp32"  # --cpu-smoke: CPU bf16 autocast is very slow, and tests cover it elsewhere
        self.acc = accel.Accel(cuda_graphs=graphs, precision=precision, deterministic=deterministic,
                               requested=(("cuda_graphs", "on" if graphs else "off"),))
        accel.apply_determinism(self.acc, device)
        self.family, self.device = family, device
        self.optimizer = recipe.make_optimizer(family.model.parameters())
        self.autocast = lambda: accel.autocast(self.acc, device)
        # --cpu-smoke (a check of this script's own code on a machine without CUDA): simulated graphs
        backend = SimulatedGraphs() if graphs and device.type == "cpu" else None
        self.step = make_step(family, self.optimizer, self.acc, device, autocast=self.autocast, backend=backend)
        self.step.set_lr(recipe.lr)
        self.epoch = 0

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
        self.family.model.eval()
        with torch.no_grad(), self.autocast(), accel.float32_outputs(self.family, self.acc):
            self.family.evaluate()
        return len(getattr(self.family, "test_y", getattr(self.family, "test_x", [])))


def timed(fn, repeats: int = 1) -> float:
    """Images per second of ``fn`` (returns images); synchronised before and after."""
    sync()
    t0 = time.perf_counter()
    images = sum(fn() for _ in range(repeats))
    sync()
    return images / (time.perf_counter() - t0)


def plain_eager(name: str, device, steps: int) -> float:
    """A plain PyTorch step: channels-last, batches made beforehand, one loss, no augmentation."""
    from kdpipe.models import build_model

    kind, arch, batch, _ = MODELS[name]
    torch.use_deterministic_algorithms(False)  # PyTorch's defaults: what "today's eager step" ran with
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False
    if kind == "autoencoder":
        from kdpipe.models.autoencoder import build_pair

        model = build_pair({"width": 32, "variant": AE_VARIANT}).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
        x = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
        y = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1

        def one():
            o1, o2, _ = model(x, y)
            loss = (o1 - y).abs().mean() + (o2 - x).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        if kind == "self_distill":
            from kdpipe.training.self_distill import build_multi_exit

            model = build_multi_exit(arch, 100, 64)
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

    for _ in range(5):
        one()

    def run():
        for _ in range(steps):
            one()
        return steps * batch

    return timed(run)


def teacher_forward(arch: str, device, steps: int, precision: str) -> float:
    from kdpipe.models import build_model

    model = build_model(arch, 100).to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(64, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" and device.type == "cuda" \
        else nullcontext

    def run():
        with torch.no_grad(), ctx():
            for _ in range(steps):
                model(x)
        return steps * 64

    run()
    return timed(run)


def measure_model(name: str, device, quick: bool) -> dict:
    kind, arch, batch, images = MODELS[name]
    n = SMOKE_IMAGES.get(kind, batch * 2) if device.type == "cpu" else max(batch * 10, images // 10) if quick else images
    row = {"model": name, "batch": batch, "plain eager": plain_eager(name, device, n // batch)}
    for variant in VARIANTS:
        family, recipe = build_family(name, device, n)
        r = Runner(family, recipe, variant, device)
        r.train_pass()  # warm-up: captures, cuDNN/cuBLAS set-up
        row[variant] = timed(r.train_pass, repeats=1 if quick else 2)
        if variant in ("eager fp32", "graphs bf16"):
            r.eval_pass()
            row[f"eval {variant.split()[-1]}"] = timed(r.eval_pass)
        del r, family
        empty_cache()
    accel.apply_determinism(accel.resolve({}, device), device)  # back to the default
    if name in KD_PAIRS:
        teacher = KD_PAIRS[name]
        family, recipe = build_family(name, device, n, method="kd_soft", teacher_arch=teacher)
        r = Runner(family, recipe, "graphs bf16", device)
        r.train_pass()
        row["kd_soft graphs bf16"] = timed(r.train_pass, repeats=1 if quick else 2)
        row["teacher forward bf16"] = teacher_forward(teacher, device, n // batch, "bf16")
        del r, family
        empty_cache()
    return row


def print_rows(rows: list[dict]) -> None:
    print(f"\nimages/s on {device_name()} (torch {torch.__version__}); ratio to the plain eager step")
    cols = ["plain eager", *VARIANTS, "eval fp32", "eval bf16"]
    print(f"{'model':<22}{'batch':>6}" + "".join(f"{c:>22}" for c in cols))
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            ratio = "" if c == "plain eager" or c.startswith("eval") else f" ({v / row['plain eager']:.2f}x)"
            cells.append(f"{v:,.0f}{ratio}" if v else "-")
        print(f"{row['model']:<22}{row['batch']:>6}" + "".join(f"{c:>22}" for c in cells))
    for row in rows:
        if "kd_soft graphs bf16" in row:
            alone, kd, fwd = row["graphs bf16"], row["kd_soft graphs bf16"], row["teacher forward bf16"]
            bound = 1 / (1 / alone + 1 / fwd)  # images/s of "student alone + one teacher forward per batch"
            verdict = "within" if kd >= 0.97 * bound else "OVER"
            print(f"KD {KD_PAIRS[row['model']]} -> {row['model']}: student alone {alone:,.0f} images/s, KD soft {kd:,.0f}, "
                  f"teacher forward alone {fwd:,.0f}; alone + teacher forward = {bound:,.0f} images/s: KD {verdict} "
                  f"(ratio {kd / bound:.2f})")


WORKER = "--worker"
SMOKE_IMAGES = {"classify": 128, "self_distill": 256, "autoencoder": 16}  # --cpu-smoke


def empty_cache():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke run: figures mean nothing)"


def worker(models: list[str], seconds: float, sync_dir: Path, index: int, quick: bool, device) -> None:
    """One of N processes sharing the GPU: per model, warm up, wait for all, run ``seconds``."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    accel.apply_determinism(accel.resolve({}, device), device)
    result = {}
    for name in models:
        kind, arch, batch, images = MODELS[name]
        n = SMOKE_IMAGES.get(kind, batch * 2) if device.type == "cpu" else max(batch * 10, images // 10) if quick else images
        family, recipe = build_family(name, device, n)
        r = Runner(family, recipe, "graphs bf16", device)
        r.train_pass()
        sync()
        (sync_dir / f"ready-{name}-{index}").touch()
        while not (sync_dir / f"go-{name}").exists():
            time.sleep(0.005)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            done += r.train_pass()
            sync()
        result[name] = done / (time.perf_counter() - t0)
        (sync_dir / f"done-{name}-{index}").touch()
        while not (sync_dir / f"go-{name}-next").exists():
            time.sleep(0.005)
        del r, family
        empty_cache()
    print(json.dumps(result))


def sharing(models: list[str], procs: list[int], seconds: float, quick: bool, device) -> None:
    print(f"\n{seconds:g} s per measurement; kdpipe's default step (graphs, bf16); images/s of all processes together")
    print(f"{'model':<22}" + "".join(f"{f'{p} proc':>22}" for p in procs))
    table = {m: {} for m in models}
    for p in procs:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
            cmd = [sys.executable, __file__, WORKER, ",".join(models), str(seconds), str(tmp), device.type]
            ws = [subprocess.Popen(cmd + [str(i)] + (["--quick"] if quick else []), env=env, stdout=subprocess.PIPE,
                                   text=True) for i in range(p)]
            for m in models:
                for flag in ("ready", "done"):
                    deadline = time.time() + 600
                    while sum((tmp / f"{flag}-{m}-{i}").exists() for i in range(p)) < p:
                        if time.time() > deadline or any(w.poll() not in (None, 0) for w in ws):
                            raise RuntimeError(f"sharing workers failed at {flag} {m}")
                        time.sleep(0.01)
                    (tmp / (f"go-{m}" if flag == "ready" else f"go-{m}-next")).touch()
            outs = [json.loads(w.communicate(timeout=600)[0].strip().splitlines()[-1]) for w in ws]
            for m in models:
                table[m][p] = sum(o[m] for o in outs)
    for m in models:
        base = table[m][procs[0]]
        print(f"{m:<22}" + "".join(f"{f'{table[m][p]:,.0f} ({table[m][p] / base:.2f}x)':>22}" for p in procs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data, resnet20 only, 1 and 2 processes")
    parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--procs", default=None, help="processes sharing the GPU, e.g. 1,2,4 (empty: skip)")
    parser.add_argument("--seconds", type=float, default=None, help="per sharing measurement")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="developers: run this script's code on the CPU on tiny data (simulated graphs); no figure means anything")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu_throughput: no CUDA GPU is visible, so nothing was measured; run it on a GPU machine "
              "(PYTHONPATH=src python benchmarks/gpu_throughput.py)")
        return 0
    models = args.models.split(",") if args.models else (["resnet20"] if args.quick else list(MODELS))
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    procs = [int(p) for p in (args.procs if args.procs is not None else ("1,2" if args.quick else "1,2,4")).split(",")
             if p]
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    accel.prepare_environment({})  # deterministic cuBLAS workspace, before cuBLAS starts
    device = torch.device("cpu") if args.cpu_smoke else torch.device("cuda", 0)
    rows = []
    for name in models:
        rows.append(measure_model(name, device, args.quick))
        print(f"measured {name}", flush=True)
    print_rows(rows)
    if procs:
        sharing(models, procs, seconds, args.quick, device)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        accel.prepare_environment({})
        dev = torch.device("cuda", 0) if sys.argv[5] == "cuda" else torch.device("cpu")
        worker(sys.argv[2].split(","), float(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[6]), "--quick" in sys.argv, dev)
        sys.exit(0)
    sys.exit(main())
