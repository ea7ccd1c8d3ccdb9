"""ResNet-18 for 32×32 inputs, the backbone of the DER paper's Seq-CIFAR-10 (He et al. 2016,
in the CIFAR form: a 3×3 stride-1 stem without max-pooling, four stages of two basic blocks
with 64·2^i channels, global average pooling, one linear head).

Like `clrepro.models.MLP`, `features` maps images to the 512-d pooled representation and
`head` maps it to the logits, so methods that read features or replace heads work unchanged.
`models.build_model` puts the authors' per-channel normalisation in front (`cifar_resnet18`).
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


# Seq-CIFAR-10's per-channel statistics, as in the DER authors' code.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2615)


class Normalize(nn.Module):
    """(x − mean) / std per channel, inside the model so every input path (training, replay,
    evaluation) is normalised the same way and the buffer stores raw [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def cifar_resnet18(n_outputs: int) -> ResNet18:
    """ResNet-18 whose `features` start with CIFAR-10's normalisation."""
    model = ResNet18(n_outputs)
    model.features.insert(0, Normalize(CIFAR10_MEAN, CIFAR10_STD))
    return model
