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
from kdpipe.runinfo import git_commit, host_facts
from kdpipe.training.accel import prepare_environment
from kdpipe.training.loop import Outcome, Recipe, fit


# family -> a function returning its builder, each importing its module when first called: every
# job pays its imports, and ae_pair's torchmetrics alone takes seconds.
def _classify():
    from kdpipe.training.classify import make_classifier

    return make_classifier


def _self_distill():
    from kdpipe.training.self_distill import make_multi_exit

    return make_multi_exit


def _autoencoder():
    from kdpipe.training.ae_pair import make_ae_pair

    return make_ae_pair


FAMILIES = {"classify": _classify, "self_distill": _self_distill, "autoencoder": _autoencoder}


def family_builder(family: str):
    """The family's ``make_*(cfg, train, test, device, teacher_path) -> (family, payload, extra)``."""
    return FAMILIES[family]()


def write_outputs(*, model_payload: dict, outcome: Outcome, cfg: dict, placement_name: str, started: float,
                  score_key: str, model_path, metrics_path, history_path, resume_path,
                  extra: dict | None = None) -> dict:
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
        "finished_at": time.time(),
        "train_time_s": sum(row["seconds"] for row in outcome.history),
        "resumed_from_epoch": outcome.resumed_from_epoch,
        **outcome.settings,  # precision, cuda_graphs (used or not), deterministic, graph_captures
        "score": score_key,  # the figure that picked the best epoch
        "best": outcome.best,
        "last": outcome.last,
        **(extra or {}),
    }
    write_json(metrics, metrics_path)
    Path(resume_path).unlink(missing_ok=True)
    return metrics


def train(cfg: dict, *, train_path, test_path, teacher_path=None, model_path, metrics_path, history_path,
          resume_path, threads: int = 1) -> dict:
    """Train the run ``cfg`` describes (its ``family`` picks the model, loss and evaluation)."""
    started = time.time()
    torch.set_num_threads(max(1, int(threads)))
    prepare_environment(cfg.get("train"))  # before CUDA starts: the cuBLAS workspace determinism needs
    make = family_builder(cfg["family"])
    with placement(cfg["device"]) as place:
        # When this job had its device to itself (a multi-GPU workstation's record of who used which GPU).
        extra_times = {"started_at": started, "device_claimed_at": time.time()}
        if place.slot is not None:  # which of the GPU's job slots (KDPIPE_JOBS_PER_GPU), 0-based
            extra_times.update(gpu_slot=place.slot, gpu_slots=place.slots)
        train_split, test_split = load_split(train_path), load_split(test_path)  # any family's prepared dict
        torch.manual_seed(cfg["seed"])  # model initialisation
        family, payload, extra = make(cfg, train_split, test_split, place.device, teacher_path)
        outcome = fit(family, Recipe.from_dict(cfg["train"]), seed=cfg["seed"], device=place.device,
                      resume_path=resume_path, run_config=cfg, desc=cfg["run"],
                      inputs=[p for p in (train_path, test_path, teacher_path) if p])
        # model.pt holds the model a family serves: FitNets' regressor and mutual learning's peer
        # train with the student (and sit in the resume checkpoint), but are not part of it.
        served = getattr(family, "served_model", family.model)
        payload["state_dict"] = {k: v.cpu() for k, v in served.state_dict().items()}
        # Students trained beside the served one (mutual learning) get their own best epoch.
        others = {f"best_{k}": max(outcome.history, key=lambda row: row[k])
                  for k in getattr(family, "other_scores", ()) if outcome.history}
        return write_outputs(
            model_payload=payload, outcome=outcome, cfg=cfg, placement_name=place.name, started=started,
            score_key=family.score_key,
            model_path=model_path, metrics_path=metrics_path, history_path=history_path, resume_path=resume_path,
            extra={**extra_times, **(extra or {}), **others},
        )
