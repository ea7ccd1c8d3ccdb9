"""Task streams built from in-memory MNIST / Fashion-MNIST / CIFAR-10 tensors.

Every task holds uint8 images (MNIST family flattened to [N, 784]; CIFAR-10 [N, 3, 32, 32]) and
targets that are already *output unit
indices* for the stream's scenario, so training and evaluation are the same cross-entropy for
every scenario:

- Task-IL: each task owns its own output units (its "head"); logits outside them are masked at
  training and test time. Masking one wide output layer is exactly a multi-head network: the
  other heads receive zero gradient and do not affect the prediction.
- Domain-IL: one shared head of the task's size; the task id is not used.
- Class-IL: one head over the classes of all tasks, no masking.

Seq-CIFAR-10 (the DER paper's) is Split CIFAR-10: 5 tasks of 2 classes, and its training
batches are augmented (`augment`: 4-pixel zero-padded random crop, horizontal flip) as in the
authors' code; the MNIST family is never augmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clrepro.config import BenchmarkConfig
from clrepro.data.datasets import ImageDataset, load_dataset

VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Task:
    index: int
    name: str
    units: tuple[int, ...]  # the output units this task's targets live on
    x_train: torch.Tensor  # uint8 [N, 784] (MNIST family) or [N, 3, 32, 32] (CIFAR-10)
    y_train: torch.Tensor  # int64 [N], output unit indices
    x_test: torch.Tensor
    y_test: torch.Tensor

    def train_tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.x_train, device), self.y_train.to(device)


@dataclass(frozen=True)
class Stream:
    name: str
    scenario: str
    tasks: tuple[Task, ...]
    n_outputs: int
    augment: bool = False  # training (and replayed) batches go through `augment`

    def __len__(self) -> int:
        return len(self.tasks)

    def output_mask(self, task_index: int) -> torch.Tensor | None:
        """Boolean mask [n_outputs] of the units a task may use; None when nothing is masked."""
        if self.scenario != "task":
            return None
        mask = torch.zeros(self.n_outputs, dtype=torch.bool)
        mask[list(self.tasks[task_index].units)] = True
        return mask


def to_float(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Pixels scaled to [0, 1], no mean/std normalisation (the DER protocol)."""
    return images.to(device=device, dtype=torch.float32).div_(255.0)


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding, then a horizontal flip with probability ½, drawn per
    image from `generator` (so augmentation never touches the global RNG). Images [N, C, H, W]
    in [0, 1]; the authors' torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip."""
    n, _, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # [N, H]
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # [N, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _generator(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def make_permutations(n_tasks: int, seed: int, first_task_permuted: bool = True) -> list[torch.Tensor]:
    """One fixed pixel permutation per task, reproducible from the seed."""
    g = _generator(seed, 1)
    perms = [torch.randperm(784, generator=g) for _ in range(n_tasks)]
    if not first_task_permuted:
        perms[0] = torch.arange(784)
    return perms


def draw_angles(n_tasks: int, seed: int) -> tuple[float, ...]:
    """Rotation angles drawn uniformly in [0, 180) degrees (the DER paper's R-MNIST)."""
    g = _generator(seed, 2)
    return tuple(float(a) for a in torch.rand(n_tasks, generator=g) * 180.0)


def rotate(images: torch.Tensor, angle: float, interpolation: str = "bilinear") -> torch.Tensor:
    """Rotate uint8 images [N, 28, 28] by angle degrees about the centre, zero fill; pixels
    resampled bilinearly or from the nearest source pixel. The DER authors rotate PIL images with
    torchvision's default, nearest (aimagelab/mammoth datasets/transforms/rotation.py at 7ab9db9)."""
    from clrepro.data._torchvision import import_torchvision

    import_torchvision()
    from torchvision.transforms.v2 import functional
    mode = {"bilinear": functional.InterpolationMode.BILINEAR, "nearest": functional.InterpolationMode.NEAREST}
    rotated = functional.rotate(images.unsqueeze(1), angle, interpolation=mode[interpolation])
    return rotated.squeeze(1)


def _subset(n: int, size: int | None, g: torch.Generator) -> torch.Tensor | None:
    if size is None or size >= n:
        return None
    return torch.randperm(n, generator=g)[:size].sort().values


