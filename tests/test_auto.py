"""``sampler: auto``: an EXP3 bandit over the probability samplers and random."""

import numpy as np
import pytest

from activestream import samplers
from activestream.actors.queue import QueryQueue
from activestream.samplers.auto import ARMS, Exp3, auto_scores


def test_auto_is_a_sampler_name_but_not_in_the_per_sampler_suite():
    assert samplers.spec("auto").arms == ARMS
    assert "auto" not in samplers.names()


def test_auto_scores_hold_each_arms_scores_in_arm_order():
    probs = np.array([[0.6, 0.3, 0.1], [0.34, 0.33, 0.33]])
    scores = auto_scores(np.random.default_rng(0))(probs)  # (N, A)
    assert scores.shape == (2, len(ARMS))
    for a, name in enumerate(ARMS[:-1]):  # the deterministic ones
        np.testing.assert_allclose(scores[:, a], samplers.get(name)(probs))


def test_every_arm_keeps_the_exploration_floor_however_lopsided_the_rewards():
    bandit = Exp3(ARMS, gamma=0.2, rng=np.random.default_rng(0))
    for _ in range(500):
        bandit.update(0, 1.0, float(bandit.probabilities()[0]))
    p = bandit.probabilities()
    assert p.sum() == pytest.approx(1.0)
    assert p.min() >= 0.2 / len(ARMS) - 1e-12
    assert p.argmax() == 0


def test_the_bandit_learns_to_prefer_the_arm_that_pays_more():
    rng = np.random.default_rng(1)
    bandit = Exp3(["good", "bad"], gamma=0.1, rng=np.random.default_rng(2))
    for _ in range(400):
        arm, p = bandit.choose()
        bandit.update(arm, float(rng.random() < (0.7 if arm == 0 else 0.2)), p)
    assert bandit.probabilities()[0] > 0.8


@pytest.mark.parametrize("reward", [-0.1, 1.5])
def test_rewards_outside_the_unit_interval_are_rejected(reward):
    with pytest.raises(ValueError, match="reward"):
        Exp3(ARMS, 0.3, np.random.default_rng(0)).update(0, reward, 0.5)


def auto_queue() -> QueryQueue:
    queue = QueryQueue(explore_p=1.0, lease_seconds=60, seed=0, arms=("a", "b"), gamma=0.5)
    ranked_a = [f"a{i}" for i in range(8)]
    ranked_b = [f"b{i}" for i in range(8)]
    preds = {i: 0 for i in ranked_a + ranked_b}
    queue.update_round(
        ranked_a, [1.0] * 8, [1] * 8, [], 1, arm_ranked=[ranked_a, ranked_b], preds=preds
    )
    return queue


def test_a_lease_takes_its_exploited_picks_from_one_arms_ranking():
    picks = [q.id for q in auto_queue().lease(4)]
    assert len({p[0] for p in picks}) == 1


def test_an_arm_is_paid_for_the_labels_its_picks_corrected():
    queue = auto_queue()
    picks = [q.id for q in queue.lease(4)]
    arm = "ab".index(picks[0][0])
    queue.mark_labeled(picks, [1] * 4)  # the model said 0: every pick corrected it
    summary = queue.arms()
    assert summary[("a", "b")[arm]]["reward_sum"] == pytest.approx(1.0)
    assert summary[("a", "b")[1 - arm]]["reward_sum"] == 0.0


def test_labels_the_model_already_knew_pay_nothing():
    queue = auto_queue()
    picks = [q.id for q in queue.lease(4)]
    queue.mark_labeled(picks, [0] * 4)
    assert sum(a["reward_sum"] for a in queue.arms().values()) == 0.0


def test_an_expired_lease_neither_pays_nor_blames_its_arm():
    now = [0.0]
    queue = QueryQueue(
        explore_p=1.0, lease_seconds=5, seed=0, arms=("a",), gamma=1.0, clock=lambda: now[0]
    )
    queue.update_round(["a0"], [1.0], [1], [], 1, arm_ranked=[["a0"]], preds={"a0": 0})
    queue.lease(1)
    now[0] = 10.0
    queue.depth()  # expires the lease
    queue.mark_labeled(["a0"], [1])
    assert queue.arms()["a"]["reward_sum"] == 0.0
