from clrepro.data._torchvision import import_torchvision


def test_torchvision_imports_with_datasets_and_transforms():
    tv = import_torchvision()
    from torchvision.transforms.v2 import functional

    assert hasattr(tv.datasets, "MNIST") and hasattr(functional, "rotate")
    assert import_torchvision() is tv  # second call is a plain import
