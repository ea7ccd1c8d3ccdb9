"""Seq-CIFAR-10 through the shared loop, on a fixture in CIFAR-10's on-disk format (the real
data is not on CI machines; the paper profile downloads it)."""


import pytest
import torch

from clrepro import train
from clrepro.config import BenchmarkConfig, ConfigError, ModelConfig, TrainConfig
from clrepro.data import cifar
from clrepro.data.streams import augment, build_stream
from clrepro.experiment import Experiment
from clrepro.models import build_model
from clrepro.models.resnet import Normalize

RESNET = ModelConfig(kind="resnet18")


@pytest.fixture
def cifar_root(tmp_path):
    cifar.write_fixture(tmp_path, n_per_batch=40, seed=1)
    return str(tmp_path)


def test_augment_is_a_padded_crop_and_flip_drawn_from_the_generator():
    images = torch.rand(64, 3, 32, 32)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(0)))  # seeded
    assert not torch.equal(out, augment(images, torch.Generator().manual_seed(1)))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(len(images)):  # each output is one of the 9×9 crops of its own padded image, maybe flipped
        crops = padded[i].unfold(1, 32, 1).unfold(2, 32, 1).permute(1, 2, 0, 3, 4).reshape(-1, 3, 32, 32)
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_without_padding_only_the_flip_remains_for_about_half_the_images():
    images = torch.rand(64, 3, 32, 32)
    out = augment(images, torch.Generator().manual_seed(0), padding=0)
    kept = [torch.equal(o, x) for o, x in zip(out, images, strict=True)]
    flipped = [torch.equal(o, x.flip(-1)) for o, x in zip(out, images, strict=True)]
    assert all(k or f for k, f in zip(kept, flipped, strict=True))
    assert 16 < sum(flipped) < 48  # Binomial(64, ½): outside this range with probability < 1e-4


def test_seq_cifar10_stream_keeps_images_and_augments(cifar_root):
    stream = build_stream(BenchmarkConfig("seq_cifar10", "class"), seed=0, data_dir=cifar_root)
    assert len(stream) == 5 and stream.n_outputs == 10 and stream.augment
    for t, task in enumerate(stream.tasks):
        assert task.x_train.shape[1:] == (3, 32, 32) and task.x_train.dtype == torch.uint8
        assert set(task.y_train.tolist()) <= {2 * t, 2 * t + 1} and task.units == (2 * t, 2 * t + 1)
    task_il = BenchmarkConfig("seq_cifar10", "task")
    assert build_stream(task_il, 0, cifar_root).output_mask(1).nonzero().flatten().tolist() == [2, 3]


def test_images_need_the_resnet_and_the_resnet_needs_images():
    cifar10 = BenchmarkConfig("seq_cifar10", "class")
    with pytest.raises(ConfigError, match="model.kind"):
        Experiment("t/x", cifar10, "finetune")
    with pytest.raises(ConfigError, match="model.kind"):
        Experiment("t/x", BenchmarkConfig("split_mnist", "class"), "finetune", model=RESNET)
    with pytest.raises(ConfigError, match="model.kind"):
        ModelConfig(kind="vgg")


def test_resnet18_normalises_inside_the_model():
    model = build_model(RESNET, 10)
    assert isinstance(model.features[0], Normalize)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def _run_keeping_method(experiment, seed, data_dir):
    trained = []
    result = train.run(experiment, seed, data_dir=data_dir, after_task=lambda t, method: trained.append(method))
    return result, trained[-1]


@pytest.mark.parametrize("method, params", [("er", {"buffer_size": 16, "minibatch_size": 4,
                                                    "buffer_augmentation": True}),
                                            ("derpp", {"buffer_size": 16, "minibatch_size": 4})])
def test_replay_stores_unaugmented_inputs_and_the_run_is_deterministic(cifar_root, method, params):
    experiment = Experiment(f"t/{method}", BenchmarkConfig("seq_cifar10", "class", n_tasks=2, test_per_task=8),
                            method, params, RESNET, TrainConfig(lr=0.03, batch_size=4, epochs=None, iterations=3))
    result, trained = _run_keeping_method(experiment, 0, cifar_root)
    stream = trained.stream
    pixels = torch.cat([t.x_train for t in stream.tasks]).float().div(255).flatten(1)
    stored = trained.buffer.x[: len(trained.buffer)].flatten(1)
    assert len(trained.buffer) == 16  # 2 tasks × 3 steps × 4 examples offered
    assert all((pixels == row).all(1).any() for row in stored)  # each one a raw training image
    again, _ = _run_keeping_method(experiment, 0, cifar_root)
    assert (result.accuracy == again.accuracy).all()
