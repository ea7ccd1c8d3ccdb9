import random

import pytest
import torch

from clrepro import metrics
from clrepro.lm import context_memory as cm
from clrepro.lm import tinylm as lm


def block(tag, *pairs):
    return cm.Block(tag, tuple((p[0], p[1]) for p in pairs))


def test_prompt_lists_every_block_then_the_query_tag_and_key():
    blocks = [block("U0", "ab"), block("S1", "cd", "ef")]
    assert cm.prompt(blocks, "S1", "e") == (
        "<bos>", "U0", "a", "b", ";", "S1", "c", "d", ";", "e", "f", ";", "S1", "e")


def test_truncation_drops_the_oldest_blocks_first():
    blocks = [block(tag, "ab", "cd") for tag in ("U0", "U1", "U2", "U3")]
    size = len(blocks[0].tokens())
    kept = cm.fit_window(blocks, budget=2 * size + 10, query_tokens=10)
    assert [b.tag for b in kept] == ["U2", "U3"]
    assert cm.fit_window(blocks, budget=2 * size + 9, query_tokens=10) == blocks[3:]
    assert cm.fit_window(blocks, budget=1000) == blocks


def facts_of(tokens, tag):
    start = tokens.index(tag)
    stop = next((i for i in range(start + 1, len(tokens)) if tokens[i] in cm.TAGS), len(tokens))
    body = tokens[start + 1:stop]
    return {body[i]: body[i + 1] for i in range(0, len(body), 3)}


def test_window_mix_keys_are_distinct_and_every_query_is_a_fact_of_its_block():
    mix, rng = cm.WindowMix(max_blocks=4, max_facts=4, n_queries=3), random.Random(0)
    for _ in range(300):
        ex = mix.sample(rng)
        assert len(ex.prompt) + cm.ANSWER_TOKENS <= mix.longest_window
        window = ex.prompt[1:-2]
        keys = [window[i] for i in range(len(window)) if window[i] not in cm.TAGS and window[i] != ";"][::2]
        assert len(set(keys)) == len(keys)
        assert facts_of(window, ex.prompt[-2])[ex.prompt[-1]].upper() == ex.answer
        ids, answer_next = mix.training_sequence(rng)
        tokens = [lm.VOCAB[i] for i in ids]
        assert len(tokens) <= mix.train_length and sum(answer_next) == 3
        n_window = len(tokens) - 4 * 3
        for q in range(n_window, len(tokens), 4):
            tag, key, answer, end = tokens[q:q + 4]
            assert answer_next[q + 1] and end == ";"
            assert facts_of(tokens[1:n_window], tag)[key].upper() == answer
    with pytest.raises(ValueError, match="max_blocks"):
        cm.WindowMix(max_blocks=9)
    with pytest.raises(ValueError, match="max_facts"):
        cm.WindowMix(max_blocks=8, max_facts=4)


def test_training_batch_masks_exactly_the_positions_before_answers():
    mix = cm.WindowMix(n_queries=2)
    tokens, mask = cm.training_batch(mix, random.Random(0), 8)
    assert mask.sum() == 16
    targets = tokens[:, 1:][mask[:, :-1]]
    assert all(lm.VOCAB[int(t)] in lm.UPPER for t in targets)


def test_stream_tasks_have_distinct_tags_and_keys_and_the_teacher_sees_the_fact():
    stream = cm.make_stream(seed=3, n_tasks=6, n_facts=4)
    assert len({t.token for t in stream}) == 6
    keys = [k for t in stream for k, _ in t.block.facts]
    assert len(set(keys)) == 24
    task = stream[0]
    key, value = task.block.facts[0]
    assert task.expert(key) == value
    assert task.teacher_prompt(key, (key, value)) == cm.prompt([cm.Block(task.token, ((key, value),))],
                                                                task.token, key)
    assert task.student_prompt(key) == cm.prompt([], task.token, key)
    with pytest.raises(ValueError, match="n_tasks"):
        cm.make_stream(0, 7, 4)


def test_the_answer_depends_on_the_demonstration_in_context():
    torch.manual_seed(0)
    model = lm.TinyLM(lm.LMConfig(d_model=32, n_layers=2, n_heads=4, context_length=64)).eval()
    a = lm.pad_left([lm.encode(cm.prompt([block("U0", "ab", "cd")], "U0", "a"))])
    b = lm.pad_left([lm.encode(cm.prompt([block("U0", "ac", "cd")], "U0", "a"))])
    with torch.no_grad():
        assert not torch.allclose(model(a)[0, -1], model(b)[0, -1])


def test_stream_rows_give_r_matrices_the_metrics_module_reads():
    import pandas as pd

    stream = pd.DataFrame([{"arm": "context", "after_task": j, "eval_task": i, "accuracy": 100.0 - 10 * (j - i),
                            "seed": 0} for j in range(3) for i in range(j + 1)])
    rows = cm.stream_rows(stream, "context/memory", cm.ContextExperiment())
    ((_, R, _),) = list(metrics.matrices(rows))
    assert metrics.average_accuracy(R) == pytest.approx(90.0)
    assert metrics.backward_transfer(R) == pytest.approx(-15.0)


@pytest.mark.slow
def test_a_pretrained_model_answers_from_the_window_and_follows_a_changed_fact():
    cfg = lm.LMConfig(d_model=64, n_layers=2, n_heads=4, context_length=64)
    model = cm.pretrain_base(cfg, cm.WindowMix(max_blocks=2, max_facts=2), 2000, 32, 3e-3, 0)
    assert cm.accuracy(model, cm.rot_examples(0, 200, 1, None, 2)) > 80
    rng, changed = random.Random(1), 0
    for _ in range(50):
        (b,) = cm.random_blocks(rng, 1, [2])
        key, value = b.facts[0]
        other = next(c for c in lm.LOWER if c != value)
        edited = cm.Block(b.tag, ((key, other), *b.facts[1:]))
        before, after = lm.answers(model, [cm.prompt([b], b.tag, key), cm.prompt([edited], b.tag, key)], max_new=1)
        changed += before.lower() == value and after.lower() == other
    assert changed > 25  # the answer follows the fact in the window
