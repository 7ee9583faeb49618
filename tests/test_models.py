"""The architecture registry: every entry builds a model that keeps the contract (logits; three
stage outputs), has the parameter count it declares, and the counts agree with independent hand
formulas and the published tables. The schema's arch enum is the registry's."""

import re
from pathlib import Path

import pytest
import torch

from kdpipe import architectures
from kdpipe.architectures import ARCHITECTURES
from kdpipe.config_schema import config_schema
from kdpipe.models import build_model, count_parameters

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(ARCHITECTURES)


def resnet_spec(name: str) -> tuple[int, list[int]]:
    """Depth and [stem, stage1, stage2, stage3] widths of RepDistiller's CIFAR ResNet ``name``."""
    depth, x4 = re.fullmatch(r"resnet(\d+)(x4)?", name).groups()
    return int(depth), [32, 64, 128, 256] if x4 else [16, 16, 32, 64]


def hand_param_count(depth: int, widths: list[int], num_classes: int) -> int:
    """Count parameters of a RepDistiller CIFAR ResNet from its description alone.

    conv k x k, cin -> cout, no bias: cin * cout * k * k; BatchNorm(c): 2c (weight and bias);
    stem: 3x3 conv 3 -> c0 + BN; three stages of n = (depth - 2) / 6 basic blocks (two 3x3 convs,
    two BNs), the first block of a stage with stride s; a 1x1 conv + BN shortcut when s != 1 or the
    width changes; then Linear(c3 -> classes) with bias.
    """
    n = (depth - 2) // 6
    c0 = widths[0]
    total = 3 * c0 * 9 + 2 * c0
    cin = c0
    for width, stride in zip(widths[1:], (1, 2, 2)):
        for block in range(n):
            total += cin * width * 9 + 2 * width  # conv1 + bn1
            total += width * width * 9 + 2 * width  # conv2 + bn2
            if block == 0 and (stride != 1 or cin != width):
                total += cin * width + 2 * width  # 1x1 shortcut conv + bn
            cin = width
    total += widths[3] * num_classes + num_classes
    return total


def hand_wrn_param_count(depth: int, k: int, num_classes: int) -> int:
    """WRN-depth-k (Zagoruyko & Komodakis; RepDistiller's wrn.py) from its description alone:
    stem 3x3 conv 3 -> 16; three stages of n = (depth - 4) / 6 pre-activation blocks
    (BN(cin), 3x3 conv cin -> w, BN(w), 3x3 conv w -> w), widths 16k, 32k, 64k; a 1x1 conv
    shortcut (no BN) where the width changes; a final BN(64k); Linear(64k -> classes) with bias."""
    n = (depth - 4) // 6
    total = 3 * 16 * 9
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * cin + cin * width * 9 + 2 * width + width * width * 9
            if cin != width:
                total += cin * width
            cin = width
    return total + 2 * cin + cin * num_classes + num_classes


def test_every_entry_is_complete():
    for name, arch in ARCHITECTURES.items():
        assert arch.name == name and arch.description and arch.stages and callable(arch.build)
        assert arch.epoch_s is None or arch.epoch_s > 0
        assert set(arch.references) <= {"alone", "teacher"}
        assert all(0 < v < 100 for v in arch.references.values())
        assert bool(arch.references) == bool(arch.reference_source), name


