"""The CIFAR WideResNets of RepDistiller (HobbitLong/RepDistiller, models/wrn.py; Zagoruyko &
Komodakis 2016): WRN-depth-k, pre-activation basic blocks, three stages of n = (depth - 4) / 6
blocks with widths 16k, 32k, 64k (strides 1, 2, 2), a 3x3 stem of 16 channels, a final BN + ReLU,
global average pooling and one linear classifier. No dropout (RepDistiller's dropRate 0).

Attribute names follow RepDistiller's module for module (``conv1``, ``block1.layer.0.bn1``,
``convShortcut``, ``bn1``, ``fc``), so its state_dicts load as they are: a checkpoint trained
there (``cifar_teachers/wrn_40_2_vanilla/ckpt_epoch_240.pth``) is a kdpipe teacher.
"""

import torch
from torch import nn

from kdpipe.models.resnet_cifar import init_resnet_weights


class PreActBlock(nn.Module):
    """BN-ReLU-conv, BN-ReLU-conv, plus the input; a 1x1 conv shortcut when the width changes (it
    then reads the activated input, as RepDistiller's BasicBlock does)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # not inplace on x: with equal widths x is the previous block's output, still needed
        return (x if self.equal_in_out else self.convShortcut(act)) + out


class NetworkBlock(nn.Module):
    """One stage (RepDistiller's name and nesting: ``blockN.layer.i``)."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[PreActBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                                     for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4 for a WideResNet, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)  # RepDistiller: avg_pool2d(8), the same on 32x32 images
        self.fc = nn.Linear(widths[3], num_classes)
        init_resnet_weights(self)  # RepDistiller's normal(0, sqrt(2 / (k*k*out))) is He fan-out
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits; with ``features=True``, ``(logits, [f1, f2, f3])``: each stage's output, the block
        sum before the next stage's BN + ReLU (before the final BN + ReLU for f3), which is what
        RepDistiller's ``forward(x, is_feat=True)`` returns as feats[1:4] for FitNets' hint and
        attention transfer. Pre-activation: these maps are not rectified and may be negative."""
        f1 = self.block1(self.conv1(x))
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        logits = self.fc(torch.flatten(self.pool(self.relu(self.bn1(f3))), 1))
        return (logits, [f1, f2, f3]) if features else logits


def wrn_40_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(40, 2, num_classes)


def wrn_16_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 2, num_classes)
