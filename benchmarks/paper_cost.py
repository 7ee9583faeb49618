"""What the whole report costs on GPUs: one or two epochs of every job type, extrapolated.

    PYTHONPATH=src python benchmarks/paper_cost.py [--config config.yaml] [--configfile overlay.yaml]
        [--epochs 2] [--quick] [--gpus 1,2,4] [--jobs-per-gpu 3 --sharing-speedup 2.1]

Every distinct job of the config (a teacher, a student alone, KD soft and hard, BYOT and its
baseline, each autoencoder variant; seeds only repeat a type) is trained through the real
``kdpipe train`` command for ``--epochs`` epochs on random data of the real shapes, generated on
the spot (no download): 50,000 + 10,000 CIFAR images, 2,975 + 500 Cityscapes pairs at the
config's size. The last epoch's time (training and evaluation, after the graphs are captured)
times the job's epochs, plus the first epoch's extra and the process's start-up, is that job's
estimate; the sum over the config's jobs is the report's GPU time on one GPU, one job at a time.

With ``--jobs-per-gpu K`` several jobs share a GPU: give the aggregate speed-up of K processes
over one that benchmarks/gpu_throughput.py printed (``--sharing-speedup``; nothing is assumed
without it). On N GPUs the estimate is the larger of the total over N GPUs and the longest chain
(a teacher and its longest student), which no number of GPUs shortens.

``--quick`` trains on a tenth of the data and scales the times up (a smoke run: less accurate).
``--budget SECONDS`` stops starting job types once it is spent (teachers first, then the rest in
the config's order); the total then covers the measured types only and says which were left out.
Each job type's line is printed (and flushed) when measured, and ``--summary`` (a JSON file) is
rewritten at once, so a run cut off by a time limit keeps what it measured.
Without a CUDA GPU it says so and exits 0; ``--dry-run`` (or KDPIPE_GPU_CHECK_DRY_RUN=1) runs it
on the CPU at toy size instead (figures meaningless): what CI runs to test its plumbing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import check_summary  # noqa: E402

from kdpipe import plan  # noqa: E402
from kdpipe.data.random_shapes import write_images, write_pairs  # noqa: E402

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
PAIRS_TRAIN, PAIRS_TEST = 2_975, 500
CLASSES = {"cifar10": 10, "cifar100": 100}


def merge(base: dict, over: dict) -> dict:
    """Snakemake's --configfile overlay: nested dicts merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def job_type(run: dict) -> str:
    """What a job costs depends on: everything but its seed and names."""
    return json.dumps({k: v for k, v in run.items() if k not in ("seed", "run", "teacher_run")}, sort_keys=True)


def write_data(config: dict, dataset: str, family: str, folder: Path, scale: float) -> tuple[Path, Path, int, int]:
    """Random prepared data of the real shapes for ``dataset``: (train, test, images written, real images)."""
    train, test = folder / f"{dataset}-train.pt", folder / f"{dataset}-test.pt"
    if family == "autoencoder":
        data = plan.ae_data(config)
        n_train = data.get("num_train", PAIRS_TRAIN) if data["source"] == "synthetic" else PAIRS_TRAIN
        n_test = data.get("num_test", PAIRS_TEST) if data["source"] == "synthetic" else PAIRS_TEST
        small = max(16, round(n_train * scale))
        if not train.exists():
            write_pairs(train, small, size=data["size"])
            write_pairs(test, max(8, round(n_test * scale)), size=data["size"], seed=1)
        return train, test, small, n_train
    entry = plan.dataset_config(config, dataset)
    synthetic = entry["source"] == "synthetic"
    n_train = entry["num_train"] if synthetic else CIFAR_TRAIN
    n_test = entry["num_test"] if synthetic else CIFAR_TEST
    classes = entry.get("num_classes", 10) if synthetic else CLASSES[entry["source"]]
    small = max(classes * 4, round(n_train * scale))
    if not train.exists():
        write_images(train, small, num_classes=classes)
        write_images(test, max(classes, round(n_test * scale)), num_classes=classes, seed=1)
    return train, test, small, n_train


