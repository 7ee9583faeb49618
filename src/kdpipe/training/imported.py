"""A published teacher, imported instead of trained: checked against the kdpipe model, evaluated
on our test set, and written as the same model.pt / metrics.json / history.csv a trained teacher
gets (kdpipe.training.run.write_outputs), so students and tables read it like any other.

metrics.json adds ``imported: true``, the source (name, URL, member), the archive's and the
checkpoint's sha256, and the checkpoint's own ``epoch`` and ``accuracy`` (as its source measured
them); ``best`` and ``last`` are our measurement, one row of history at the checkpoint's epoch.
"""

import time
from pathlib import Path

import torch

from kdpipe.data import checkpoint_archive as ca
from kdpipe.data.archive import sha256_of, verify_placed
from kdpipe.errors import CheckpointError

NAMES_SHOWN = 3  # how many key names an error lists of each kind


def _few(names: list[str]) -> str:
    more = f", ... {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return f"{len(names)} ({', '.join(names[:NAMES_SHOWN])}{more})"


def state_dict_problems(state: dict, expected: dict) -> list[str]:
    """What keeps ``state`` from loading into a model whose state_dict is ``expected``: missing keys,
    unexpected ones, values that are not tensors or have another shape (empty when it fits)."""
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    not_tensors = [k for k in expected if k in state and not isinstance(state[k], torch.Tensor)]
    shaped = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in state and k not in not_tensors and tuple(state[k].shape) != tuple(expected[k].shape)]
    return [f"{what} {_few(names)}" for what, names in
            (("missing", missing), ("unexpected", unexpected), ("not tensors", not_tensors), ("other shape", shaped))
            if names]


def fitted_model(state: dict, arch: str, num_classes: int, where: str):
    """The kdpipe model of ``arch`` holding ``state``; CheckpointError naming what does not fit."""
    from kdpipe.models import build_model

    model = build_model(arch, num_classes)
    problems = state_dict_problems(state, model.state_dict())
    if problems:
        raise CheckpointError(f"{where} does not fit kdpipe's {arch} with {num_classes} classes: "
                              f"{'; '.join(problems)}; check classify.published_teachers.{arch} and the source's "
                              "`member` (another architecture, or a data set with another number of classes?)")
    model.load_state_dict(state)
    return model.eval()


def import_teacher(cfg: dict, *, archive, train_path, test_path, model_path, metrics_path, history_path,
                   sha256: str | None = None, record_sha256=None, threads: int = 1) -> dict:
    """Import the teacher run ``cfg`` (its ``import`` block names the source and member)."""
    from kdpipe.data.prepared import load_split
    from kdpipe.models import count_parameters
    from kdpipe.training.accel import full_precision
    from kdpipe.training.classify import Classifier
    from kdpipe.training.loop import Outcome
    from kdpipe.training.run import write_outputs

    started = time.time()
    torch.set_num_threads(max(1, int(threads)))
    source = cfg["import"]
    # The configured sha256, else the one recorded at first use (recorded now if placed by hand).
    verify_placed(archive, sha256=sha256, record_sha256=record_sha256)
    recorded = Path(record_sha256).read_text().strip() if record_sha256 and Path(record_sha256).exists() else None
    archive_sha256 = sha256 or recorded or sha256_of(archive)
    where = f"{archive}:{source['member']}"
    data = ca.read_member(archive, source["member"])
    ckpt = ca.load_checkpoint(data, where)
    train, test = load_split(train_path), load_split(test_path)
    num_classes = len(train["classes"])
    model = fitted_model(ckpt["model"], cfg["arch"], num_classes, where)

    # Evaluated as a trained teacher is (kdpipe.training.classify), on the CPU in fp32: normalised by
    # the training split's channel statistics, which for CIFAR-100 are the constants RepDistiller used.
    t0 = time.perf_counter()
    family = Classifier(model, (train["images"], train["labels"]), (test["images"], test["labels"]),
                        method="teacher", batch_size=cfg["train"]["batch_size"], augment=False,
                        device=torch.device("cpu"), stats_from=train["images"])
    model.eval()
    with torch.no_grad(), full_precision(torch.device("cpu")):
        scores = family.evaluate()
    epoch = ca.scalar(ckpt.get("epoch"))
    row = {"epoch": int(epoch) if epoch is not None else 0, **scores, "seconds": time.perf_counter() - t0}
    outcome = Outcome(history=[row], best=dict(row))
    outcome.settings = {"precision": "fp32", "cuda_graphs": False}
    extra = {
        "imported": True,
        "source": {"name": source["source"], "url": source["url"], "member": source["member"]},
        "archive_sha256": archive_sha256,
        "checkpoint_sha256": ca.sha256_bytes(data),
        "checkpoint_epoch": epoch,
        "checkpoint_accuracy": ca.scalar(ckpt.get("accuracy")),
        "params": count_parameters(model), "train_images": int(len(train["labels"])),
        "test_images": int(len(test["labels"])), "students": 1,
    }
    payload = {"arch": cfg["arch"], "num_classes": num_classes,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return write_outputs(model_payload=payload, outcome=outcome, cfg=cfg, placement_name="cpu", started=started,
                         score_key=family.score_key, model_path=model_path, metrics_path=metrics_path,
                         history_path=history_path, resume_path=Path(model_path).with_name("resume.pt"),
                         extra=extra)
