"""Self-distillation (BYOT): the loss against hand-computed values, exit shapes, exit costs."""

import math

import pandas as pd
import pytest
import torch
import yaml

from kdpipe.losses import deep_supervision, self_distill
from kdpipe.models.multi_exit import MULTI_EXIT_RESNETS, exit_costs
from workflow_copy import ROOT

LN3 = math.log(3.0)


def _two_exits(requires_grad=False):
    """One sample, two classes, two exits. Shallow q1 = [0, 0]; deepest q2 = [ln 3, 0]."""
    q1 = torch.tensor([[0.0, 0.0]], requires_grad=requires_grad)
    q2 = torch.tensor([[LN3, 0.0]], requires_grad=requires_grad)
    f1 = torch.tensor([[1.0, 2.0]], requires_grad=requires_grad)
    f2 = torch.tensor([[0.0, 4.0]], requires_grad=requires_grad)
    return [q1, q2], [f1, f2], torch.tensor([0])


def test_self_distill_matches_hand_computed_values_at_t1():
    logits, feats, y = _two_exits()
    total, terms = self_distill(logits, feats, y, temperature=1.0, alpha=0.5, lam=0.1)
    # softmax(q1) = [1/2, 1/2], softmax(q2) = [3/4, 1/4]
    ce1 = math.log(2)  # 0.693147
    ce2 = -math.log(0.75)  # 0.287682
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    feat1 = ((1 - 0) ** 2 + (2 - 4) ** 2) / 2  # mean over elements: 2.5
    assert set(terms) == {"ce1", "ce2", "kl1", "feat1"}
    assert terms["ce1"].item() == pytest.approx(ce1, abs=1e-6)
    assert terms["ce2"].item() == pytest.approx(ce2, abs=1e-6)
    assert terms["kl1"].item() == pytest.approx(kl1, abs=1e-6)
    assert kl1 == pytest.approx(0.130812, abs=1e-6)
    assert terms["feat1"].item() == pytest.approx(2.5)
    assert total.item() == pytest.approx(0.5 * (ce1 + ce2) + 0.5 * kl1 + 0.1 * feat1, abs=1e-6)
    assert total.item() == pytest.approx(0.805821, abs=1e-5)


def test_temperature_scales_the_kl_by_t_squared():
    logits, feats, y = _two_exits()
    _, terms = self_distill(logits, feats, y, temperature=2.0, alpha=0.5, lam=0.1)
    # At T = 2: shallow [1/2, 1/2]; deepest softmax([ln3 / 2, 0]) = [sqrt3, 1] / (sqrt3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert terms["kl1"].item() == pytest.approx(4 * kl, abs=1e-6)


def test_deepest_exit_only_has_its_cross_entropy_by_default():
    logits, feats, y = _two_exits(requires_grad=True)
    total, _ = self_distill(logits, feats, y, temperature=2.0, alpha=0.5, lam=0.1)
    total.backward()
    # d/dq2 of (1 - a) * CE(q2, 0) = (1 - a) * (softmax(q2) - onehot(0)) = 0.5 * [-1/4, 1/4]
    assert logits[1].grad[0].tolist() == pytest.approx([-0.125, 0.125], abs=1e-6)
    assert feats[1].grad is None or torch.count_nonzero(feats[1].grad) == 0
    # The shallow features get the feature term's gradient: lam * 2 * (f1 - f2) / numel = 0.1 * [1, -2]
    assert feats[0].grad[0].tolist() == pytest.approx([0.1, -0.2], abs=1e-6)


def test_teacher_can_receive_gradient_when_not_detached():
    logits, feats, y = _two_exits(requires_grad=True)
    total, _ = self_distill(logits, feats, y, temperature=2.0, alpha=0.5, lam=0.1, detach_teacher=False)
    total.backward()
    assert logits[1].grad[0].tolist() != pytest.approx([-0.125, 0.125], abs=1e-6)
    assert torch.count_nonzero(feats[1].grad) > 0


