import pytest
import torch

from clrepro.methods.buffer import POLICIES, Buffer


def stream(n, n_classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)  # x[:, 0] identifies the item
    y = torch.randint(n_classes, (n,), generator=g)
    return x, y


def offer(buffer, x, y, batch, loss=None):
    for start in range(0, len(x), batch):
        sl = slice(start, start + batch)
        buffer.add(x[sl], y[sl], 0, loss=None if loss is None else loss[sl])


def test_reservoir_keeps_every_item_with_probability_m_over_n():
    # M = 6 of N = 60 items, offered in batches of 7 (a batch may hit one slot twice), 1500
    # repetitions: each item's inclusion frequency has standard error sqrt(.1·.9/1500) ≈ 0.0077;
    # the stated tolerance 0.035 is 4.5 standard errors (fixed seed, so the test is deterministic).
    m, n, trials = 6, 60, 1500
    x, y = stream(n)
    counts = torch.zeros(n)
    g = torch.Generator().manual_seed(123)
    for _ in range(trials):
        buffer = Buffer(m, "reservoir", g)
        offer(buffer, x, y, batch=7)
        assert len(buffer) == m
        counts[buffer.x[:, 0].long()] += 1
    freq = counts / trials
    assert (freq - m / n).abs().max() < 0.035
    # the early items are not favoured: first and last thirds are equally represented
    assert abs(freq[:20].mean() - freq[-20:].mean()) < 0.015


def test_reservoir_fill_phase_writes_slots_in_order():
    x, y = stream(5)
    buffer = Buffer(8, "reservoir")
    slots = buffer.add(x, y, 0)
    assert slots.tolist() == [0, 1, 2, 3, 4] and len(buffer) == 5 and buffer.seen == 5


@pytest.mark.parametrize("policy", POLICIES)
def test_buffer_never_exceeds_capacity(policy):
    x, y = stream(500, n_classes=4)
    buffer = Buffer(37, policy, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    start = 0
    while start < len(x):
        b = int(torch.randint(1, 30, (1,), generator=g))
        buffer.add(x[start:start + b], y[start:start + b], 0, loss=torch.rand(len(x[start:start + b])))
        start += b
        assert len(buffer) <= 37 and buffer.x.shape[0] == 37
    assert buffer.seen == 500 and len(buffer) == 37
    assert len(set(buffer.x[:, 0].tolist())) == 37  # no item stored twice


def test_zero_capacity_stores_nothing():
    x, y = stream(20)
    buffer = Buffer(0)
    buffer.add(x, y, 0)
    assert len(buffer) == 0 and buffer.seen == 20


def test_balanced_reservoir_keeps_class_counts_within_one_on_a_balanced_stream():
    n_classes, per_class = 5, 400
    y = torch.arange(n_classes).repeat(per_class)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]  # shuffled, exactly balanced
    x = torch.arange(len(y), dtype=torch.float32)[:, None]
    balanced, plain = Buffer(50, "balanced", torch.Generator().manual_seed(3)), Buffer(50, "reservoir")
    offer(balanced, x, y, batch=10)
    offer(plain, x, y, batch=10)
    counts = torch.bincount(balanced.y, minlength=n_classes)
    assert counts.sum() == 50 and counts.max() - counts.min() <= 1
    # the plain reservoir, on the same stream, is not balanced (so the test can tell them apart)
    plain_counts = torch.bincount(plain.y, minlength=n_classes)
    assert plain_counts.max() - plain_counts.min() > 1


def test_balanced_reservoir_makes_room_for_new_classes():
    # class-incremental: classes 0-1 then 2-3; the later classes end up as numerous as the first
    y = torch.cat([torch.arange(2).repeat(500), 2 + torch.arange(2).repeat(500)])
    x = torch.arange(len(y), dtype=torch.float32)[:, None]
    buffer = Buffer(40, "balanced", torch.Generator().manual_seed(0))
    offer(buffer, x, y, batch=10)
    counts = torch.bincount(buffer.y, minlength=4)
    assert counts.max() - counts.min() <= 1


def test_loss_aware_eviction_prefers_low_loss_items():
    m = 100
    x = torch.arange(m + 2000, dtype=torch.float32)[:, None]
    y = torch.zeros(len(x), dtype=torch.long)  # one class: only the loss decides
    loss = torch.cat([torch.linspace(0.0, 2.0, m), torch.full((2000,), 1.0)])
    buffer = Buffer(m, "loss_aware", torch.Generator().manual_seed(0))
    offer(buffer, x, y, batch=10, loss=loss)
    survivors = buffer.x[:, 0].long()
    original = survivors[survivors < m]
    # of the first M items, the high-loss half survives far more often than the low-loss half
    assert (original >= m // 2).sum() > 3 * max(1, (original < m // 2).sum())


def test_loss_aware_scores_follow_replay_updates():
    x, y = stream(10)
    buffer = Buffer(10, "loss_aware")
    buffer.add(x, y, 0, loss=torch.ones(10))
    buffer.update_scores(torch.tensor([2, 5]), torch.tensor([3.0, 4.0]))
    assert buffer.scores[2] == -3.0 and buffer.scores[5] == -4.0 and buffer.scores[0] == -1.0


def test_sample_is_uniform_without_replacement():
    x, y = stream(30)
    buffer = Buffer(20, "reservoir", torch.Generator().manual_seed(0))
    buffer.add(x, y, 3)
    s = buffer.sample(15)
    assert len(set(s.index.tolist())) == 15 and torch.equal(s.x, buffer.x[s.index])
    assert (s.task == 3).all()
    assert len(buffer.sample(100).index) == 20  # at most every stored item
    counts = torch.zeros(20)
    for _ in range(2000):
        counts[buffer.sample(5).index] += 1
    assert (counts / 2000 - 0.25).abs().max() < 0.05


def test_class_balanced_fill_splits_capacity_over_classes_and_computes_logits_then():
    buffer = Buffer(10, "reservoir", torch.Generator().manual_seed(0))
    x0, y0 = torch.randn(50, 3), torch.arange(2).repeat(25)
    buffer.add_class_balanced(x0, y0, 0, logits_fn=lambda x: x.sum(1, keepdim=True).repeat(1, 4))
    assert len(buffer) == 10 and torch.bincount(buffer.y).tolist() == [5, 5]
    x1, y1 = torch.randn(50, 3), 2 + torch.arange(3).repeat(17)[:50]
    buffer.add_class_balanced(x1, y1, 1, logits_fn=lambda x: torch.full((len(x), 4), 7.0))
    counts = torch.bincount(buffer.y).tolist()
    assert len(buffer) == 10 and sum(counts) == 10 and max(counts) - min(counts) <= 1
    old = buffer.task == 0
    assert torch.allclose(buffer.logits[old], buffer.x[old].sum(1, keepdim=True).repeat(1, 4))  # kept as stored
    assert (buffer.logits[~old] == 7.0).all()
