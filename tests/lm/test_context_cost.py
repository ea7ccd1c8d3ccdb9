import pytest
import torch

from clrepro.lm import context_cost as cost
from clrepro.lm import tinylm as lm


def test_counted_attention_flops_match_the_closed_form():
    cfg = lm.LMConfig(d_model=32, n_layers=2, n_heads=4, context_length=128)
    model = lm.TinyLM(cfg).eval()
    for length in (16, 64, 128):
        assert cost.counted_flops(model, length)["attention"] == cost.forward_flops(cfg, length)["attention"]
    counted = cost.counted_flops(model, 64)
    assert counted["other"] == cost.forward_flops(cfg, 64)["dense"] + cost.forward_flops(cfg, 64)["head"]
    # doubling the length quadruples attention, doubles the dense layers
    f1, f2 = cost.forward_flops(cfg, 50), cost.forward_flops(cfg, 100)
    assert f2["attention"] == 4 * f1["attention"] and f2["dense"] == 2 * f1["dense"]


def test_blocks_within_budget_grow_with_the_budget():
    cfg = lm.LMConfig(d_model=32, n_layers=2, n_heads=4, context_length=128)
    one = sum(cost.forward_flops(cfg, 12).values())
    assert cost.blocks_within_budget(cfg, 20, 12, one) == 0
    assert cost.blocks_within_budget(cfg, 20, 12, 10 * one) < cost.blocks_within_budget(cfg, 20, 12, 100 * one)


@pytest.mark.slow
def test_peak_memory_grows_faster_than_the_context():
    cfg = lm.LMConfig(d_model=32, n_layers=1, n_heads=4, context_length=1024)
    mid, large = cost.peak_memory(cfg, 256, batch=16), cost.peak_memory(cfg, 1024, batch=16)
    assert large > 6 * mid > 0  # 4× the tokens: 4× if linear, 16× for the T² attention scores


def test_time_per_query_is_a_positive_duration():
    # Only the type of the answer: how it grows with length is measured by the context notebook's
    # cost section (a ratio within one run), never asserted here, where a loaded machine can
    # reorder two timings (this comparison once failed under a render beside the tests).
    torch.manual_seed(0)
    model = lm.TinyLM(lm.LMConfig(d_model=32, n_layers=1, n_heads=4, context_length=512)).eval()
    seconds = cost.time_per_query(model, 16, batch=4, repeats=3)
    assert isinstance(seconds, float) and 0 < seconds < 60
