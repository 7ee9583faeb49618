"""The CIFAR ResNets of RepDistiller (HobbitLong/RepDistiller, models/resnet.py).

Three stages of basic blocks on 32x32 inputs (widths ``filters[1:]``, strides 1, 2, 2),
a 3x3 stem, global average pooling and one linear classifier. Shortcuts that change shape
use a 1x1 convolution + BN ("option B"), as RepDistiller does, so parameter counts match
its tables (resnet20 0.28M, resnet56 0.86M, resnet8x4 1.23M, resnet32x4 7.43M on CIFAR-100).
"""

import torch
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def init_resnet_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan-out), BN as identity: the initialisation of the ResNet papers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images; ``filters`` = [stem, stage1, stage2, stage3]."""

    def __init__(self, depth: int, filters: list[int], num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 for basic blocks, got {depth}")
        n = (depth - 2) // 6
        self.inplanes = filters[0]
        self.conv1 = nn.Conv2d(3, filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(filters[1], n, stride=1)
        self.layer2 = self._make_layer(filters[2], n, stride=2)
        self.layer3 = self._make_layer(filters[3], n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(filters[3] * BasicBlock.expansion, num_classes)
        init_resnet_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits; with ``features=True``, ``(logits, [f1, f2, f3])``: each stage's output (after its
        last ReLU, as RepDistiller's ``is_feat=True, preact=False`` gives them to FitNets and AT)."""
        x = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        logits = self.fc(torch.flatten(self.pool(f3), 1))
        return (logits, [f1, f2, f3]) if features else logits