def test_deep_supervision_is_cross_entropy_at_every_exit_and_nothing_else():
    logits, feats, y = _two_exits(requires_grad=True)
    total, terms = deep_supervision(logits, y)
    # softmax(q1) = [1/2, 1/2], softmax(q2) = [3/4, 1/4]: CE ln 2 and -ln(3/4), weight 1 each
    assert set(terms) == {"ce1", "ce2"}
    assert terms["ce1"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert terms["ce2"].item() == pytest.approx(-math.log(0.75), abs=1e-6)
    assert total.item() == pytest.approx(math.log(2) - math.log(0.75), abs=1e-6)
    # BYOT's loss at alpha = 0, lam = 0 is the same total
    assert total.item() == pytest.approx(self_distill(logits, feats, y, 1.0, alpha=0.0, lam=0.0)[0].item(), abs=1e-6)
    total.backward()
    # each exit gets its own CE gradient softmax - onehot(0), and no feature is read
    assert logits[0].grad[0].tolist() == pytest.approx([-0.5, 0.5], abs=1e-6)
    assert logits[1].grad[0].tolist() == pytest.approx([-0.25, 0.25], abs=1e-6)
    assert feats[0].grad is None and feats[1].grad is None


def test_every_exit_returns_logits_and_stage4_shaped_features():
    x = torch.zeros(2, 3, 32, 32)
    for name, factory in MULTI_EXIT_RESNETS.items():
        model = factory(num_classes=7, width=8)
        logits, feats = model(x)
        expansion = 4 if name == "resnet50" else 1
        assert [tuple(t.shape) for t in logits] == [(2, 7)] * 4, name
        assert [tuple(f.shape) for f in feats] == [(2, 64 * expansion, 4, 4)] * 4, name


def test_exit_costs_grow_with_depth_and_match_resnet18():
    costs = exit_costs(MULTI_EXIT_RESNETS["resnet18"](num_classes=100))
    assert [c["exit"] for c in costs] == [1, 2, 3, 4, "ensemble"]
    assert [c["macs"] for c in costs[:4]] == sorted(c["macs"] for c in costs[:4])
    # The path to exit 4 is a plain CIFAR ResNet-18: 11.22 M parameters, 0.56 G multiply-accumulates.
    assert costs[3]["params"] == 11_220_132
    assert round(costs[3]["macs"] / 1e9, 2) == 0.56
    assert costs[4]["params"] > costs[3]["params"] and costs[4]["macs"] > costs[3]["macs"]


def test_schema_lists_exactly_the_multi_exit_architectures():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    enum = schema["properties"]["self_distill"]["properties"]["arch"]["enum"]
    assert sorted(enum) == sorted(MULTI_EXIT_RESNETS)


# ---- BYOT read against the baseline and deep supervision, paired by seed --------------------------

SD_EXITS = ["exit1", "exit2", "exit3", "exit4", "ensemble"]
# best-epoch top-1 per seed at exits 1-4 and the ensemble; last = best - 1 everywhere
SD_TOP1 = {"self_distill": [[55, 60, 65, 70, 72], [56, 61, 66, 71, 73], [57, 62, 67, 72, 74]],
           "deep_supervision": [[54, 60, 64, 70.5, 71], [55, 60, 65, 70, 72], [55, 62, 66, 71, 73]],
           "baseline": [[10, 10, 10, 68, 10], [10, 10, 10, 69, 10], [10, 10, 10, 70, 10]]}


def sd_metrics(tmp, method: str, seed: int):
    import json

    name = f"{method}-resnet18-s{seed}"
    cfg = {"run": name, "dataset": "cifar100", "dataset_source": "cifar100", "method": method, "arch": "resnet18",
           "width": 8, "train": {"epochs": 3}}
    if method == "self_distill":
        cfg["self_distill"] = {"temperature": 3, "alpha": 0.3, "lam": 0.03, "detach_teacher": True}
    top1 = dict(zip(SD_EXITS, SD_TOP1[method][seed]))
    scores = lambda d: {**{f"top1_{e}": v + d for e, v in top1.items()}, **{f"top5_{e}": 99 for e in top1}}
    m = {"run": name, "family": "self_distill", "seed": seed, "config": cfg, "best": {"epoch": 3, **scores(0)}, "last": {"epoch": 3, **scores(-1)},
         "train_images": 100, "wall_time_s": 1.0, "device": "cpu", "host": "h", "git_commit": "abc",
         "exits": [{"exit": e, "params": 1000 * (i + 1), "macs": 10 ** 6 * (i + 1)}
                   for i, e in enumerate([1, 2, 3, 4, "ensemble"])]}
    path = tmp / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


def test_byot_is_read_against_deep_supervision_exit_by_exit_and_the_baseline_at_its_exit(tmp_path):
    from matplotlib.backends.backend_pdf import PdfPages
    from pypdf import PdfReader

    from kdpipe.figures.self_distill import self_distill_figures
    from kdpipe.report.self_distill import self_distill_section
    from kdpipe.tables.self_distill import self_distill_tables

    files = [sd_metrics(tmp_path, m, seed) for m in SD_TOP1 for seed in range(3)]
    out = tmp_path / "tables"
    out.mkdir()
    self_distill_tables(files, runs_csv=out / "runs.csv", summary_csv=out / "summary.csv")
    summary = pd.read_csv(out / "summary.csv")
    s = summary[summary["method"] == "self_distill"].set_index("exit")
    deep = summary[summary["method"] == "deep_supervision"].set_index("exit")
    assert deep["trained"].all()  # every exit (and so the ensemble) is trained by deep supervision
    # self-distillation - deep supervision per seed: exit1 1,1,2; exit2 0,1,0; exit3 1,1,1; exit4 -0.5,1,1; ens 1,1,1
    col = "vs_deep_supervision_best_top1"
    assert s[f"{col}_diff_mean"].tolist() == pytest.approx([4 / 3, 1 / 3, 1, 0.5, 1])
    assert s[f"{col}_diff_std"].tolist() == pytest.approx([3 ** -0.5, 3 ** -0.5, 0, 0.75 ** 0.5, 0])
    assert s[f"{col}_seeds_better"].tolist() == [3, 1, 3, 2, 3]
    assert s[f"{col}_verdict"].tolist() == ["larger than spread", "within spread", "larger than spread",
                                            "within spread", "larger than spread"]
    assert s["vs_deep_supervision_last_top1_diff_mean"].tolist() == pytest.approx([4 / 3, 1 / 3, 1, 0.5, 1])
    # the baseline trained exit 4 only: 70-68, 71-69, 72-70
    assert s["vs_baseline_best_top1_diff_mean"].isna().tolist() == [True, True, True, False, True]
    assert s.loc["exit4", "vs_baseline_best_top1_diff_mean"] == pytest.approx(2.0)
    # nothing is read against self-distillation itself
    assert summary.loc[summary["method"] != "self_distill", f"{col}_diff_mean"].isna().all()

    histories = []
    for f in files:
        h = f.parent / "history.csv"
        pd.DataFrame({"epoch": [1, 2], **{f"top1_{e}": [10, 20] for e in SD_EXITS}}).to_csv(h, index=False)
        histories.append(h)
    self_distill_figures(out / "summary.csv", out / "runs.csv", histories, cost_png=tmp_path / "self_distill-cost.png",
                         curves_png=tmp_path / "self_distill-curves.png")
    with PdfPages(tmp_path / "sd.pdf") as pdf:
        self_distill_section(pdf, summary, tmp_path)
    text = " ".join(PdfReader(tmp_path / "sd.pdf").pages[0].extract_text().split())
    assert ("Against deep supervision (CE at every exit), paired over 3 seed(s): 1/4 +1.33 ± 0.58 (3/3); "
            "2/4 +0.33 ± 0.58 (1/3); "
            "3/4 +1.00 ± 0.00 (3/3); 4/4 +0.50 ± 0.87 (2/3); ensemble +1.00 ± 0.00 (3/3).") in text
    assert "Larger than its spread (and positive) at 1/4, 3/4, ensemble." in text
    assert ("Self-distillation raised the deepest exit's best-epoch top-1 by +2.00 points over the baseline; "
            "paired by seed +2.00 ± 0.00 (3/3).") in text
