"""The autoencoder pair: shapes at every stage, the seed's one-row-one-column mismatch, the loss."""

import json

import pytest
import torch
import yaml

from kdpipe.losses import ae_pair
from kdpipe.models.autoencoder import AutoEncoder, AutoEncoderPair
from workflow_copy import copy_workflow, planned_jobs, snakemake


@pytest.mark.parametrize("size,width", [(32, 8), (64, 4), (256, 2)])
def test_shapes_at_every_stage(size, width):
    out, enc, dec = AutoEncoder(width)(torch.zeros(2, 3, size, size))
    assert tuple(out.shape) == (2, 3, size, size)
    assert [tuple(e.shape) for e in enc] == [(2, width * 2**k, size // 2 ** (k + 1), size // 2 ** (k + 1)) for k in range(4)]
    for j, d in enumerate(dec, start=1):
        mirror = enc[4 - j]  # encoder 5 - j
        assert d.shape[1] == mirror.shape[1], "a matched pair has the same channels"
        assert (d.shape[2], d.shape[3]) == (mirror.shape[2] + 1, mirror.shape[3] + 1), "decoder side is one larger"


@pytest.mark.parametrize("adapter", ["maxpool", "conv"])
@pytest.mark.parametrize("match,names", [
    ("formula", ["formula_e1d4", "formula_e2d3"]),
    ("prose", ["prose_e1d4", "prose_e2d3"]),
    ("both", ["formula_e1d4", "prose_e1d4", "formula_e2d3", "prose_e2d3"]),
])
def test_adapters_bring_decoder_maps_to_encoder_shape(adapter, match, names):
    pair = AutoEncoderPair(4, [(1, 4), (2, 3)], adapter, match)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    o1, o2, matched = pair(x, y)
    assert tuple(o1.shape) == tuple(o2.shape) == (2, 3, 32, 32)
    assert sorted(matched) == sorted(names)
    for enc, dec in matched.values():
        assert enc.shape == dec.shape
    has_params = any(p.numel() for p in pair.adapters.parameters())
    assert has_params == (adapter == "conv")


def test_formula_matches_encoders_of_x_to_y_with_decoders_of_y_to_x():
    pair = AutoEncoderPair(4, [(1, 4)], "maxpool", "formula")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    _, _, matched = pair(x, y)
    enc, dec = matched["formula_e1d4"]
    _, enc1, _ = pair.xy(x)
    _, _, dec2 = pair.yx(y)
    assert torch.equal(enc, enc1[0])
    assert torch.equal(dec, torch.nn.functional.max_pool2d(dec2[3], 2, 1))


def test_maxpool_adapter_by_hand():
    pair = AutoEncoderPair(4, [(1, 4)], "maxpool")
    d = torch.tensor([[[[1.0, 5.0, 2.0], [3.0, 0.0, 4.0], [7.0, 1.0, 1.0]]]])
    assert pair.adapters["formula_e1d4"](d).tolist() == [[[[5.0, 5.0], [7.0, 4.0]]]]


def test_unmirrored_pair_is_refused():
    with pytest.raises(ValueError, match="5 - k"):
        AutoEncoderPair(4, [(1, 3)], "maxpool")


def test_ae_pair_loss_by_hand():
    o1, y = torch.tensor([[0.5, -0.5]]), torch.tensor([[0.0, 0.0]])  # L1 = 0.5, L2 = 0.25
    o2, x = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 2.0]])  # L1 = 1.0, L2 = 1.0
    enc, dec = torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 0.0]])  # L1 = 0.5, L2 = 1.0
    total, terms = ae_pair(o1, y, o2, x, {"formula_e1d4": (enc, dec)}, alpha=0.2)
    assert set(terms) == {"rec_xy", "rec_yx", "match_formula_e1d4"}
    assert terms["rec_xy"].item() == pytest.approx(0.5)
    assert terms["rec_yx"].item() == pytest.approx(1.0)
    assert terms["match_formula_e1d4"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.8 * 1.5 + 0.2 * 0.5)
    total, terms = ae_pair(o1, y, o2, x, {"formula_e1d4": (enc, dec)}, alpha=0.2, norm="l2")
    assert total.item() == pytest.approx(0.8 * (0.25 + 1.0) + 0.2 * 1.0)
    total, _ = ae_pair(o1, y, o2, x, {}, alpha=0.0)
    assert total.item() == pytest.approx(1.5)


def test_matching_term_moves_both_networks():
    pair = AutoEncoderPair(4, [(1, 4)], "conv")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    o1, o2, matched = pair(x, y)
    total, _ = ae_pair(o1 * 0, o1.detach() * 0, o2 * 0, o2.detach() * 0, matched, alpha=1.0)
    total.backward()
    assert pair.xy.encoders[0][0].weight.grad.abs().sum() > 0  # encoder 1 of X -> Y
    assert pair.yx.expands[3][0].weight.grad.abs().sum() > 0  # decoder 4 of Y -> X
    assert pair.adapters["formula_e1d4"].weight.grad.abs().sum() > 0


@pytest.mark.pipeline
def test_user_added_variant_runs_without_code_change(tmp_path):
    workdir = copy_workflow(tmp_path)
    overlay = {
        "autoencoder": {
            "data": {"num_train": 48, "num_test": 16},
            "seeds": [0],
            "train": {"epochs": 2},
            "variants": {"e2d3_conv": {"pairs": [[2, 3]], "adapter": "conv", "alpha": 0.3}},
        }
    }
    (workdir / "mine.yaml").write_text(yaml.safe_dump(overlay))
    target = "results/street_scenes/autoencoder/e2d3_conv-s0/metrics.json"
    args = [target, "--configfile", "presets/demo.yaml", "mine.yaml"]
    assert planned_jobs(snakemake(workdir, "-n", *args).stdout) == {"prepare_street_scenes": 1, "train": 1}
    snakemake(workdir, *args, "--cores", "1", timeout=600)
    metrics = json.loads((workdir / target).read_text())
    variant = dict(metrics["config"]["variant"])
    assert isinstance(variant.pop("order"), int)  # where the merged config lists it: the report's order
    assert variant == {"name": "e2d3_conv", "pairs": [[2, 3]], "adapter": "conv", "alpha": 0.3,
                       "match": "formula", "norm": "l1"}
    assert {"rec_xy", "rec_yx", "match_formula_e2d3"} <= set(open(workdir / target.replace("metrics.json", "history.csv")).readline().strip().split(","))
    assert 0 <= metrics["last"]["miou"] <= 1 and metrics["last"]["psnr_yx"] > 0
