import torch

from clrepro.models.resnet import ResNet18


def test_resnet18_has_the_cifar_shape_and_size():
    model = ResNet18(n_outputs=10)
    # the CIFAR ResNet-18 of the DER code base: 11,173,962 parameters with a 10-way head
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 512)
    assert model(x).shape == (2, 10)
