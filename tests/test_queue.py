import threading

import numpy as np

from activestream.actors.queue import QueryQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_queue(p=1.0, lease=10.0, clock=None) -> QueryQueue:
    queue = QueryQueue(explore_p=p, lease_seconds=lease, seed=0, clock=clock or Clock())
    ranked = [f"r{i}" for i in range(20)]
    queue.update_round(ranked, np.linspace(1, 0, 20), [3] * 20, [f"x{i}" for i in range(20)], 3)
    return queue


def test_leases_hand_out_the_best_candidates_with_their_version():
    queries = make_queue().lease(3)
    assert [q.id for q in queries] == ["r0", "r1", "r2"]
    assert all(q.model_version == 3 for q in queries)


def test_a_leased_item_is_not_handed_out_again():
    queue = make_queue()
    first, second = queue.lease(5), queue.lease(5)
    assert not {q.id for q in first} & {q.id for q in second}


def test_a_labeled_item_is_never_asked_again_even_after_a_new_round():
    queue = make_queue()
    queue.mark_labeled(["r0", "r1"])
    queue.update_round(["r0", "r1", "r2"], [0.9, 0.8, 0.7], [4, 4, 4], [], 4)
    assert [q.id for q in queue.lease(3)] == ["r2"]


def test_taken_names_the_items_leased_or_labeled_now():
    clock = Clock()
    queue = make_queue(lease=10.0, clock=clock)
    leased = [q.id for q in queue.lease(2)]
    queue.mark_labeled(["r5"])
    assert queue.taken(["r5", *leased, "r9", "nowhere"]) == ["r5", *leased]
    clock.now = 11.0  # the leases expired, the label stays
    assert queue.taken(["r5", *leased]) == ["r5"]


def test_a_lease_falls_back_on_reserve_picks_once_the_rounds_lists_are_spent():
    draws = []

    def reserve(draw: int) -> list[str]:
        draws.append(draw)
        return [f"z{draw}-{i}" for i in range(50)]

    queue = QueryQueue(explore_p=1.0, seed=0, clock=Clock(), reserve_sample=reserve, low_water=30)
    queue.update_round([f"r{i}" for i in range(20)], np.linspace(1, 0, 20), [3] * 20,
                       [f"x{i}" for i in range(20)], 3)  # fmt: skip
    first = queue.lease(15)  # 25 of 40 left: under the low water, a draw starts
    assert queue.wait_refilled() and draws == [1]
    rest = queue.lease(60)  # 25 from the round, 35 from the reserve
    ids = [q.id for q in first + rest]
    assert len(ids) == len(set(ids)) == 75
    assert sum(i.startswith("z") for i in ids) == 35
    assert all(q.explored for q in rest if q.id.startswith("z"))
    assert queue.stats()["reserve_leased"] == 35 and queue.stats()["empty_leases"] == 0


def test_reserve_picks_skip_items_labeled_meanwhile():
    queue = QueryQueue(
        seed=0, clock=Clock(), reserve_sample=lambda d: ["a", "b", "c"], low_water=10
    )
    queue.update_round([], [], [], ["x"], 0)
    queue.mark_labeled(["b"])
    assert [q.id for q in queue.lease(1)] == ["x"]
    assert queue.wait_refilled()
    assert sorted(q.id for q in queue.lease(5)) == ["a", "c"]
    assert queue.lease(1) == [] and queue.stats()["empty_leases"] == 1


def test_expired_leases_come_back():
    clock = Clock()
    queue = make_queue(lease=10.0, clock=clock)
    first = queue.lease(2)
    clock.now = 9.0
    assert {q.id for q in queue.lease(2)}.isdisjoint({q.id for q in first})
    clock.now = 10.5
    assert [q.id for q in queue.lease(2)] == [q.id for q in first]


