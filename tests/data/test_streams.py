import pytest
import torch

from clrepro.config import BenchmarkConfig
from clrepro.data.datasets import find_dataset_root
from clrepro.data.streams import build_stream, draw_angles, make_permutations

needs_mnist = pytest.mark.skipif(find_dataset_root("mnist") is None, reason="run `make data` first")


def test_permutations_are_bijections_fixed_per_seed_and_distinct():
    perms = make_permutations(5, seed=3)
    for p in perms:
        assert torch.equal(p.sort().values, torch.arange(784))
    assert all(torch.equal(a, b) for a, b in zip(perms, make_permutations(5, seed=3), strict=True))
    assert not torch.equal(perms[0], make_permutations(5, seed=4)[0])
    assert len({tuple(p.tolist()) for p in perms}) == 5


def test_first_task_unpermuted_option():
    assert torch.equal(make_permutations(3, 0, first_task_permuted=False)[0], torch.arange(784))
    assert not torch.equal(make_permutations(3, 0, first_task_permuted=True)[0], torch.arange(784))


def test_angles_drawn_in_range_and_seeded():
    angles = draw_angles(20, seed=1)
    assert all(0 <= a < 180 for a in angles) and angles == draw_angles(20, seed=1)


@needs_mnist
@pytest.mark.parametrize("name", ["split_mnist", "split_fashion_mnist"])
def test_split_class_sets_and_targets(name):
    for scenario, n_out in [("task", 10), ("class", 10), ("domain", 2)]:
        stream = build_stream(BenchmarkConfig(name, scenario, train_per_task=100, test_per_task=50), seed=0)
        assert stream.n_outputs == n_out and len(stream) == 5
        for t, task in enumerate(stream.tasks):
            expected = {0, 1} if scenario == "domain" else {2 * t, 2 * t + 1}
            assert set(task.y_train.tolist()) == expected and set(task.y_test.tolist()) <= expected


@needs_mnist
def test_task_il_masks_only_the_tasks_units():
    stream = build_stream(BenchmarkConfig("split_mnist", "task", train_per_task=50, test_per_task=50), seed=0)
    assert stream.output_mask(2).nonzero().flatten().tolist() == [4, 5]
    class_il = build_stream(BenchmarkConfig("split_mnist", "class", train_per_task=50, test_per_task=50), seed=0)
    assert class_il.output_mask(2) is None


@needs_mnist
def test_permuted_stream_applies_task_permutation_to_train_and_test():
    cfg = BenchmarkConfig("permuted_mnist", "domain", n_tasks=2, train_per_task=20, test_per_task=20)
    stream = build_stream(cfg, seed=0)
    identity = build_stream(BenchmarkConfig("permuted_mnist", "domain", n_tasks=1, first_task_permuted=False,
                                            train_per_task=20, test_per_task=20), seed=0)
    perm = make_permutations(2, 0)[0]
    assert torch.equal(stream.tasks[0].x_train, identity.tasks[0].x_train[:, perm])
    assert torch.equal(stream.tasks[0].x_test, identity.tasks[0].x_test[:, perm])


@needs_mnist
def test_validation_split_holds_out_ten_percent_of_train():
    full = build_stream(BenchmarkConfig("split_mnist", "class", n_tasks=1), seed=0).tasks[0]
    val = build_stream(BenchmarkConfig("split_mnist", "class", n_tasks=1, validation=True), seed=0).tasks[0]
    assert len(val.x_test) == round(0.1 * len(full.x_train))
    assert len(val.x_train) + len(val.x_test) == len(full.x_train)


@needs_mnist
def test_class_il_permuted_offsets_labels():
    stream = build_stream(BenchmarkConfig("permuted_mnist", "class", n_tasks=2, train_per_task=30,
                                          test_per_task=30), seed=0)
    assert stream.n_outputs == 20 and stream.tasks[1].y_train.min() >= 10


def test_rotation_interpolation_nearest_copies_source_pixels_and_bilinear_blends():
    from clrepro.data.streams import rotate

    images = torch.randint(1, 256, (3, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    nearest = rotate(images, 33.0, "nearest")
    for src, out in zip(images, nearest, strict=True):  # every pixel is a source pixel or the zero fill
        assert set(out.unique().tolist()) <= set(src.unique().tolist()) | {0}
    bilinear = rotate(images, 33.0)  # the default, as before the parameter existed
    assert torch.equal(bilinear, rotate(images, 33.0, "bilinear")) and not torch.equal(bilinear, nearest)
    # a quarter turn about the centre of an even-sized image moves pixels exactly onto pixels
    torch.testing.assert_close(rotate(images, 90.0, "nearest"), rotate(images, 90.0, "bilinear"), atol=1, rtol=0)


def test_interpolation_is_a_rotated_mnist_parameter_that_keeps_old_descriptions():
    from clrepro.config import ConfigError
    from clrepro.experiment import Experiment

    bench = BenchmarkConfig("rotated_mnist", "domain", n_tasks=2)
    exp = Experiment("x/y", bench, "finetune")
    assert "interpolation" not in exp.to_json()  # the default leaves existing cache keys unchanged
    assert '"interpolation": "nearest"' in exp.with_(benchmark={"interpolation": "nearest"}).to_json()
    with pytest.raises(ConfigError, match="benchmark.interpolation"):
        BenchmarkConfig("rotated_mnist", "domain", interpolation="bicubic")
    with pytest.raises(ConfigError, match="benchmark.interpolation"):
        BenchmarkConfig("permuted_mnist", "domain", interpolation="nearest")


@needs_mnist
def test_rotated_stream_uses_the_interpolation():
    cfg = BenchmarkConfig("rotated_mnist", "domain", n_tasks=1, angles=(33.0,), train_per_task=20, test_per_task=10)
    bilinear = build_stream(cfg, seed=0).tasks[0]
    nearest = build_stream(BenchmarkConfig(**{**cfg.__dict__, "interpolation": "nearest"}), seed=0).tasks[0]
    assert torch.equal(bilinear.y_train, nearest.y_train) and not torch.equal(bilinear.x_train, nearest.x_train)
