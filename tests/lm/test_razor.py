import pytest
import torch
import torch.nn.functional as F

from clrepro.lm import razor, razor_analysis


def test_parity_target_is_uniform_over_right_parity():
    t = razor.parity_target(torch.tensor([3, 8]))
    torch.testing.assert_close(t[0], torch.tensor([0, .2, 0, .2, 0, .2, 0, .2, 0, .2]))
    torch.testing.assert_close(t[1], torch.tensor([.2, 0, .2, 0, .2, 0, .2, 0, .2, 0]))


def test_sft_targets_on_hand_checked_labels():
    labels = torch.tensor([7, 2])
    torch.testing.assert_close(razor.sft_target("sft1", labels), F.one_hot(torch.tensor([1, 0]), 10).float())
    sft2 = razor.sft_target("sft2", labels)
    assert sft2[0, 1] == sft2[0, 5] == 0.5 and sft2[0].sum() == 1.0
    assert sft2[1, 0] == sft2[1, 4] == 0.5 and sft2[1].sum() == 1.0


def test_oracle_target_keeps_base_preferences_among_right_digits():
    base = torch.tensor([[0.4, 0.1, 0.1, 0.1, 0.2, 0.0, 0.0, 0.1, 0.0, 0.0]])
    q = razor.oracle_target(base, torch.tensor([6]))  # even: digits 0, 2, 4 carry 0.4, 0.1, 0.2
    torch.testing.assert_close(q[0, [0, 2, 4]], torch.tensor([0.4, 0.1, 0.2]) / 0.7)
    assert q[0, 1::2].sum() == 0.0
    # it is the KL-closest distribution to π0 among those with the right parity: KL(q‖π0) = −log 0.7
    kl = (q * (q.clamp_min(1e-12).log() - base.clamp_min(1e-12).log())).sum()
    assert kl.item() == pytest.approx(-torch.log(torch.tensor(0.7)).item(), abs=1e-5)


def test_inputs_carry_flag_and_hint():
    images = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = razor.make_inputs(images, razor.PARITY_FLAG, razor.hint_value(torch.tensor([4, 9])))
    assert x.shape == (2, 786) and x[:, :784].max() == 1.0
    assert x[:, 784].tolist() == [1.0, 1.0] and x[:, 785].tolist() == [1.0, -1.0]
    assert razor.make_inputs(images, razor.FASHION_FLAG)[:, 784:].tolist() == [[-1.0, 0.0]] * 2


def test_parity_accuracy_counts_any_digit_of_right_parity():
    logits = F.one_hot(torch.tensor([4, 3, 0]), 10).float()
    assert razor.parity_accuracy(logits, torch.tensor([8, 1, 7])) == pytest.approx(200 / 3)


def test_grpo_rewards_on_policy_samples():
    torch.manual_seed(0)
    model = razor.toy_mlp(4)
    x, labels = torch.randn(16, 4), torch.randint(0, 10, (16,))
    loss = razor.grpo_loss(model, x, labels, group_size=4)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sdft_teacher_sees_the_hint_and_gets_no_gradient():
    torch.manual_seed(0)
    student, teacher = razor.toy_mlp(6), razor.toy_mlp(6)
    x = torch.randn(8, 6)
    x[:, -1] = 0.0
    hinted_even, hinted_odd = x.clone(), x.clone()
    hinted_even[:, -1], hinted_odd[:, -1] = 1.0, -1.0
    assert not torch.allclose(teacher(hinted_even), teacher(hinted_odd))  # the demonstration matters
    loss = razor.sdft_loss(student, teacher, x, hinted_even, "forward")
    assert loss.item() != pytest.approx(razor.sdft_loss(student, teacher, x, hinted_odd, "forward").item())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_cosine_schedule_ends_at_zero():
    assert razor.lr_at(0, 10, 1.0, "cosine") == pytest.approx(1.0)
    assert razor.lr_at(10, 10, 1.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert razor.lr_at(7, 10, 1.0, "constant") == 1.0


def test_grid_runs_constant_schedule_once_at_longest():
    runs = razor.grid(["sft1"], [1e-4], [("constant", 1), ("constant", 2), ("cosine", 1), ("cosine", 2)])
    assert [(r.schedule, r.epochs) for r in runs] == [("constant", 2), ("cosine", 1), ("cosine", 2)]


def test_quadratic_fit_recovers_exact_parabola():
    import numpy as np

    x = np.linspace(0, 2, 9)
    coef, r2 = razor_analysis.quadratic_r2(x, 3 * x**2 - x + 0.5)
    assert r2 == pytest.approx(1.0) and coef == pytest.approx([3, -1, 0.5])


def test_invalid_finetune_config_raises():
    with pytest.raises(ValueError, match="teacher"):
        razor.Finetune("sdft", 1e-3, teacher="oracle")
