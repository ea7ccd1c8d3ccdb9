import pytest
import torch
from torch import nn

from clrepro.config import ConfigError, ModelConfig
from clrepro.models import MLP, count_parameters


def test_mlp_shapes_parameter_count_and_options():
    model = MLP(ModelConfig(hidden=(400, 400)), 10)
    assert count_parameters(model) == 784 * 400 + 400 + 400 * 400 + 400 + 400 * 10 + 10
    assert model(torch.zeros(3, 784)).shape == (3, 10)
    no_bias = MLP(ModelConfig(hidden=(100, 100), bias=False), 10)
    assert count_parameters(no_bias) == 784 * 100 + 100 * 100 + 100 * 10
    sigmoid = MLP(ModelConfig(hidden=(8,), activation="sigmoid"), 2)
    assert any(isinstance(m, nn.Sigmoid) for m in sigmoid.modules())
    with pytest.raises(ConfigError, match="model.activation"):
        ModelConfig(activation="gelu")


def test_dropout_only_in_training_mode():
    model = MLP(ModelConfig(hidden=(50,), dropout_input=0.2, dropout_hidden=0.5), 10)
    x = torch.rand(4, 784)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_task_il_masking_equals_separate_heads(tiny_stream):
    """Masked logits of one wide layer == a per-task head: other units get no gradient."""
    from clrepro.methods import build_method
    from clrepro.methods.base import Batch

    model = MLP(ModelConfig(hidden=(6,)), tiny_stream.n_outputs)
    method = build_method("finetune", {}, model, tiny_stream)
    x, y = tiny_stream.tasks[1].train_tensors()
    method.loss(Batch(x, y, 1)).backward()
    grad = model.head.weight.grad
    assert torch.count_nonzero(grad[[0, 1]]) == 0 and torch.count_nonzero(grad[[2, 3]]) > 0


def test_default_init_is_pytorchs_and_xavier_is_the_der_authors():
    torch.manual_seed(0)
    default = MLP(ModelConfig(hidden=(256, 256)), 10)
    torch.manual_seed(0)
    reference = [nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)]
    linears = [m for m in default.modules() if isinstance(m, nn.Linear)]
    for a, b in zip(linears, reference, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)

    xavier = MLP(ModelConfig(hidden=(256, 256), init="xavier"), 10)
    for layer in (m for m in xavier.modules() if isinstance(m, nn.Linear)):
        fan_out, fan_in = layer.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5  # mammoth backbone/__init__.py: sqrt(3)·sqrt(2/(in+out))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert torch.count_nonzero(layer.bias) == 0
    assert xavier.init == "xavier" and default.init == "default"


def test_unknown_init_and_xavier_on_the_resnet_are_errors():
    with pytest.raises(ConfigError, match="model.init"):
        ModelConfig(init="kaiming")
    with pytest.raises(ConfigError, match="model.init"):
        ModelConfig(kind="resnet18", init="xavier")