def train_once(run: dict, data: tuple, out: Path, teacher: Path | None, epochs: int, device: str,
               full_size: bool) -> dict:
    cfg = {**run, "device": device, "train": {**run["train"], "epochs": epochs}}
    if cfg.get("train_subset") and not full_size:
        cfg["train_subset"] = None  # timed on the (smaller) data present; scaled to the subset
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "kdpipe.cli", "train", "--run-config", json.dumps(cfg), "--train", str(data[0]),
           "--test", str(data[1]), "--model", str(out / "model.pt"), "--metrics", str(out / "metrics.json"),
           "--history", str(out / "history.csv"), "--resume", str(out / "resume.pt")]
    if teacher:
        cmd += ["--teacher", str(teacher)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("KDPIPE_SIMULATED_GPUS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kdpipe train failed for {run['run']}:\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    h = pd.read_csv(out / "history.csv")
    return {"metrics": m, "seconds": h["seconds"].tolist()}


def estimate(measured: dict, run: dict, factor: float) -> float:
    """Seconds for the whole job: steady epochs x its epochs, plus the first epoch's extra and start-up."""
    secs = measured["seconds"]
    steady = secs[-1] * factor
    first_extra = max(0.0, secs[0] - secs[-1]) if len(secs) > 1 else 0.0
    startup = measured["metrics"]["wall_time_s"] - measured["metrics"]["train_time_s"]
    return run["train"]["epochs"] * steady + first_extra + startup


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--configfile", action="append", default=[], help="overlay(s), as snakemake's --configfile")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured per job type (the last one counts)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the data, times scaled up")
    parser.add_argument("--scale", type=float, default=None, help="fraction of the real data to time on")
    parser.add_argument("--gpus", default="1,2,4,8", help="GPU counts to extrapolate to")
    parser.add_argument("--jobs-per-gpu", type=int, default=1)
    parser.add_argument("--sharing-speedup", type=float, default=None,
                        help="aggregate speed-up of --jobs-per-gpu processes on one GPU (from gpu_throughput.py)")
    parser.add_argument("--keep", default=None, help="keep the generated data and runs in this folder")
    parser.add_argument("--budget", type=float, default=None, help="seconds: no job type starts once they are spent")
    parser.add_argument("--summary", type=Path, default=None, help="JSON file to record each job type in, as measured")
    parser.add_argument("--dry-run", "--cpu-smoke", dest="cpu_smoke", action="store_true",
                        default=os.environ.get("KDPIPE_GPU_CHECK_DRY_RUN") == "1",
                        help="developers: check this script on the CPU, tiny data (also KDPIPE_GPU_CHECK_DRY_RUN=1)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("paper_cost: no CUDA GPU is visible, so nothing was measured; run it on a GPU machine "
              "(PYTHONPATH=src python benchmarks/paper_cost.py)")
        check_summary.update(args.summary, "paper_cost", value={"device": None, "finished": True, "rows": {},
                                                               "note": "no CUDA GPU: nothing measured"})
        return 0
    config = yaml.safe_load(Path(args.config).read_text())
    for overlay in args.configfile:
        config = merge(config, yaml.safe_load(Path(overlay).read_text()))
    scale = args.scale or (0.002 if args.cpu_smoke else 0.1 if args.quick else 1.0)
    device = "cpu" if args.cpu_smoke else "cuda"
    if args.jobs_per_gpu > 1 and args.sharing_speedup is None:
        parser.error("--jobs-per-gpu above 1 needs --sharing-speedup (measure it with benchmarks/gpu_throughput.py)")
    speedup = args.sharing_speedup or 1.0

    runs = plan.training_runs(config)
    types: dict[str, list] = {}
    for key, run in runs.items():
        types.setdefault(job_type(run), []).append(key)
    # teachers first: their model.pt is every KD student's input
    order = sorted(types, key=lambda t: runs[types[t][0]].get("role") != "teacher")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kdpipe-paper-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    teachers: dict[str, Path] = {}
    per_type = []
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu_smoke else "CPU (smoke run)"
    check_summary.update(args.summary, "paper_cost", value={"device": name, "torch": torch.__version__, "scale": scale,
                                                           "rows": {}, "finished": False})
    skipped = []
    longest = 0.0
    for t in order:
        key = types[t][0]
        if args.budget is not None:
            left = args.budget - (time.perf_counter() - t_start)
            if left <= 0 or longest > left:  # a job type costs about what the longest so far did
                skipped.append(runs[key]["run"])
                print(f"skipped {runs[key]['family']}/{runs[key]['run']}: {max(left, 0):.0f} s left of the budget",
                      flush=True)
                check_summary.update(args.summary, "paper_cost", "skipped", value=skipped)
                continue
        t_type = time.perf_counter()
        run = runs[key]
        data = write_data(config, run["dataset"], run["family"], work / "data", scale)
        full_size = data[2] == data[3]
        # epoch time grows with the images a job sees: its transfer set, or the whole split
        factor = 1.0 if full_size else (run.get("train_subset") or data[3]) / data[2]
        teacher = teachers.get(run["teacher"]) if run.get("teacher") else None
        out = work / "runs" / run["family"] / run["run"]
        measured = train_once(run, data, out, teacher, args.epochs, device, full_size)
        if run.get("role") == "teacher":
            teachers[run["arch"]] = out / "model.pt"
        secs = estimate(measured, run, factor)
        per_type.append({"type": f"{run['family']}/{run['run'].rsplit('-s', 1)[0]}", "jobs": len(types[t]),
                         "epochs": run["train"]["epochs"], "s/epoch": measured["seconds"][-1] * factor,
                         "precision": measured["metrics"].get("precision"),
                         "graphs": measured["metrics"].get("cuda_graphs"), "h/job": secs / 3600,
                         "h all": secs * len(types[t]) / 3600, "keys": types[t], "secs": secs})
        longest = max(longest, time.perf_counter() - t_type)
        row = per_type[-1]
        print(f"measured {row['type']}: {row['s/epoch']:.2f} s/epoch, {row['h/job']:.3f} h/job x {row['jobs']} jobs",
              flush=True)
        check_summary.update(args.summary, "paper_cost", "rows", row["type"],
                             value={k: v for k, v in row.items() if k != "keys"})
    if not per_type:
        print("paper_cost: the budget allowed no job type; nothing was measured", flush=True)
        check_summary.update(args.summary, "paper_cost", "finished", value=True)
        return 0
    table = pd.DataFrame(per_type)
    print(f"\nper job type on {name} (torch {torch.__version__}); data at {scale:g} of the real size, times scaled;"
          f" measured in {time.perf_counter() - t_start:.0f} s")
    print(table.drop(columns=["keys", "secs"]).round(3).to_string(index=False))
    total = float(table["secs"].mul(table["jobs"]).sum())
    job_secs = {k: row["secs"] for _, row in table.iterrows() for k in row["keys"]}
    chains = []
    for key, run in runs.items():
        if run.get("teacher_run") and key in job_secs and (key[0], run["teacher_run"]) in job_secs:
            chains.append(job_secs[key] + job_secs[(key[0], run["teacher_run"])])
    longest = max(chains + list(job_secs.values()))
    partial = f" (PARTIAL: {len(skipped)} job types not measured, the time budget ran out)" if skipped else ""
    print(f"\nwhole report, one GPU, one job at a time: {total / 3600:.2f} GPU-hours{partial}")
    check_summary.update(args.summary, "paper_cost", "gpu_hours_one_gpu", value=total / 3600)
    check_summary.update(args.summary, "paper_cost", "partial", value=bool(skipped))
    if args.jobs_per_gpu > 1:
        print(f"one GPU, {args.jobs_per_gpu} jobs sharing it (aggregate speed-up {speedup:g}, measured by "
              f"gpu_throughput.py): {total / speedup / 3600:.2f} hours")
    print(f"longest chain (a teacher and its longest student): {longest / 3600:.2f} hours")
    for n in [int(x) for x in args.gpus.split(",") if x]:
        wall = max(total / (n * speedup), longest)
        print(f"{n} GPU(s), {args.jobs_per_gpu} job(s) per GPU: about {wall / 3600:.2f} hours wall, "
              f"{total / speedup / 3600:.2f} GPU-hours")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    check_summary.update(args.summary, "paper_cost", "finished", value=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
