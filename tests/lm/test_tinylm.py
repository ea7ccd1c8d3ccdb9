import random

import pytest
import torch

from clrepro.lm import tinylm as lm


def small_model(seed: int = 0) -> lm.TinyLM:
    torch.manual_seed(seed)
    return lm.TinyLM(lm.LMConfig(d_model=32, n_layers=1, n_heads=2, context_length=64)).eval()


def test_ops_on_hand_checked_words():
    assert lm.OPS["reverse"]("abc") == "cba"
    assert lm.OPS["rotate"]("abcd") == "bcda"
    assert lm.OPS["shift1"]("abz") == "bca"
    assert lm.OPS["sort"]("dbca") == "abcd"
    assert lm.OPS["reverse_shift1"]("abz") == "acb"
    assert lm.OPS["swap_pairs"]("abcde") == "badce"
    assert lm.own_style("abc") == "ABC"


def test_encode_decode_round_trip_stops_at_eos():
    ids = lm.encode(["<bos>", "S0", *"abc", ">", *"CBA"]) + [lm.EOS, lm.INDEX["x"]]
    assert lm.decode(ids) == "abc>CBA"


def test_in_context_prompt_contains_the_demonstration():
    prompt = lm.in_context("U1", [("abc", "bdc")], "xyz")
    assert prompt == ("<bos>", "U1", "a", "b", "c", ">", "b", "d", "c", ";", "x", "y", "z", ">")


def test_training_mask_covers_answer_and_eos_only():
    tokens, mask = lm.training_batch([lm.Example(lm.zero_shot("S0", "abc"), "CBA"),
                                      lm.Example(lm.zero_shot("S1", "abcdef"), "BCDEFA")])
    for row, m in zip(tokens, mask, strict=True):
        predicted = row[1:][m[:-1]]  # the tokens the masked positions predict
        assert lm.decode(predicted.tolist() + [lm.EOS]) in ("CBA", "BCDEFA")
        assert predicted[-1] == lm.EOS


def test_left_padding_does_not_change_the_answer():
    model = small_model()
    short, long_ = lm.encode(lm.zero_shot("S0", "abc")), lm.encode(lm.zero_shot("S2", "abcdef"))
    alone = lm.generate(model, lm.pad_left([short]), 5)
    batched = lm.generate(model, lm.pad_left([short, long_]), 5)
    assert torch.equal(alone[0], batched[0])
    logits_alone = model(lm.pad_left([short]))[0, -1]
    logits_batched = model(lm.pad_left([short, long_]))[0, -1]
    torch.testing.assert_close(logits_alone, logits_batched, atol=1e-5, rtol=1e-5)


def test_generation_pads_after_eos_and_respects_context_length():
    model = small_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[lm.EOS] = 1.0  # logits favour <eos> everywhere (LayerNorm output is not 0)
        model.ln.weight.zero_()
        model.ln.bias.fill_(1.0)
    out = lm.generate(model, lm.pad_left([lm.encode(lm.zero_shot("S0", "abc"))]), 4)
    assert out.tolist() == [[lm.EOS, lm.PAD, lm.PAD, lm.PAD]]
    with pytest.raises(ValueError, match="context length"):
        model(torch.ones(1, 65, dtype=torch.long))


def test_pretrain_mix_respects_icl_fraction():
    rng = random.Random(0)
    none = [lm.PretrainMix(icl_fraction=0.0).sample(rng) for _ in range(50)]
    assert all(ex.prompt[1] in lm.SKILL_TOKENS for ex in none)
    every = [lm.PretrainMix(icl_fraction=1.0).sample(rng) for _ in range(50)]
    assert all(ex.prompt[1] in lm.PLACEHOLDERS and ";" in ex.prompt for ex in every)
    assert all(ex.answer == ex.answer.upper() for ex in none + every)


def test_pretraining_reduces_the_loss():
    model = small_model().train()
    losses = lm.pretrain(model, lm.PretrainMix(), steps=30, batch_size=16, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
