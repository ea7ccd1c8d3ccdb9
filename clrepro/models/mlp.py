"""The multilayer perceptron of every MNIST-family experiment."""

from __future__ import annotations

import torch
from torch import nn

from clrepro.config import ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """784 → hidden… → n_outputs (ReLU by default); optional dropout on input and hidden layers.

    `features` maps inputs to the last hidden layer, `head` maps that to the logits.
    """

    def __init__(self, cfg: ModelConfig, n_outputs: int, in_features: int = 784) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if cfg.dropout_input > 0:
            layers.append(nn.Dropout(cfg.dropout_input))
        width = in_features
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden, bias=cfg.bias), ACTIVATIONS[cfg.activation]()]
            if cfg.dropout_hidden > 0:
                layers.append(nn.Dropout(cfg.dropout_hidden))
            width = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
