"""The multilayer perceptron of every MNIST-family experiment."""

from __future__ import annotations

import torch
from torch import nn

from clrepro.config import ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def xavier_init(module: nn.Module) -> None:
    """The DER authors' initialisation of a Linear layer (mammoth / rethinking_er,
    backbone/__init__.py): weights uniform in ±√(6/(fan_in + fan_out)), biases 0. Applied after
    PyTorch's default initialisation, as theirs is, so it draws from the generator after it."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MLP(nn.Module):
    """784 → hidden… → n_outputs (ReLU by default); optional dropout on input and hidden layers.

    `features` maps inputs to the last hidden layer, `head` maps that to the logits. `init`
    (ModelConfig.init) is kept so that methods which grow the network (PNN's columns) initialise
    the new layers the same way.
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
        self.init = cfg.init
        if cfg.init == "xavier":
            self.apply(xavier_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
