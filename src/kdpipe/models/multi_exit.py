"""Multi-exit CIFAR ResNets for self-distillation (Zhang et al., "Be Your Own Teacher", ICCV 2019).

Layout (input 3 x 32 x 32, base width w = 64 by default; ResNet-18 shown, ResNet-34/50 differ
only in blocks per stage and, for 50, bottleneck blocks with expansion 4):

    stem     3x3 conv, w channels, stride 1 (CIFAR stem: no max-pool)   w    x 32 x 32
    stage 1  2 basic blocks, stride 1                                  w    x 32 x 32  -> exit 1
    stage 2  2 basic blocks, stride 2                                  2w   x 16 x 16  -> exit 2
    stage 3  2 basic blocks, stride 2                                  4w   x  8 x  8  -> exit 3
    stage 4  2 basic blocks, stride 2                                  8w   x  4 x  4  -> exit 4

Exit i < 4 has a bottleneck of (4 - i) [3x3 conv stride 2, channels doubled, BN, ReLU] steps, which
brings the stage's map to stage 4's shape (8w x 4 x 4, times the block expansion); that map is
the exit's feature F_i, compared with F_4 by the feature loss. Every exit then pools globally
and classifies with its own linear layer; exit 4 is the network's own classifier.
"""

from functools import partial

import torch
from torch import nn

from kdpipe.models.resnet_cifar import BasicBlock, conv3x3, init_resnet_weights


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


def exit_bottleneck(channels: int, steps: int) -> nn.Sequential:
    """``steps`` stride-2 3x3 convs, doubling channels each time: stage i's map -> stage 4's shape."""
    layers = []
    for _ in range(steps):
        layers += [nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(channels * 2), nn.ReLU(inplace=True)]
        channels *= 2
    return nn.Sequential(*layers)


class MultiExitResNet(nn.Module):
    """Returns ``(logits, features)``: one entry per exit, shallowest first."""

    num_exits = 4

    def __init__(self, block, layers: list[int], num_classes: int = 100, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        widths = [width, width * 2, width * 4, width * 8]
        self.stages = nn.ModuleList(
            self._make_stage(block, w, n, stride=1 if i == 0 else 2) for i, (w, n) in enumerate(zip(widths, layers))
        )
        self.bottlenecks = nn.ModuleList(
            [exit_bottleneck(w * block.expansion, 3 - i) for i, w in enumerate(widths[:3])] + [nn.Identity()]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fcs = nn.ModuleList(nn.Linear(widths[3] * block.expansion, num_classes) for _ in range(4))
        init_resnet_weights(self)

    def _make_stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def exit_modules(self, i: int) -> list[nn.Module]:
        """Everything an image passes through to reach exit ``i`` (0-based): what that exit costs."""
        return [self.stem, *self.stages[: i + 1], self.bottlenecks[i], self.fcs[i]]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = self.stem(x)
        logits, features = [], []
        for stage, bottleneck, fc in zip(self.stages, self.bottlenecks, self.fcs):
            x = stage(x)
            f = bottleneck(x)
            features.append(f)
            logits.append(fc(torch.flatten(self.pool(f), 1)))
        return logits, features


MULTI_EXIT_RESNETS = {
    "resnet18": partial(MultiExitResNet, BasicBlock, [2, 2, 2, 2]),
    "resnet34": partial(MultiExitResNet, BasicBlock, [3, 4, 6, 3]),
    "resnet50": partial(MultiExitResNet, Bottleneck, [3, 4, 6, 3]),
}


def exit_costs(model: MultiExitResNet, image_shape=(3, 32, 32)) -> list[dict]:
    """Parameters and multiply-accumulates per image of the path to each exit, then of the whole
    network (what the ensemble of all exits costs), as a list of dicts."""
    macs: dict[nn.Module, int] = {}

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs[module] = output.numel() // output.shape[0] * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            macs[module] = module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *image_shape, device=p.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    costs = []
    for i in range(model.num_exits):
        mods = {m for top in model.exit_modules(i) for m in top.modules()}
        costs.append({
            "exit": i + 1,
            "params": sum(p.numel() for m in mods for p in m.parameters(recurse=False)),
            "macs": sum(macs.get(m, 0) for m in mods),
        })
    costs.append({
        "exit": "ensemble",
        "params": sum(p.numel() for p in model.parameters()),
        "macs": sum(macs.values()),
    })
    return costs
