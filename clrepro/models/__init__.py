"""Models: a multilayer perceptron (or, for Seq-CIFAR-10, a ResNet-18) whose output width follows
from the stream."""

from __future__ import annotations

from torch import nn

from clrepro.config import ModelConfig
from clrepro.models.mlp import MLP


def build_model(cfg: ModelConfig, n_outputs: int) -> nn.Module:
    if cfg.kind == "resnet18":
        from clrepro.models.resnet import cifar_resnet18

        return cifar_resnet18(n_outputs)
    return MLP(cfg, n_outputs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLP", "build_model", "count_parameters"]