def _split_and_subsample(
    cfg: BenchmarkConfig, seed: int, task_index: int,
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
):
    g = _generator(seed, 100 + task_index)
    if cfg.validation:  # the held-out 10% of the training set replaces the test set
        order = torch.randperm(len(x_train), generator=g)
        n_val = int(round(VALIDATION_FRACTION * len(x_train)))
        val, train = order[:n_val].sort().values, order[n_val:].sort().values
        x_test, y_test = x_train[val], y_train[val]
        x_train, y_train = x_train[train], y_train[train]
    if (idx := _subset(len(x_train), cfg.train_per_task, g)) is not None:
        x_train, y_train = x_train[idx], y_train[idx]
    if (idx := _subset(len(x_test), cfg.test_per_task, g)) is not None:
        x_test, y_test = x_test[idx], y_test[idx]
    return x_train, y_train, x_test, y_test


def source_dataset(cfg: BenchmarkConfig, data_dir: str | None = None) -> ImageDataset:
    """The dataset a benchmark's tasks are drawn from."""
    if cfg.name in ("permuted_mnist", "rotated_mnist"):
        return load_dataset("mnist", data_dir)
    return _split_dataset(cfg.name, data_dir)


def build_stream(cfg: BenchmarkConfig, seed: int, data_dir: str | None = None) -> Stream:
    if cfg.name in ("permuted_mnist", "rotated_mnist"):
        return _build_domain_stream(cfg, seed, data_dir)
    return _build_split_stream(cfg, seed, data_dir)


def _build_domain_stream(cfg: BenchmarkConfig, seed: int, data_dir: str | None) -> Stream:
    """Permuted / Rotated MNIST: every task has all 10 digits under a different input map."""
    data = load_dataset("mnist", data_dir)
    if cfg.name == "permuted_mnist":
        perms = make_permutations(cfg.n_tasks, seed, cfg.first_task_permuted)
        maps = [lambda x, p=p: x.reshape(len(x), 784)[:, p] for p in perms]
        names = [f"perm-{t + 1}" for t in range(cfg.n_tasks)]
    else:
        angles = cfg.angles if cfg.angles is not None else draw_angles(cfg.n_tasks, seed)
        maps = [lambda x, a=a: rotate(x, a, cfg.interpolation).reshape(len(x), 784) for a in angles]
        names = [f"rot-{a:.0f}" for a in angles]
    tasks = []
    for t, (transform, name) in enumerate(zip(maps, names, strict=True)):
        offset = 10 * t if cfg.scenario in ("task", "class") else 0
        parts = _split_and_subsample(
            cfg, seed, t, data.train_images, data.train_labels, data.test_images, data.test_labels
        )
        x_tr, y_tr, x_te, y_te = parts
        tasks.append(Task(
            t, name, tuple(range(offset, offset + 10)),
            transform(x_tr).contiguous(), y_tr + offset, transform(x_te).contiguous(), y_te + offset,
        ))
    n_outputs = 10 if cfg.scenario == "domain" else 10 * cfg.n_tasks
    return Stream(cfg.name, cfg.scenario, tuple(tasks), n_outputs)


def split_classes(n_tasks: int) -> list[tuple[int, int]]:
    return [(2 * t, 2 * t + 1) for t in range(n_tasks)]


def _build_split_stream(cfg: BenchmarkConfig, seed: int, data_dir: str | None) -> Stream:
    """Split MNIST / Fashion-MNIST / CIFAR-10: task t holds classes (2t, 2t+1)."""
    data = _split_dataset(cfg.name, data_dir)
    images = cfg.name == "seq_cifar10"  # kept [N, 3, 32, 32] for the convolutional net
    tasks = []
    for t, classes in enumerate(split_classes(cfg.n_tasks)):
        def select(x: torch.Tensor, y: torch.Tensor, classes=classes):
            keep = (y == classes[0]) | (y == classes[1])
            return (x[keep] if images else x[keep].reshape(-1, 784)), y[keep]

        x_tr, y_tr = select(data.train_images, data.train_labels)
        x_te, y_te = select(data.test_images, data.test_labels)
        x_tr, y_tr, x_te, y_te = _split_and_subsample(cfg, seed, t, x_tr, y_tr, x_te, y_te)
        if cfg.scenario == "domain":  # shared 2-unit head: first or second class of the task
            y_tr, y_te, units = y_tr - classes[0], y_te - classes[0], (0, 1)
        else:
            units = classes
        tasks.append(Task(t, f"{classes[0]}/{classes[1]}", units, x_tr, y_tr, x_te, y_te))
    # Task-/Class-IL: one 10-way output layer, as in the DER and van de Ven protocols.
    n_outputs = 2 if cfg.scenario == "domain" else 10
    return Stream(cfg.name, cfg.scenario, tuple(tasks), n_outputs, augment=images)


def _split_dataset(name: str, data_dir: str | None) -> ImageDataset:
    if name == "seq_cifar10":
        from clrepro.data.cifar import load_cifar10

        return load_cifar10(data_dir)
    return load_dataset("mnist" if name == "split_mnist" else "fashion_mnist", data_dir)