def test_released_items_can_be_leased_again_at_once():
    queue = make_queue()
    first = queue.lease(1)
    queue.release([first[0].id])
    assert queue.lease(1)[0].id == first[0].id


def test_exploration_share_is_within_tolerance_of_one_minus_p():
    queue = QueryQueue(explore_p=0.8, lease_seconds=10.0, seed=1, clock=Clock())
    n = 3000
    queue.update_round(
        [f"r{i}" for i in range(n)], [0.5] * n, [0] * n, [f"x{i}" for i in range(n)], 0
    )
    queries = queue.lease(2000)
    share = np.mean([q.explored for q in queries])
    assert abs(share - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 2000)
    assert len({q.id for q in queries}) == 2000


def test_depth_counts_candidates_still_available():
    queue = make_queue()
    queue.lease(5)
    queue.mark_labeled(["r10"])
    assert queue.depth() == 14


def test_a_diversity_queue_spreads_one_lease_over_the_embedding_space():
    from activestream.samplers import spec

    queue = QueryQueue(explore_p=1.0, seed=0, batch=spec("kcenter").batch)
    ranked = [f"r{i}" for i in range(20)]
    # The ten best candidates sit in one tight cluster, the next ten in another.
    embeddings = np.array([[0.0, i * 0.01] for i in range(10)] + [[5.0, i] for i in range(10)])
    queue.update_round(ranked, np.linspace(1, 0, 20), [1] * 20, [], 1, embeddings)
    picked = [int(q.id[1:]) for q in queue.lease(4)]
    assert len(set(picked)) == 4
    assert any(i < 10 for i in picked) and any(i >= 10 for i in picked)
    assert make_queue().lease(4)[0].id == "r0"  # without embeddings: by score alone


def cold_queue(ids, **kwargs) -> QueryQueue:
    queue = QueryQueue(explore_p=0.9, seed=0, clock=Clock(), cold_sample=lambda: ids, **kwargs)
    assert queue.wait_cold(5)
    return queue


def test_before_the_first_round_the_queue_serves_random_pool_items_marked_explored():
    queue = cold_queue([f"c{i}" for i in range(10)], warmup=True)
    queries = queue.lease(4)
    assert len(queries) == 4
    assert {q.id for q in queries} <= {f"c{i}" for i in range(10)}
    assert all(q.explored and q.model_version == -1 for q in queries)


def test_without_a_cold_start_phase_the_cold_sample_still_fills_every_slot():
    queries = cold_queue([f"c{i}" for i in range(10)], warmup=False).lease(5)
    assert len(queries) == 5 and all(q.explored for q in queries)


def test_the_first_round_replaces_the_cold_sample():
    queue = cold_queue(["c0", "c1"])
    queue.update_round(["r0"], [0.9], [1], ["x0"], 1)
    assert {q.id for q in queue.lease(5)} == {"r0", "x0"}


def test_a_cold_sample_that_lands_after_a_round_is_dropped():
    gate = threading.Event()

    def slow_sample():
        gate.wait(5)
        return ["late"]

    queue = QueryQueue(seed=0, clock=Clock(), cold_sample=slow_sample)
    queue.update_round(["r0"], [0.9], [1], ["x0"], 1)
    gate.set()
    assert queue.wait_cold(5)
    assert "late" not in {q.id for q in queue.lease(5)}


def test_a_failing_cold_sample_is_reported_and_leaves_the_queue_waiting_for_a_round():
    def broken():
        raise OSError("bucket gone")

    queue = QueryQueue(seed=0, clock=Clock(), cold_sample=broken)
    assert queue.wait_cold(5)
    assert queue.lease(3) == []
    assert "bucket gone" in queue.cold_error


def test_round_count_is_zero_until_a_round_lands_so_a_restarted_queue_asks_for_one():
    queue = cold_queue(["c0"])
    assert queue.round_count() == 0
    queue.update_round(["r0"], [0.9], [1], [], 1)
    assert queue.round_count() == 1
