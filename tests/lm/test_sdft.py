import pytest
import torch
from torch import nn

from clrepro.lm import sdft
from clrepro.lm import tinylm as lm

TASK = sdft.NewTask()
QUERIES = ["abc", "hello", "zzyx"]


class Emits(nn.Module):
    """A stub policy that always puts its mass on one token (plus a parameter, so it can be trained)."""

    def __init__(self, token: int) -> None:
        super().__init__()
        self.token = token
        self.bias = nn.Parameter(torch.zeros(len(lm.VOCAB)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*tokens.shape, len(lm.VOCAB)), -20.0)
        logits[..., self.token] = 20.0
        return logits + self.bias


def record_sampler(monkeypatch):
    seen = []
    original = sdft.sample_completions

    def spy(model, prompts, cfg, generator=None):
        y = original(model, prompts, cfg, generator)
        seen.append((model, y))
        return y

    monkeypatch.setattr(sdft, "sample_completions", spy)
    return seen


def test_sdft_samples_from_the_current_student(monkeypatch):
    seen = record_sampler(monkeypatch)
    student, teacher = Emits(lm.EOS), Emits(lm.INDEX["A"])
    sdft.sdft_loss(student, teacher, TASK, QUERIES, sdft.LMFinetune("sdft"))
    model, y = seen[-1]
    assert model is student
    assert (y[:, 0] == lm.EOS).all() and (y[:, 1:] == lm.PAD).all()  # the student's answer, not the teacher's


def test_offpolicy_samples_from_the_teacher(monkeypatch):
    seen = record_sampler(monkeypatch)
    student, teacher = Emits(lm.EOS), Emits(lm.INDEX["A"])
    sdft.sdft_loss(student, teacher, TASK, QUERIES, sdft.LMFinetune("offpolicy"))
    model, y = seen[-1]
    assert model is teacher and (y == lm.INDEX["A"]).all()


def test_sdft_gradient_reaches_only_the_student():
    torch.manual_seed(0)
    cfg = lm.LMConfig(d_model=32, n_layers=1, n_heads=2)
    student, teacher = lm.TinyLM(cfg), lm.TinyLM(cfg)
    sdft.sdft_loss(student, teacher, TASK, QUERIES, sdft.LMFinetune("sdft", max_new=4)).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_teacher_prediction_depends_on_the_demonstration():
    torch.manual_seed(0)
    model = lm.TinyLM(lm.LMConfig(d_model=32, n_layers=1, n_heads=2)).eval()
    prompt_a = TASK.teacher_prompt("abc", ("abc", TASK.expert("abc")))
    prompt_b = TASK.teacher_prompt("abc", ("abc", "qqq"))
    assert "c" in prompt_a and TASK.expert("abc") == "dcb" and list("dcb") == list(prompt_a[6:9])
    y = torch.full((2, 1), lm.INDEX["D"])
    logits = sdft.completion_logits(model, lm.pad_left([lm.encode(prompt_a), lm.encode(prompt_b)]), y)
    assert not torch.allclose(logits[0], logits[1])


def test_finetune_trains_a_copy_and_leaves_the_base():
    torch.manual_seed(0)
    base = lm.TinyLM(lm.LMConfig(d_model=32, n_layers=1, n_heads=2))
    before = [p.clone() for p in base.parameters()]
    tuned = sdft.finetune(base, TASK, QUERIES, sdft.LMFinetune("sft", steps=3, lr=1e-2), seed=0)
    assert any(not torch.equal(p, q) for p, q in zip(tuned.parameters(), base.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), before, strict=True))


def test_invalid_config_raises():
    with pytest.raises(ValueError, match="teacher"):
        sdft.LMFinetune(teacher="oracle")
    assert sdft.LMFinetune("sdft", teacher="frozen", direction="reverse").label == "sdft_frozen_reverse"
