"""ResNet-18 for 32×32 inputs, the backbone of the DER paper's Seq-CIFAR-10 (He et al. 2016,
in the CIFAR form: a 3×3 stride-1 stem without max-pooling, four stages of two basic blocks
with 64·2^i channels, global average pooling, one linear head).

Like `clrepro.models.MLP`, `features` maps images to the 512-d pooled representation and
`head` maps it to the logits, so methods that read features or replace heads work unchanged.
Not wired into `models.build_model` yet (see `clrepro.cifar`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # projection shortcut where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, n_outputs: int, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU()]
        planes = width
        for stage in range(4):
            out = width * 2 ** stage
            stride = 1 if stage == 0 else 2
            layers += [BasicBlock(planes, out, stride), BasicBlock(out, out, 1)]
            planes = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(planes, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
