"""Every step a CUDA graph captures is checked on the CPU (kdpipe.training.capturable): one whole
training step of each family and each registered method runs under FakeTensorMode, which fails on
reading a tensor on the host and on a data-dependent shape; methods registered here prove that it
catches both and names the method and the operation."""

from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import update_config

from kdpipe import losses, methods, plan
from kdpipe.models import build_model
from kdpipe.training.capturable import NotCapturable, check_run
from kdpipe.training.graphs import graph_state
from kdpipe.training.run import family_builder

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 4  # one batch of 4 images per check: FakeTensorMode computes nothing, so only dispatch costs


def plan_runs() -> dict[tuple[str, str], dict]:
    """One run per (family, method or variant), as kdpipe.plan makes them from config.yaml + the demo
    preset, shrunk to one batch of ``IMAGES``; the classifier's methods at the registry's defaults."""
    config: dict = {}
    for f in ("config.yaml", "presets/demo.yaml"):
        update_config(config, yaml.safe_load((ROOT / f).read_text()))
    runs = {}
    for (family, _), cfg in plan.training_runs(config).items():
        cfg = {**cfg, "device": "cpu", "train_subset": None, "augment": True,
               "train": {**cfg["train"], "batch_size": IMAGES}}
        if family == "classify" and cfg["method"] != "teacher":
            cfg["method_params"] = methods.get(cfg["method"]).defaults()
        runs.setdefault((family, cfg["method"]), cfg)
    return runs


RUNS = plan_runs()


def classify_split(size: int, n: int = IMAGES, classes: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"images": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "labels": torch.arange(n) % classes, "classes": [f"c{i}" for i in range(classes)]}


def street_split(size: int = 32, n: int = IMAGES) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 19, (n, size, size), dtype=torch.uint8, generator=g)
    return {"photos": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "labels_rgb": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "label_ids": ids}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """An untrained teacher of the plan's architecture, saved as a training job saves model.pt."""
    arch = next(cfg["teacher"] for (family, _), cfg in RUNS.items() if family == "classify" and "teacher" in cfg)
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    torch.manual_seed(0)
    torch.save({"arch": arch, "num_classes": 4, "state_dict": build_model(arch, 4).state_dict()}, path)
    return path


def split_for(cfg: dict) -> dict:
    if cfg["family"] == "autoencoder":
        return street_split()
    return classify_split(8 if cfg["family"] == "classify" else 32)


def check(cfg: dict, teacher_file) -> list[str]:
    split = split_for(cfg)
    return check_run(cfg, split, split, teacher_file if cfg.get("teacher") else None)


def test_the_plan_gives_every_method_family_and_variant():
    assert {m for f, m in RUNS if f == "classify"} == {"teacher", *methods.METHODS}
    assert {m for f, m in RUNS if f == "self_distill"} == set(plan.SELF_DISTILL_METHODS)
    variants = yaml.safe_load((ROOT / "config.yaml").read_text())["autoencoder"]["variants"]
    assert {m for f, m in RUNS if f == "autoencoder"} == set(variants)


@pytest.mark.parametrize("key", sorted(RUNS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_step_is_capturable(key, teacher_file):
    terms = check(RUNS[key], teacher_file)
    assert terms  # the step ran to its end: the loss, its backward and the optimiser's update


def test_the_check_leaves_the_family_untouched(teacher_file):
    from kdpipe.training.capturable import check_step
    from kdpipe.training.classify import make_classifier
    from kdpipe.training.loop import Recipe

    cfg = RUNS[("classify", "fitnet")]
    split = classify_split(8)
    torch.manual_seed(0)
    family, _, _ = make_classifier(cfg, split, split, torch.device("cpu"), teacher_file)
    before = {k: v.clone() for k, v in family.model.state_dict().items()}
    assert check_step(family, Recipe.from_dict(cfg["train"]), what="fitnet") == ["ce", "hint"]
    after = family.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and type(after[k]) is torch.Tensor for k in before)
    assert all(p.grad is None for p in family.model.parameters())


def _register(monkeypatch, name: str, step) -> dict:
    """A method registered for one test (removed after it), planned like kd_soft."""
    spec = methods.get("kd_soft")
    toy = methods.Method(name, name, "#123456", "CE", needs_teacher=True, step=step)
    monkeypatch.setitem(methods.METHODS, name, toy)
    return {**RUNS[("classify", spec.name)], "method": name, "method_params": {}, "run": f"{name}-s0"}


def _masked_step(o, p):
    # the old DKD way: a boolean mask drops each row's target class
    keep = torch.ones_like(o.logits, dtype=torch.bool).scatter(1, o.targets[:, None], False)
    rest = o.logits[keep].view(o.logits.shape[0], -1)
    ce = losses.cross_entropy(o.logits, o.targets)[0]
    return ce + rest.pow(2).mean(), {"ce": ce}


def _item_step(o, p):
    ce = losses.cross_entropy(o.logits, o.targets)[0]
    scale = 1.0 / max(ce.item(), 1.0)  # a host read: on a GPU it waits, and its value would freeze
    return ce * scale, {"ce": ce}


@pytest.mark.parametrize("name, step, operation, line", [
    ("masked", _masked_step, "aten.nonzero makes a data-dependent shape", "o.logits[keep]"),
    ("host_read", _item_step, "aten._local_scalar_dense reads a tensor's value on the host", "ce.item()"),
])
def test_a_step_that_cannot_be_captured_is_caught_and_named(monkeypatch, teacher_file, name, step, operation, line):
    """A boolean mask and a host read (.item()), each named with the method, the operation and the line."""
    cfg = _register(monkeypatch, name, step)
    with pytest.raises(NotCapturable) as err:
        check(cfg, teacher_file)
    message = str(err.value)
    assert message.startswith(f"method '{name}': {operation}"), message
    assert "test_capturable.py" in message and line in message  # the offending line


def test_the_old_dkd_non_target_would_be_caught(monkeypatch, teacher_file):
    """DKD's earlier boolean-mask _non_target is what the check exists for; today's gather passes."""
    def masked_non_target(logits, targets):
        keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, targets[:, None], False)
        return logits[keep].view(logits.shape[0], logits.shape[1] - 1)

    monkeypatch.setattr(losses, "_non_target", masked_non_target)
    with pytest.raises(NotCapturable, match=r"^method 'dkd': aten\.nonzero makes a data-dependent shape.*_non_target"):
        check(RUNS[("classify", "dkd")], teacher_file)


