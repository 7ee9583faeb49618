"""Run one training job end to end: place it, build its family, fit, write its outputs.

Every family's job ends the same way: ``model.pt`` (weights plus what rebuilds the model),
``history.csv`` (one row per epoch) and ``metrics.json`` (resolved config, seed, git commit,
device, wall time, best- and last-epoch figures); the resume checkpoint is removed once the
outputs are in place, so a later rerun of a changed config starts clean.
"""

import time
from pathlib import Path

import pandas as pd
import torch

from kdpipe.data.prepared import load_split
from kdpipe.devices import placement
from kdpipe.io import atomic_save, atomic_write_text, write_json
from kdpipe.models import build_model, count_parameters
from kdpipe.runinfo import git_commit, host_facts
from kdpipe.training.classify import Classifier, load_model_file, stratified_subset
from kdpipe.training.loop import Outcome, Recipe, fit


def write_outputs(*, model_payload: dict, outcome: Outcome, cfg: dict, placement_name: str, started: float,
                  model_path, metrics_path, history_path, resume_path, extra: dict | None = None) -> dict:
    atomic_save(model_payload, model_path)
    atomic_write_text(pd.DataFrame(outcome.history).to_csv(index=False), history_path)
    metrics = {
        "run": cfg["run"],
        "family": cfg["family"],
        "seed": cfg["seed"],
        "config": cfg,
        "git_commit": git_commit(),
        "device": placement_name,
        **host_facts(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_time_s": time.time() - started,
        "train_time_s": sum(row["seconds"] for row in outcome.history),
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "best": outcome.best,
        "last": outcome.last,
        **(extra or {}),
    }
    write_json(metrics, metrics_path)
    Path(resume_path).unlink(missing_ok=True)
    return metrics


def train_classifier(cfg: dict, *, train_path, test_path, teacher_path=None, model_path, metrics_path,
                     history_path, resume_path, threads: int = 1) -> dict:
    started = time.time()
    torch.set_num_threads(max(1, int(threads)))
    with placement(cfg["device"]) as place:
        train, test = load_split(train_path), load_split(test_path)
        x, y = train["images"], train["labels"]
        if cfg.get("train_subset"):
            idx = stratified_subset(y, cfg["train_subset"], cfg["seed"])
            x, y = x[idx], y[idx]
        num_classes = len(train["classes"])
        torch.manual_seed(cfg["seed"])
        model = build_model(cfg["arch"], num_classes)
        teacher = load_model_file(teacher_path, place.device) if teacher_path else None
        family = Classifier(
            model, (x, y), (test["images"], test["labels"]),
            method=cfg["method"], batch_size=cfg["train"]["batch_size"], augment=cfg.get("augment", True),
            teacher=teacher, kd=cfg.get("kd"), device=place.device,
        )
        outcome = fit(family, Recipe.from_dict(cfg["train"]), seed=cfg["seed"], device=place.device,
                      resume_path=resume_path, run_config=cfg, desc=cfg["run"])
        payload = {"arch": cfg["arch"], "num_classes": num_classes,
                   "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
        return write_outputs(
            model_payload=payload, outcome=outcome, cfg=cfg, placement_name=place.name, started=started,
            model_path=model_path, metrics_path=metrics_path, history_path=history_path, resume_path=resume_path,
            extra={"params": count_parameters(model), "train_images": int(len(y)),
                   "test_images": int(len(test["labels"]))},
        )
