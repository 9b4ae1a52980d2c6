"""The rollout batch schema: declared keys, shape/dtype checks, select/concat, observation rows, chunk targets."""

import dataclasses

import numpy as np
import pytest
import torch

from vlarl.data.dataset import action_chunks
from vlarl.learner import at_granularity
from vlarl.rollout.schema import SCHEMA, Batch, concat_batches, gather_obs


def _batch(t=3, b=4, k=2, a=3, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(t, b, dtype=torch.bool)
    mask[t - 1, 0] = False  # env 0's episode is one step shorter
    return Batch(
        image=np.random.default_rng(seed).integers(0, 256, (t, b, 1, 8, 8, 3), dtype=np.uint8),
        proprio=np.random.default_rng(seed).normal(size=(t, b, 2)).astype(np.float32),
        instruction=[f"task {i}" for i in range(b)],
        action_tokens=torch.randint(0, 256, (t, b, k, a), generator=g),
        actions=torch.rand(t, b, k, a, generator=g),
        chain=torch.rand(t, b, 2, k, a, generator=g),
        denoise_step=torch.randint(-1, 1, (t, b), generator=g),
        logprob=-torch.rand(t, b, k, a, generator=g),
        value=torch.rand(t, b, k, generator=g),
        next_value=torch.rand(t, b, k, generator=g),
        reward=torch.rand(t, b, k, generator=g),
        terminated=torch.zeros(t, b, dtype=torch.bool),
        truncated=torch.zeros(t, b, dtype=torch.bool),
        mask=mask,
        steps=mask.long() * k,
        policy_version=torch.full((t, b), 7),
        group_id=torch.arange(b) // 2,
        task=[f"t{i}" for i in range(b)],
        success=torch.arange(b) % 2 == 0,
    )


def test_batch_fields_are_the_schema_keys_in_order():
    assert [f.name for f in dataclasses.fields(Batch) if f.name != "stats"] == list(SCHEMA)
    assert _batch().check() == {"T": 3, "B": 4, "K": 2, "A": 3, "S": 2, "V": 1, "H": 8, "W": 8, "C": 3, "P": 2}


@pytest.mark.parametrize(
    ("key", "bad", "message"),
    [
        (
            "logprob",
            torch.zeros(3, 4, 3),
            r"'logprob' is float32 \[3, 4, 3\]; the schema declares float32 \[T, B, K, A\]",
        ),
        ("mask", torch.ones(3, 4), r"'mask' is float32 \[3, 4\]; the schema declares bool"),
        ("reward", torch.zeros(5, 4, 2), r"'reward' has T=5, other keys T=3"),
        ("task", ["a", "b"], r"'task' has B=2, other keys B=4"),
        ("image", np.zeros((3, 4, 1, 8, 8, 3), np.float32), r"'image' is float32 .* declares uint8"),
    ],
)
def test_a_batch_off_the_schema_fails_naming_the_key(key, bad, message):
    fields = {f.name: getattr(_batch(), f.name) for f in dataclasses.fields(Batch) if f.name != "stats"}
    with pytest.raises(ValueError, match=message):
        Batch(**(fields | {key: bad}))


def test_select_and_concat_are_inverse_along_envs():
    batch = _batch()
    left, right = batch.select([0, 1]), batch.select([2, 3])
    assert left.check()["B"] == 2 and left.instruction == ["task 0", "task 1"]
    again = concat_batches([left, right])
    for name in SCHEMA:
        x, y = getattr(batch, name), getattr(again, name)
        assert (x == y) if isinstance(x, list) else np.array_equal(np.asarray(x), np.asarray(y)), name


def test_concat_pads_the_shorter_batch_with_masked_steps():
    long, short = _batch(t=3), _batch(t=2, seed=1)
    both = concat_batches([long, short])
    assert both.check()["T"] == 3 and both.check()["B"] == 8
    assert not both.mask[2, 4:].any() and both.mask[:2, 4:].equal(short.mask)
    assert (both.action_tokens[2, 4:] == 0).all() and both.policy_version[:2, 4:].eq(7).all()


def test_groups_within_keeps_mixed_groups():
    batch = _batch()  # groups {0, 1} and {2, 3}, each one success and one failure
    assert batch.groups_within(2, 0.1, 0.9).success.numel() == 4
    assert batch.groups_within(2, 0.6, 1.0).success.numel() == 0


def test_gather_obs_by_rows_mask_and_time_major_pairs():
    batch = _batch()
    t, b = torch.tensor([0, 2, 1]), torch.tensor([3, 1, 1])
    rows = batch.observation(t, b)
    assert np.array_equal(rows["image"], batch.image[[0, 2, 1], [3, 1, 1]])
    assert rows["instruction"] == ["task 3", "task 1", "task 1"]
    flat = {"image": batch.image[0], "proprio": batch.proprio[0], "instruction": batch.instruction}
    by_mask = gather_obs(flat, np.array([False, True, False, True]))
    by_index = gather_obs(flat, [1, 3])
    assert by_mask["instruction"] == by_index["instruction"] == ["task 1", "task 3"]
    assert np.array_equal(by_mask["proprio"], by_index["proprio"])


def test_action_chunks_pad_with_the_episodes_last_action():
    action = np.arange(7, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    chunks = action_chunks(action, np.array([0, 0, 0, 1, 1, 2, 2]), 3)
    assert chunks.shape == (7, 3, 2)
    expected = [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4], [5, 6, 6], [6, 6, 6]]
    assert chunks[..., 0].tolist() == expected and np.array_equal(chunks[..., 0], chunks[..., 1])
    assert np.array_equal(action_chunks(action, np.zeros(7), 1)[:, 0], action)


def test_logprob_granularity_by_hand():
    logp = torch.tensor([[[-1.0, -2.0], [-3.0, -4.0]]])  # N=1, K=2, A=2
    assert at_granularity(logp, "token").tolist() == [[-1.0, -2.0, -3.0, -4.0]]
    assert at_granularity(logp, "action").tolist() == [[-3.0, -7.0]]
    assert at_granularity(logp, "chunk").tolist() == [[-10.0]]
    with pytest.raises(ValueError, match="token, action or chunk"):
        at_granularity(logp, "step")
