import numpy as np
import pytest

from vlarl.policies.openvla.action_tokenizer import ActionNormStats, ActionTokenizer


def test_hand_computed_ids():
    tok = ActionTokenizer(vocab_size=32000)
    # edges: linspace(-1, 1, 256); digitize gives 1..256 -> ids 31999..31744
    assert tok.encode(np.array([-1.0]))[0] == 32000 - 1  # == first edge -> bin 1
    assert tok.encode(np.array([1.0]))[0] == 32000 - 256  # == last edge -> bin 256
    assert tok.encode(np.array([-5.0, 5.0])).tolist() == [31999, 31744]  # clipped to the range
    assert tok.encode(np.array([0.0]))[0] == 32000 - 128  # 0 lies between edges 127 and 128 -> bin 128
    edge = tok.bins[10]
    assert tok.encode(np.array([edge]))[0] == 32000 - 11  # an exact edge belongs to the bin on its right
    assert tok.encode(np.array([np.nextafter(edge, -2)]))[0] == 32000 - 10
    assert tok.first_id == 31744


def test_decode_hand_cases_and_out_of_range_ids():
    tok = ActionTokenizer(vocab_size=32000)
    width = 2 / 255
    assert tok.decode(np.array([31999]))[0] == pytest.approx(-1 + width / 2, abs=1e-6)  # centre 0
    assert tok.decode(np.array([31744]))[0] == pytest.approx(1 - width / 2, abs=1e-6)  # clipped to centre 254
    assert tok.decode(np.array([31745]))[0] == pytest.approx(1 - width / 2, abs=1e-6)  # centre 254
    assert tok.decode(np.array([5, 40000])).tolist() == pytest.approx([1 - width / 2, -1 + width / 2], abs=1e-6)


def test_round_trip_error_within_half_a_bin_and_matches_reference_loop():
    tok = ActionTokenizer(vocab_size=516)
    x = np.random.default_rng(0).uniform(-1, 1, (2000, 7))
    ids = tok.encode(x)
    assert ids.min() >= 516 - 256 and ids.max() <= 515
    err = np.abs(tok.decode(ids) - x)
    assert err.max() <= 1 / 255 + 1e-6  # half a bin width (2 / 255)
    assert np.abs(tok.decode(tok.encode(np.array([-1.0, 1.0]))) - [-1, 1]).max() <= 1 / 255 + 1e-6
    ref = np.empty_like(ids)
    for i, v in np.ndenumerate(x):  # slow reference: count the edges <= v
        ref[i] = 516 - sum(1 for e in tok.bins if e <= v)
    np.testing.assert_array_equal(ids, ref)


def test_norm_stats_round_trip_and_mask():
    rng = np.random.default_rng(1)
    actions = np.stack([rng.uniform(-0.3, 0.7, 500), rng.uniform(2, 4, 500), np.zeros(500)], axis=1)
    stats = ActionNormStats.from_actions(actions)
    assert stats.mask.tolist() == [True, True, False]  # a constant dim is not normalised
    norm = stats.normalize(actions)
    assert norm.min() >= -1 and norm.max() <= 1
    inside = (actions[:, 1] > stats.q01[1]) & (actions[:, 1] < stats.q99[1])
    np.testing.assert_allclose(stats.unnormalize(norm)[inside, 1], actions[inside, 1], rtol=1e-5)
    edges = stats.normalize(np.array([[stats.q01[0], stats.q99[1], 0.5]]))[0]
    assert edges.tolist() == pytest.approx([-1, 1, 0.5])
    again = ActionNormStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.q99, stats.q99)


def test_norm_stats_without_mask_normalise_every_dim():
    stats = ActionNormStats.from_dict({"q01": [-2.0, 0.0], "q99": [2.0, 4.0]})  # OpenVLA treats no mask as all-True
    assert stats.mask.tolist() == [True, True]
    np.testing.assert_allclose(stats.normalize(np.array([[1.0, 1.0]])), [[0.5, -0.5]])