# ---- epoch-dependent losses: a graphed step captures again whenever the loss can change ----------

# Epoch pairs: the first epochs (DKD's warm-up moves), its default warm-up's end (20: the weight is 1
# on both sides), and far apart after it.
EPOCH_PAIRS = [(0, 1), (19, 20), (30, 200)]


def stale_captures(cfg: dict, teacher_file) -> list[str]:
    """Epoch pairs at which the loss differs while ``graph_state`` (what the loop gives a graphed step)
    says nothing changed: a captured step would replay the first epoch's loss at the second.

    Each evaluation builds the family afresh with the run's seed (same weights) and takes the same
    first batch; the epoch is set as the loop sets it.
    """
    def at(epoch):
        split = split_for(cfg)
        torch.manual_seed(cfg["seed"])
        family, _, _ = family_builder(cfg["family"])(cfg, split, split, torch.device("cpu"),
                                                     teacher_file if cfg.get("teacher") else None)
        if hasattr(family, "epoch"):
            family.epoch = epoch
        batch = next(iter(family.train_batches(torch.Generator().manual_seed(0))))
        with torch.no_grad():
            total, _ = family.loss(batch)
        return graph_state(family), total

    stale = []
    for e1, e2 in EPOCH_PAIRS:
        (k1, l1), (k2, l2) = at(e1), at(e2)
        if k1 == k2 and not torch.equal(l1, l2):
            stale.append(f"epochs {e1} and {e2}: key {k1!r} both times, loss {l1.item():.6g} then {l2.item():.6g}")
    return stale


@pytest.mark.parametrize("key", sorted(RUNS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_a_graphed_step_never_replays_a_stale_loss(key, teacher_file):
    assert stale_captures(RUNS[key], teacher_file) == []


def _warmup_step(o, p):
    ce = losses.cross_entropy(o.logits, o.targets)[0]
    return ce * min((o.epoch + 1) / 25, 1.0), {"ce": ce}


def test_a_wrong_epoch_key_is_caught(monkeypatch, teacher_file):
    """A loss that reads the epoch with an epoch_key saying it does not: stale at every pair in the
    warm-up; declaring nothing is safe (captured again every epoch); an honest key passes too."""
    cfg = _register(monkeypatch, "warm", _warmup_step)
    spec = methods.METHODS["warm"]
    monkeypatch.setitem(methods.METHODS, "warm", methods.Method(**{**vars(spec), "epoch_key": methods.epoch_independent}))
    stale = stale_captures(cfg, teacher_file)
    assert [s.split(":")[0] for s in stale] == ["epochs 0 and 1", "epochs 19 and 20"]
    monkeypatch.setitem(methods.METHODS, "warm", spec)  # declares nothing
    assert spec.epoch_key is None and stale_captures(cfg, teacher_file) == []
    honest = methods.Method(**{**vars(spec), "epoch_key": lambda epoch, p: min((epoch + 1) / 25, 1.0)})
    monkeypatch.setitem(methods.METHODS, "warm", honest)
    assert stale_captures(cfg, teacher_file) == []
