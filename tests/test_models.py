"""Model registry: output shapes, parameter counts against an independent formula, errors, schema."""

from pathlib import Path

import pytest
import torch
import yaml

from kdpipe.models import ARCHITECTURES, build_model, count_parameters

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_ARCHS = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                  "resnet8x4", "resnet32x4"}

# depth and [stem, stage1, stage2, stage3] widths of RepDistiller's CIFAR ResNets
SPECS = {
    **{f"resnet{d}": (d, [16, 16, 32, 64]) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (8, [32, 64, 128, 256]),
    "resnet32x4": (32, [32, 64, 128, 256]),
}


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


def test_registry_has_the_expected_architectures():
    assert set(ARCHITECTURES) == EXPECTED_ARCHS


@pytest.mark.parametrize("arch", sorted(EXPECTED_ARCHS))
def test_output_shape(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", sorted(EXPECTED_ARCHS))
def test_parameter_count_matches_hand_formula(arch):
    depth, widths = SPECS[arch]
    assert count_parameters(build_model(arch, 100)) == hand_param_count(depth, widths, 100)


def test_parameter_count_depends_on_num_classes():
    # only the final Linear changes: 64 weights + 1 bias per extra class
    assert count_parameters(build_model("resnet8", 10)) + 90 * 65 == count_parameters(build_model("resnet8", 100))


def test_hand_formula_spot_value():
    # resnet8 (n = 1) with 100 classes, worked out by hand:
    # stem 3*16*9 + 32 = 464
    # stage1 (16->16, stride 1, no shortcut): 2*(16*16*9 + 32) = 4672
    # stage2 (16->32, stride 2): 16*32*9+64 + 32*32*9+64 + 16*32+64 = 14528
    # stage3 (32->64, stride 2): 32*64*9+128 + 64*64*9+128 + 32*64+128 = 57728
    # fc 64*100 + 100 = 6500                                       total = 83892
    assert hand_param_count(8, [16, 16, 32, 64], 100) == 83892
    assert count_parameters(build_model("resnet8", 100)) == 83892


@pytest.mark.parametrize("arch, millions", [
    ("resnet20", 0.28), ("resnet56", 0.86), ("resnet110", 1.74), ("resnet8x4", 1.23), ("resnet32x4", 7.43),
])
def test_parameter_count_matches_published_tables(arch, millions):
    # RepDistiller / CRD (Tian et al. 2020) report these on CIFAR-100
    assert round(count_parameters(build_model(arch, 100)) / 1e6, 2) == millions


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ValueError) as err:
        build_model("resnet9000", 10)
    msg = str(err.value)
    assert "resnet9000" in msg
    for arch in EXPECTED_ARCHS:
        assert arch in msg


def test_schema_arch_enum_matches_registry():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert sorted(schema["$defs"]["arch"]["enum"]) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch, widths", [("resnet8", (16, 32, 64)), ("resnet8x4", (64, 128, 256))])
def test_stage_outputs_leave_logits_and_parameters_alone(arch, widths):
    """FitNets and attention transfer read the three stage outputs (after each stage's last ReLU):
    asking for them changes neither the logits nor the parameters."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, features = model(x, features=True)
    assert torch.equal(plain, logits)
    assert [tuple(f.shape) for f in features] == [(2, widths[0], 32, 32), (2, widths[1], 16, 16), (2, widths[2], 8, 8)]
    assert all((f >= 0).all() for f in features)  # post-ReLU, as RepDistiller's preact=False
    depth, spec_widths = SPECS[arch]
    assert count_parameters(model) == hand_param_count(depth, spec_widths, 5)
