"""The replay / curriculum buffer: priority, moving average and evictions on hand values, the
sampler's determinism and proportions, batch mixing, and an exact JSON round trip."""

import json

import numpy as np
import pytest

from jaxrl_reason.data import DataIterator
from jaxrl_reason.data.curriculum import PromptBuffer, mix_batch, priority


def test_priority_peaks_at_one_half():
    assert priority(0.5) == 0.25
    assert priority(0.25) == 0.1875 == priority(0.75)
    assert priority(0.0) == 0.0 == priority(1.0)
    np.testing.assert_allclose(
        priority(np.array([0.0, 0.1, 0.5, 0.9, 1.0])), [0, 0.09, 0.25, 0.09, 0]
    )


def test_moving_average_and_evictions():
    buf = PromptBuffer(capacity=10, ema=0.5, max_visits=3)
    buf.observe(7, 0.5)
    assert buf.pass_rate(7) == 0.5 and buf.visits(7) == 1
    buf.observe(7, 1.0)  # 0.5 * 0.5 + 0.5 * 1.0
    assert buf.pass_rate(7) == 0.75 and buf.visits(7) == 2
    assert buf.priorities().tolist() == [0.1875]
    buf.observe(7, 0.0)  # third group: retired at max_visits, whatever its rate (0.375)
    assert 7 not in buf and len(buf) == 0
    # All-wrong / all-right groups have no GRPO signal: never kept.
    buf.observe(3, 0.0)
    buf.observe(4, 1.0)
    assert len(buf) == 0
    # A rate that reaches exactly 1 through the average (ema = 1 keeps only the last) leaves.
    one = PromptBuffer(capacity=10, ema=1.0, max_visits=5)
    one.observe(1, 0.5)
    one.observe(1, 1.0)
    assert 1 not in one
    with pytest.raises(ValueError, match="pass_rate=1.5"):
        one.observe(2, 1.5)


def test_capacity_drops_the_lowest_priority_oldest_first():
    buf = PromptBuffer(capacity=2, ema=0.5, max_visits=9)
    buf.observe(10, 0.5)  # 0.25
    buf.observe(11, 0.25)  # 0.1875
    buf.observe(12, 0.5)  # 0.25: 11 has the lowest priority
    assert buf.indices().tolist() == [10, 12]
    buf.observe(13, 0.75)  # 0.1875, the newcomer is the lowest itself
    assert buf.indices().tolist() == [10, 12]
    buf.observe(12, 0.0)  # 12 -> 0.25 (priority 0.1875); insertion order is kept
    buf.observe(14, 0.5)  # full: 12 (0.1875) goes, 10 and 14 (0.25) stay
    assert buf.indices().tolist() == [10, 14]
    assert buf.mean_priority() == 0.25


def _buffer(rates: dict[int, float]) -> PromptBuffer:
    buf = PromptBuffer(capacity=100, ema=0.5, max_visits=9)
    for i, r in rates.items():
        buf.observe(i, r)
    return buf


def test_sampler_is_deterministic_and_proportional_to_priority():
    buf = _buffer({5: 0.5, 6: 0.1})  # priorities 0.25 and 0.09
    a = buf.sample(1, np.random.default_rng([0, 3]))
    b = buf.sample(1, np.random.default_rng([0, 3]))
    assert a.tolist() == b.tolist() and a.dtype == np.int64
    rng = np.random.default_rng(0)
    draws = [int(buf.sample(1, rng)[0]) for _ in range(4000)]
    assert np.mean(np.array(draws) == 5) == pytest.approx(0.25 / 0.34, abs=0.03)
    # Without replacement: both, once each, when k covers the buffer; exclusion respected.
    assert sorted(buf.sample(5, rng).tolist()) == [5, 6]
    assert buf.sample(2, rng, exclude=[5]).tolist() == [6]
    # A zero-priority entry (only a restored state can hold one) is never drawn.
    buf.restore({"index": [1, 2], "pass_rate": [0.0, 0.5], "visits": [1, 1]})
    assert buf.num_drawable() == 1
    assert {int(buf.sample(2, rng)[0]) for _ in range(50)} == {2}


def test_mix_batch_replays_the_fraction_and_draws_the_rest_fresh():
    # Empty buffer: the batch is the iterator's own.
    ref = DataIterator(100, batch_size=4, seed=1)
    it = DataIterator(100, batch_size=4, seed=1)
    rng = np.random.default_rng(0)
    idx, replayed = mix_batch(PromptBuffer(8), it.next_indices, 4, 0.5, rng)
    assert replayed == 0 and idx.tolist() == ref.next_indices().tolist()
    # Two drawable prompts, replay_fraction 0.5 of 4: 2 fresh (the iterator moves by 2), then 2
    # replayed (a buffer prompt also drawn fresh is excluded and the shortfall drawn fresh).
    expected_fresh = ref.next_indices().tolist()
    buf = _buffer({500: 0.5, 501: 0.5})
    idx, replayed = mix_batch(buf, it.next_indices, 4, 0.5, rng)
    assert replayed == 2 and idx[:2].tolist() == expected_fresh[:2]
    assert sorted(idx[2:].tolist()) == [500, 501] and it.state()["offset"] == 6
    nxt = DataIterator(100, batch_size=4, seed=1)
    stream = np.concatenate([nxt.next_indices() for _ in range(3)])
    buf = _buffer({int(stream[6]): 0.5, 900: 0.5})  # the next fresh prompt is in the buffer
    idx, replayed = mix_batch(buf, it.next_indices, 4, 0.75, rng)  # plans 2 (drawable)
    assert replayed == 1 and idx[-1] == 900
    assert idx[:3].tolist() == stream[6:9].tolist() and len(set(idx.tolist())) == 4


def test_state_round_trips_through_json_exactly():
    buf = PromptBuffer(capacity=4, ema=0.3, max_visits=5)
    for i, r in [(9, 1 / 3), (2, 0.5), (9, 2 / 3), (40, 0.125), (2, 0.875)]:
        buf.observe(i, r)
    state = json.loads(json.dumps(buf.state_dict()))
    again = PromptBuffer(capacity=4, ema=0.3, max_visits=5)
    again.restore(state)
    assert again.state_dict() == buf.state_dict()
    assert again.pass_rate(9) == 0.7 * (1 / 3) + 0.3 * (2 / 3)
    for seed in range(5):
        assert (
            again.sample(2, np.random.default_rng(seed)).tolist()
            == buf.sample(2, np.random.default_rng(seed)).tolist()
        )
    # The restored buffer keeps evolving like the original.
    buf.observe(40, 0.5)
    again.observe(40, 0.5)
    assert again.state_dict() == buf.state_dict()
    with pytest.raises(ValueError, match="2 indices, 1 pass rates"):
        again.restore({"index": [1, 2], "pass_rate": [0.5], "visits": [1, 1]})
    with pytest.raises(ValueError, match="malformed"):
        again.restore({"index": [1]})


def test_iterator_count_cuts_the_same_stream():
    a = DataIterator(7, batch_size=4, seed=2)
    b = DataIterator(7, batch_size=4, seed=2)
    whole = np.concatenate([a.next_indices() for _ in range(3)])  # crosses an epoch
    parts = np.concatenate([b.next_indices(n) for n in (3, 1, 0, 5, 3)])
    assert parts.tolist() == whole.tolist() and b.state() == a.state()
