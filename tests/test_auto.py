"""``sampler: auto``: random slots judge every arm by how well its scores rank the model's errors.

The stream simulator's two-arm choice keeps an EXP3 bandit (:class:`Exp3`).
"""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from activestream import samplers
from activestream.actors.queue import QueryQueue
from activestream.samplers.auto import ARMS, ErrorJudge, Exp3, auto_scores, error_auc


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


scores_and_errors = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])),
        hnp.arrays(np.bool_, n).filter(lambda e: 0 < e.sum() < len(e)),
    )
)


@given(scores_and_errors)
def test_error_auc_is_the_roc_auc_of_scores_against_errors_ties_counted_half(data):
    scores, errors = data
    assert error_auc(scores, errors) == pytest.approx(roc_auc_score(errors, scores))


@given(scores_and_errors)
def test_reversed_scores_give_the_complementary_error_auc(data):
    scores, errors = data
    assert error_auc(-scores, errors) == pytest.approx(1.0 - error_auc(scores, errors))


def test_the_random_arm_is_judged_uninformative_whatever_its_scores():
    judge = ErrorJudge(["margin", "random"], np.random.default_rng(0))
    for i in range(20):
        judge.record([0.5, float(i % 2)], bool(i % 2))  # random's scores happen to match
    auc, se = judge.estimates()
    assert (auc[1], se[1]) == (0.5, 0.0)


def judged(auc_good: float, n: int = 200, seed: int = 0) -> ErrorJudge:
    """A judge fed ``n`` random slots: arm 0 ranks errors at ``auc_good``, arm 1 at chance."""
    rng = np.random.default_rng(seed)
    judge = ErrorJudge(["good", "noise", "random"], np.random.default_rng(1))
    for _ in range(n):
        error = bool(rng.random() < 0.3)
        shift = 2.0 * (auc_good - 0.5) * 3  # a normal shift whose AUC is about auc_good
        judge.record([rng.normal(shift if error else 0.0), rng.random(), rng.random()], error)
    return judge


def test_the_arm_whose_scores_rank_the_errors_gets_most_batches():
    judge = judged(0.8)
    p = judge.probabilities()
    assert p[0] > 0.95
    assert p.sum() == pytest.approx(1.0)
    assert judge.summary()["good"]["error_auc"] > 0.75


def test_without_evidence_every_arm_keeps_a_share():
    p = ErrorJudge(["a", "b", "random"], np.random.default_rng(0)).probabilities()
    assert p.min() > 0.05


def test_arms_no_better_than_random_keep_sharing_with_it_on_average():
    # Two arms at chance: random wins when both draws fall below 0.5, a quarter of the time.
    p = np.mean([judged(0.5, n=60, seed=s).probabilities() for s in range(20)], axis=0)
    assert 0.1 < p[2] < 0.5


def test_the_judge_forgets_labels_older_than_its_window():
    judge = ErrorJudge(["a", "random"], np.random.default_rng(0), window=10)
    for i in range(25):
        judge.record([float(i), 0.0], i % 3 == 0)
    assert judge.judged == 10


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="2 arm scores"):
        ErrorJudge(["a", "random"], np.random.default_rng(0)).record([1.0, 2.0, 3.0], True)


def auto_queue(explore_p: float = 0.5, **kw) -> QueryQueue:
    """Two arms ranking disjoint candidates; 8 random items with every arm's score."""
    queue = QueryQueue(explore_p=explore_p, lease_seconds=60, seed=0, arms=("a", "random"), **kw)
    ranked_a = [f"a{i}" for i in range(8)]
    ranked_r = [f"r{i}" for i in range(8)]
    sample = [f"s{i}" for i in range(8)]
    queue.update_round(
        ranked_a,
        [1.0] * 8,
        [1] * 8,
        sample,
        1,
        arm_ranked=[ranked_a, ranked_r],
        preds={i: 0 for i in sample},
        slot_scores={i: [float(k), 0.0] for k, i in enumerate(sample)},
    )
    return queue


def test_a_lease_takes_its_exploited_picks_from_one_arms_ranking():
    picks = [q for q in auto_queue().lease(8) if not q.explored]
    assert picks and len({q.id[0] for q in picks}) == 1


def test_labels_of_random_slots_judge_the_arms_and_exploited_ones_do_not():
    queue = auto_queue()
    picks = queue.lease(8)
    slots = [q.id for q in picks if q.explored]
    assert slots and len(slots) < len(picks)
    ids = [q.id for q in picks]
    queue.mark_labeled(ids, [1 if int(i[1]) >= 4 else 0 for i in ids])  # the model said 0
    assert queue.arms()["a"]["judged"] == len(slots)


def test_random_slots_that_expose_an_arm_hand_it_the_next_batches():
    queue = auto_queue(explore_p=0.0)  # every slot explores: 8 judged labels
    ids = [q.id for q in queue.lease(8)]
    queue.mark_labeled(ids, [1 if int(i[1]) >= 4 else 0 for i in ids])  # high score = error
    assert queue.arms()["a"]["error_auc"] == 1.0
    assert queue.arms()["a"]["probability"] > 0.95


def test_cold_start_picks_judge_nothing():
    queue = auto_queue(warmup=True)
    ids = [q.id for q in queue.lease(8)]
    queue.mark_labeled(ids, [1] * 8)
    assert queue.arms()["a"]["judged"] == 0


def test_an_expired_lease_judges_nothing():
    now = [0.0]
    queue = auto_queue(explore_p=0.0, clock=lambda: now[0])
    ids = [q.id for q in queue.lease(4)]
    now[0] = 100.0
    queue.depth()  # expires the leases
    queue.mark_labeled(ids, [1] * 4)
    assert queue.arms()["a"]["judged"] == 0