@pytest.mark.parametrize("arch", NAMES)
def test_output_shape(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", NAMES)
def test_built_model_has_the_registered_stage_shapes(arch):
    """The config check pairs architectures by their registered stage shapes (no model is built
    then): they must be what the model gives on a 32 x 32 image."""
    model = build_model(arch, num_classes=100).eval()
    with torch.no_grad():
        _, features = model(torch.zeros(1, 3, 32, 32), features=True)
    assert tuple(tuple(f.shape[1:]) for f in features) == ARCHITECTURES[arch].stage_shapes


@pytest.mark.parametrize("arch", NAMES)
def test_built_model_has_the_registered_parameter_count(arch):
    assert count_parameters(build_model(arch, 100)) == ARCHITECTURES[arch].params_cifar100


@pytest.mark.parametrize("arch", [a for a in NAMES if a.startswith("resnet")])
def test_resnet_counts_match_the_hand_formula(arch):
    depth, widths = resnet_spec(arch)
    assert ARCHITECTURES[arch].params_cifar100 == hand_param_count(depth, widths, 100)


@pytest.mark.parametrize("arch, depth, k", [("wrn_40_2", 40, 2), ("wrn_16_2", 16, 2)])
def test_wrn_counts_match_the_hand_formula(arch, depth, k):
    assert ARCHITECTURES[arch].params_cifar100 == hand_wrn_param_count(depth, k, 100)
    assert count_parameters(build_model(arch, 10)) == hand_wrn_param_count(depth, k, 10)


def test_parameter_count_depends_on_num_classes():
    # only the final Linear changes: 64 weights + 1 bias per extra class
    assert count_parameters(build_model("resnet8", 10)) + 90 * 65 == count_parameters(build_model("resnet8", 100))


def test_hand_formulas_spot_values():
    # resnet8 (n = 1) with 100 classes, worked out by hand:
    # stem 3*16*9 + 32 = 464
    # stage1 (16->16, stride 1, no shortcut): 2*(16*16*9 + 32) = 4672
    # stage2 (16->32, stride 2): 16*32*9+64 + 32*32*9+64 + 16*32+64 = 14528
    # stage3 (32->64, stride 2): 32*64*9+128 + 64*64*9+128 + 32*64+128 = 57728
    # fc 64*100 + 100 = 6500                                       total = 83892
    assert hand_param_count(8, [16, 16, 32, 64], 100) == 83892
    assert count_parameters(build_model("resnet8", 100)) == 83892
    # wrn_10_1 (n = 1, widths 16, 32, 64) with 10 classes:
    # stem 432; stage1 (16->16): 32 + 2304 + 32 + 2304 = 4672
    # stage2 (16->32): 32 + 4608 + 64 + 9216 + 512 = 14432
    # stage3 (32->64): 64 + 18432 + 128 + 36864 + 2048 = 57536
    # final BN 128, fc 64*10 + 10 = 650                            total = 77850
    assert hand_wrn_param_count(10, 1, 10) == 77850


@pytest.mark.parametrize("arch, millions", [
    ("resnet20", 0.28), ("resnet56", 0.86), ("resnet110", 1.74), ("resnet8x4", 1.23), ("resnet32x4", 7.43),
    ("wrn_40_2", 2.26), ("wrn_16_2", 0.70),
])
def test_parameter_count_matches_published_tables(arch, millions):
    # RepDistiller / CRD (Tian et al. 2020) report these on CIFAR-100
    assert round(ARCHITECTURES[arch].params_cifar100 / 1e6, 2) == millions


def test_wrn_state_dict_uses_repdistillers_names():
    """A RepDistiller/mdistiller wrn_16_2 checkpoint loads as it is: its key names and shapes.
    Counted by hand: stem 1; per stage 2 blocks x (bn1 5, conv1 1, bn2 5, conv2 1) + 1 shortcut
    (the width changes at every stage's first block: 16->32->64->128); final bn1 5; fc 2: 83 keys."""
    sd = build_model("wrn_16_2", 100).state_dict()
    assert len(sd) == 83
    shapes = {"conv1.weight": (16, 3, 3, 3), "block1.layer.0.bn1.running_mean": (16,),
              "block1.layer.0.conv1.weight": (32, 16, 3, 3), "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
              "block1.layer.1.bn1.num_batches_tracked": (), "block2.layer.0.convShortcut.weight": (64, 32, 1, 1),
              "block3.layer.1.conv2.weight": (128, 128, 3, 3), "bn1.weight": (128,), "fc.weight": (100, 128),
              "fc.bias": (100,)}
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "block1.layer.1.convShortcut.weight" not in sd  # equal widths: identity shortcut


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ValueError) as err:
        build_model("resnet9000", 10)
    msg = str(err.value)
    assert "resnet9000" in msg
    for arch in NAMES:
        assert arch in msg


def test_schema_arch_enum_is_the_registry(monkeypatch):
    schema = config_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    assert schema["$defs"]["arch"]["enum"] == NAMES
    monkeypatch.setitem(ARCHITECTURES, "toy_net", architectures.get("resnet8"))
    schema = config_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    assert "toy_net" in schema["$defs"]["arch"]["enum"]


@pytest.mark.parametrize("arch", NAMES)
def test_stage_outputs_leave_logits_and_parameters_alone(arch):
    """FitNets and attention transfer read the three stage outputs: asking for them changes neither
    the logits nor the parameters; each stage halves the map after the first; post-activation
    ResNets give them after the stage's last ReLU (non-negative), pre-activation WRNs do not."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5).eval()
    before = count_parameters(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, features = model(x, features=True)
    assert torch.equal(plain, logits)
    assert len(features) == 3
    assert [tuple(f.shape[2:]) for f in features] == [(32, 32), (16, 16), (8, 8)]
    assert all(f.shape[0] == 2 for f in features)
    assert count_parameters(model) == before
    nonnegative = [bool((f >= 0).all()) for f in features]
    if arch.startswith("resnet"):
        depth, widths = resnet_spec(arch)
        assert [f.shape[1] for f in features] == widths[1:]
        assert all(nonnegative)  # post-ReLU, as RepDistiller's preact=False
    else:
        assert not any(nonnegative)  # block sums: RepDistiller's wrn.py feats[1:4] are not rectified


def test_wrn_stage_outputs_are_repdistillers_feats():
    """What RepDistiller's wrn.py returns as feats[1], feats[2], feats[3] (is_feat=True): the output
    of block1, block2, block3; the logits read block3's output through the final BN + ReLU + pool."""
    torch.manual_seed(0)
    model = build_model("wrn_16_2", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, (f1, f2, f3) = model(x, features=True)
        assert torch.equal(f1, model.block1(model.conv1(x)))
        assert torch.equal(f2, model.block2(f1)) and torch.equal(f3, model.block3(f2))
        pooled = torch.relu(model.bn1(f3)).mean(dim=(2, 3))
        torch.testing.assert_close(logits, model.fc(pooled))
    assert [f.shape[1] for f in (f1, f2, f3)] == [32, 64, 128]
