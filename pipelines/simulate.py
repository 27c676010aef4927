"""The oracle simulator: the whole active-learning loop with ground truth as the annotator.

For each strategy and seed it runs the loop's real parts,
:class:`~activestream.actors.trainer.Trainer`, :class:`~activestream.actors.scorer.Scorer` and
:class:`~activestream.actors.queue.QueryQueue`, in one process, so that many seeds finish in
minutes on a laptop; the same parts run as Ray actors in :mod:`activestream.pipelines.loop`. Each
round: score the pool with the newest weights, lease ``buffer_size`` queries (exploit with
probability p, explore otherwise), answer them from the ground truth, possibly ``answer_delay``
rounds late, train, and measure held-out accuracy.

Outputs follow the CLI contract: ``results.json`` and ``learning_curves.png``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from activestream import samplers
from activestream.actors.items import ItemStore
from activestream.actors.queue import QueryQueue, cold_start_over
from activestream.actors.scorer import Scorer
from activestream.actors.trainer import Trainer
from activestream.config import Config
from activestream.pipelines.curves import labels_to_reach
from activestream.pipelines.scoring import cold_start_on_embedding, embedding_model, scorer_embeds
from activestream.samplers.auto import Exp3
from activestream.sources.shards import ShardSet, load_arrays


@dataclass(frozen=True)
class Curve:
    """Accuracy on the held-out split after each training step of one run.

    ``asked`` is what the run actually queried: the item ids, in the order asked, so its length
    is the labels spent. ``seen`` (stream mode) counts the records that arrived, asked or
    skipped. Both are None for curves built elsewhere that did not record them.
    """

    labels: list[int]
    accuracy: list[float]
    seconds: float
    arms: dict[str, dict[str, float]] | None = None  # ``auto``: the bandit at the end
    asked: list[str] | None = None
    seen: int | None = None


def _ground_truth(pool: ShardSet, test: ShardSet) -> tuple[np.ndarray, ...]:
    """Pool ids, images and labels, then test images and labels; the oracle needs all labels."""
    ids, x_pool, y_pool = load_arrays(pool)
    _, x_test, y_test = load_arrays(test)
    if y_pool is None or y_test is None:
        raise ValueError("the simulator needs labeled pool and test shards (ground truth)")
    return ids, x_pool, y_pool, x_test, y_test


def run_once(
    cfg: Config,
    pool: ShardSet,
    test: ShardSet,
    *,
    strategy: str,
    seed: int,
    budget: int,
    answer_delay: int = 0,
    feature_cache: dict[str, np.ndarray] | None = None,
) -> Curve:
    """One simulated labeling session; ``answer_delay`` is in rounds (labels arrive late).

    With ``train: head`` and a backbone that does not depend on the seed (pretrained weights),
    pass the same ``feature_cache`` dict to every run: the pool's and test split's features
    are then computed once for all seeds and strategies.
    """
    began = time.perf_counter()
    run_cfg = cfg.with_overrides({"sampling.sampler": strategy})
    ids, x_pool, y_pool, x_test, y_test = _ground_truth(pool, test)
    truth = dict(zip(ids.tolist(), y_pool.tolist(), strict=True))
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=seed)
    scorer = Scorer(
        model=cfg.model,
        shape=pool.shape,
        num_classes=len(pool.classes),
        sampler=strategy,
        seed=seed,
        mc_samples=cfg.sampling.mc_samples,
        embed=scorer_embeds(run_cfg),
    )
    scorer.set_weights(trainer.state_arrays(), trainer.version)
    spec = samplers.spec(strategy)
    fixed_embedding = None  # a separate embedding model's features, the same every round
    if (emb_model := embedding_model(run_cfg)) is not None:
        frozen = emb_model.model_copy(update={"train": "head"})
        fixed_embedding = pretrained_features(cfg.model_copy(update={"model": frozen}), pool, test)[
            "pool"
        ]
    # Random is a cold start that never ends: with the same seed it asks exactly what a
    # sampler's cold start asks, so the two curves differ only from the hand-over on.
    passive = strategy == "random"
    queue = QueryQueue(
        explore_p=cfg.sampling.explore_p,
        lease_seconds=1e9,
        seed=seed,
        batch=spec.batch,
        warmup=passive or cfg.sampling.cold_start,
        arms=spec.arms,
    )
    row_of = {item: row for row, item in enumerate(ids.tolist())}
    rng = np.random.default_rng(seed)
    k = min(cfg.sampling.candidates, len(ids))
    pending: deque[list[str]] = deque()
    if cfg.model.train == "head":  # a frozen backbone: its features once, the head each round
        cache = feature_cache if feature_cache is not None else {}
        if "pool" not in cache and feature_cache is not None:  # shared: once per machine
            cache.update(
                pretrained_features(
                    cfg, pool, test, trainer=trainer, arrays=(ids, x_pool, y_pool, x_test, y_test)
                )
            )
        elif "pool" not in cache:
            cache["pool"], cache["test"] = trainer.features(x_pool), trainer.features(x_test)
        f_pool, f_test = cache["pool"], cache["test"]
        if cfg.training.semi_supervised_for(cfg.model) != "none":
            trainer.use_unlabeled(ids, f_pool)  # the cached features, not another backbone run

        def outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            return scorer.feature_outputs(f_pool)

        def evaluate() -> float:
            return trainer.evaluate_features(f_test, y_test)
    else:

        def outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            return scorer.outputs(x_pool)

        def evaluate() -> float:
            return trainer.evaluate(x_test, y_test)

    labels, accuracy = [0], [evaluate()]
    asked = 0
    order: list[str] = []  # the ids asked, in the order asked
    cold = cfg.sampling.cold_start_strategy if cold_start_on_embedding(cfg) else "random"
    asked_rows = np.zeros(len(ids), dtype=bool)
    cold_rng = np.random.default_rng([seed, 2])
    while asked < budget or pending:
        if asked < budget:
            probs, scores, embedding = outputs()
            if fixed_embedding is not None:
                embedding = fixed_embedding
            arm_ranked, preds, slot_scores = None, None, None
            sample_rows = rng.permutation(len(ids))[:k]
            sample = ids[sample_rows]
            if spec.arms is not None:  # auto: (N, A), one ranked list per arm
                arm_ranked = [_top_ids(ids, scores[:, a], k) for a in range(scores.shape[1])]
                preds = dict(
                    zip(sample.tolist(), probs[sample_rows].argmax(1).tolist(), strict=True)
                )
                slot_scores = dict(zip(sample.tolist(), scores[sample_rows], strict=True))
                scores = scores.mean(axis=1)
            top = samplers.TopK(k)
            top.push(ids, scores)
            best = top.result()
            if queue.warming and cold != "random" and not passive and embedding is not None:
                # Cold start on the embedding the scorers emit (the frozen features, or the
                # current model's penultimate layer), as in the service: this batch's picks go
                # first in the random list, which is all a warming queue hands out.
                free = np.flatnonzero(~asked_rows)
                picks = samplers.cold_picks(
                    cold,
                    embedding[free],
                    min(cfg.training.buffer_size, budget - asked),
                    rng=cold_rng,
                    already=embedding[asked_rows],
                )
                sample = np.concatenate([ids[free[picks]], sample])
            chosen = None if embedding is None else embedding[[row_of[i] for i in best.ids]]
            queue.update_round(
                best.ids,
                best.scores,
                best.versions,
                sample,
                scorer.version,
                chosen,
                arm_ranked=arm_ranked,
                preds=preds,
                slot_scores=slot_scores,
            )
            batch = queue.lease(min(cfg.training.buffer_size, budget - asked))
            if not batch:
                break
            asked += len(batch)
            asked_rows[[row_of[q.id] for q in batch]] = True
            pending.append([q.id for q in batch])
            order.extend(pending[-1])
        if len(pending) > answer_delay or asked >= budget:
            answered = pending.popleft()
            trainer.add_labels([{"id": i, "label": truth[i]} for i in answered])
            queue.mark_labeled(answered, [truth[i] for i in answered])
            if trainer.step_if_ready() or asked >= budget:
                trainer.partial_fit()  # a no-op when the buffer is empty
                scorer.set_weights(trainer.state_arrays(), trainer.version)
                hand_over = queue.warming and not passive
                if hand_over and cold_start_over(cfg.sampling, trainer.prequential()):
                    queue.end_warmup()
                labels.append(trainer.labels_seen)
                accuracy.append(evaluate())
    return Curve(labels, accuracy, time.perf_counter() - began, queue.arms(), asked=order)


def pretrained_features(
    cfg: Config,
    pool: ShardSet,
    test: ShardSet,
    *,
    trainer: Trainer | None = None,
    arrays: tuple[np.ndarray, ...] | None = None,
) -> dict[str, np.ndarray]:
    """A frozen pretrained backbone's features of the pool and test split, once per machine.

    Every seed, strategy and study part gets the same features, so they are kept under
    ``<data.cache_dir>/features/``, keyed by the model config and the data; a lock makes
    parallel workers wait for the one computing them instead of each running the backbone.

    Args:
        cfg: The model (backbone, input transform) and where the cache lives.
        pool: The pool split.
        test: The held-out split.
        trainer: Computes the features; None builds one from ``cfg``.
        arrays: ``(pool ids, pool images, pool labels, test images, test labels)`` when the
            caller has them loaded already.

    Returns:
        ``pool`` (N, D) and ``test`` (M, D) float32 features, ``pool_y`` and ``test_y`` labels.
    """

    def compute() -> dict[str, np.ndarray]:
        _, x_pool, y_pool, x_test, y_test = arrays or _ground_truth(pool, test)
        net = trainer or Trainer(
            training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=cfg.seed
        )
        return {
            "pool": net.features(x_pool),
            "test": net.features(x_test),
            "pool_y": y_pool,
            "test_y": y_test,
        }

    key = [pool.uri, list(pool.file_rows), test.uri, list(test.file_rows)]
    return _disk_cached(cfg, key, compute)


def _disk_cached(
    cfg: Config, data_key: list[Any], compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Arrays under ``<data.cache_dir>/features/`` keyed by the model config and ``data_key``.

    Computed once per machine: a file lock makes parallel workers wait for the first.
    """
    key = json.dumps([cfg.model.model_dump(mode="json"), data_key], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(cfg.data.cache_dir) / "features" / f"sim-{digest}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            with np.load(path) as stored:
                return {name: stored[name] for name in stored.files}
        arrays = compute()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return arrays


def _top_ids(ids: np.ndarray, scores: np.ndarray, k: int) -> list[str]:
    top = samplers.TopK(k)
    top.push(ids, scores)
    return top.result().ids.tolist()


STREAM_STRATEGIES = ("variable_uncertainty", "random", "auto")
_STREAM_ARMS = ("variable_uncertainty", "random")


def run_stream(
    cfg: Config,
    pool: ShardSet,
    test: ShardSet,
    *,
    strategy: str,
    seed: int,
    budget: int,
) -> Curve:
    """Stream-based selective sampling: records arrive one at a time, ask or skip at once.

    The pool is replayed as a stream in a seeded order. ``variable_uncertainty`` asks when the
    current model's top probability falls under an adaptive threshold, spending at most
    ``budget / len(stream)`` of the records; ``random`` asks each record with that probability.
    ``auto`` lets an EXP3 bandit pick one of the two for each buffer of asked records, paid
    with their prequential error. With ``sampling.cold_start`` the first records are asked at
    random until the model proves ready, as in pool mode. Asked records are answered from the
    ground truth and trained on as buffers fill.
    """
    began = time.perf_counter()
    ids, x_pool, y_pool, x_test, y_test = _ground_truth(pool, test)
    if strategy not in STREAM_STRATEGIES:
        raise ValueError(f"stream mode strategy must be one of {', '.join(STREAM_STRATEGIES)}")
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=seed)
    rng = np.random.default_rng(seed)
    fraction = min(1.0, budget / len(ids))
    chooser = samplers.VariableUncertainty(fraction)
    bandit = None
    arm, chance = _STREAM_ARMS.index(strategy) if strategy != "auto" else 0, 1.0
    if strategy == "auto":
        bandit = Exp3(_STREAM_ARMS, cfg.sampling.auto_gamma, np.random.default_rng([seed, 1]))
        arm, chance = bandit.choose()
    warming = cfg.sampling.cold_start and strategy != "random"
    errors: list[float] = []  # prequential errors of the current arm's asked records
    labels, accuracy = [0], [trainer.evaluate(x_test, y_test)]
    asked, seen = 0, 0  # labels spent, records that arrived (asked or skipped)
    order: list[str] = []  # the ids asked, in the order asked
    for row in rng.permutation(len(ids)):
        if asked >= budget:
            break
        seen += 1
        probs = None
        if bandit is not None or (not warming and arm == 0):
            probs = trainer.predict_proba(x_pool[row : row + 1])[0]
        if warming or arm == 1:
            ask = bool(rng.random() < fraction)
        else:
            ask = chooser.ask(probs)
        if not ask:
            continue
        asked += 1
        order.append(str(ids[row]))
        trainer.add_labels([{"id": order[-1], "label": int(y_pool[row])}])
        if bandit is not None and not warming and probs is not None:
            errors.append(float(probs.argmax() != y_pool[row]))
            if len(errors) == cfg.training.buffer_size:
                bandit.update(arm, float(np.mean(errors)), chance)
                errors = []
                arm, chance = bandit.choose()
        if trainer.step_if_ready():
            labels.append(trainer.labels_seen)
            accuracy.append(trainer.evaluate(x_test, y_test))
            if warming and cold_start_over(cfg.sampling, trainer.prequential()):
                warming = False
    if trainer.buffered:
        trainer.partial_fit()
        labels.append(trainer.labels_seen)
        accuracy.append(trainer.evaluate(x_test, y_test))
    # One grid for every seed: accuracy at each buffer of labels, held after the stream ends.
    grid = list(range(0, budget + 1, cfg.training.buffer_size))
    held = np.interp(grid, labels, accuracy, right=accuracy[-1])
    arms = None if bandit is None else bandit.summary()
    seconds = time.perf_counter() - began
    return Curve(grid, held.round(5).tolist(), seconds, arms, asked=order, seen=seen)


_FEATURES: dict[str, dict[str, np.ndarray]] = {}  # per process: backbone features per setup


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _run_task(
    cfg_json: str,
    pool: ShardSet,
    test: ShardSet,
    strategy: str,
    seed: int,
    *,
    budget: int,
    answer_delay: int,
    mode: str,
    share_features: bool,
) -> Curve:
    """One run, from picklable arguments (so a worker process can run it)."""
    cfg = Config.model_validate_json(cfg_json)
    if mode == "stream":
        return run_stream(cfg, pool, test, strategy=strategy, seed=seed, budget=budget)
    # A pretrained, frozen backbone is the same for every seed: its features once per setup.
    key = json.dumps([cfg.model.model_dump(mode="json"), pool.paths, test.paths])
    cache = _FEATURES.setdefault(key, {}) if share_features else None
    return run_once(
        cfg,
        pool,
        test,
        strategy=strategy,
        seed=seed,
        budget=budget,
        answer_delay=answer_delay,
        feature_cache=cache,
    )


def simulate(
    cfg: Config,
    pool: ShardSet,
    test: ShardSet,
    *,
    strategies: Sequence[str],
    seeds: int,
    budget: int,
    answer_delay: int = 0,
    dataset: str = "digits",
    progress: bool = True,
    mode: str = "pool",
    share_features: bool = False,
    workers: int = 1,
    with_random: bool = True,
) -> dict[str, Any]:
    """Run every strategy (random included) for ``seeds`` seeds; the results dict.

    ``with_random=False`` leaves random out (a study's row measured against a baseline row
    run once): the dict then has no ``random_final_accuracy``.

    ``workers`` > 1 runs that many runs at once in separate processes (one torch thread
    each); the results are the same as one at a time, seed for seed.

    ``mode`` is ``pool`` (pool-based: score the pool, lease the best) or ``stream``
    (stream-based: decide per arriving record, see :func:`run_stream`). ``share_features``
    (with ``train: head`` and pretrained weights, which do not depend on the seed) computes the
    backbone's features once for every run.
    """
    from tqdm.auto import tqdm

    names = list(dict.fromkeys([*strategies, *(["random"] if with_random else [])]))
    runs = [(s, cfg.seed + i) for s in names for i in range(seeds)]
    curves: dict[str, list[Curve]] = {s: [] for s in names}
    task = functools.partial(
        _run_task,
        cfg.model_dump_json(),
        pool,
        test,
        budget=budget,
        answer_delay=answer_delay,
        mode=mode,
        share_features=share_features,
    )
    bar = tqdm(total=len(runs), desc="simulating", unit="run", disable=not progress)
    if workers <= 1:
        for strategy, seed in runs:
            curves[strategy].append(task(strategy, seed))
            bar.update()
    else:
        spawn = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_one_thread) as ex:
            futures = {ex.submit(task, s, seed): (s, seed) for s, seed in runs}
            done: dict[tuple[str, int], Curve] = {}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.update()
        for strategy, seed in runs:  # seed order, whatever order they finished in
            curves[strategy].append(done[(strategy, seed)])
    bar.close()
    return summarize(
        cfg,
        curves,
        budget=budget,
        seeds=seeds,
        dataset=dataset,
        answer_delay=answer_delay,
        mode=mode,
    )


def summarize(
    cfg: Config,
    curves: dict[str, list[Curve]],
    *,
    budget: int,
    seeds: int,
    dataset: str,
    answer_delay: int = 0,
    mode: str = "pool",
) -> dict[str, Any]:
    """Per-seed curves of each strategy (random included) -> the results dict (mean, std).

    Where the runs recorded what they asked, each strategy also has ``spent`` (labels asked,
    per seed) and, in stream mode, ``seen`` and ``skipped`` (records that arrived, and those
    not asked, per seed).
    """
    out: dict[str, Any] = {
        "dataset": dataset,
        "config": {
            **cfg.model_dump(),
            "budget": budget,
            "seeds": seeds,
            "answer_delay_rounds": answer_delay,
            "mode": mode,
        },
        "strategies": {},
    }
    for strategy, runs_ in curves.items():
        grid = runs_[0].labels
        acc = np.array([c.accuracy for c in runs_])
        out["strategies"][strategy] = {
            "labels": grid,
            "accuracy_mean": acc.mean(axis=0).round(5).tolist(),
            "accuracy_std": acc.std(axis=0).round(5).tolist(),
            "seconds_mean": float(np.mean([c.seconds for c in runs_])),
        }
        spent = [len(c.asked) for c in runs_ if c.asked is not None]
        if len(spent) == len(runs_):  # per seed: the labels each run actually asked
            out["strategies"][strategy]["spent"] = spent
            seen = [c.seen for c in runs_ if c.seen is not None]
            if len(seen) == len(runs_):  # stream mode: records that arrived, and those skipped
                out["strategies"][strategy]["seen"] = seen
                skipped = [n - k for n, k in zip(seen, spent, strict=True)]
                out["strategies"][strategy]["skipped"] = skipped
        if runs_[0].arms is not None:  # auto: how often each arm chose, over all seeds
            pulls = {a: sum(c.arms[a]["pulls"] for c in runs_ if c.arms) for a in runs_[0].arms}
            out["strategies"][strategy]["arm_pulls"] = pulls
    if "random" not in out["strategies"]:
        return out
    target = out["strategies"]["random"]["accuracy_mean"][-1]
    out["random_final_accuracy"] = target
    out["labels_to_reach_random_final"] = {
        s: labels_to_reach(r["labels"], r["accuracy_mean"], target)
        for s, r in out["strategies"].items()
    }
    return out


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs labels, mean line and one-std band per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, r in results["strategies"].items():
        x, m, s = np.array(r["labels"]), np.array(r["accuracy_mean"]), np.array(r["accuracy_std"])
        ax.plot(x, m, label=name, linestyle="--" if name == "random" else "-")
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    ax.axhline(results["random_final_accuracy"], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    seeds = results["config"]["seeds"]
    ax.set_title(f"{results['dataset']}: online active learning ({seeds} seeds, mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_table(results: dict[str, Any]) -> str:
    """A plain-text table: final accuracy and labels needed to reach random's final accuracy."""
    budget = results["config"]["budget"]
    rows = [f"{'strategy':<18} {'final acc':>10} {'labels to random final':>24} {'share':>7}"]
    for name, r in results["strategies"].items():
        need = results["labels_to_reach_random_final"][name]
        share = f"{need / budget:.0%}" if need is not None else "-"
        final = f"{r['accuracy_mean'][-1]:.3f}±{r['accuracy_std'][-1]:.3f}"
        rows.append(f"{name:<18} {final:>10} {str(need):>24} {share:>7}")
    return "\n".join(rows)


def write_results(results: dict[str, Any], out: Path) -> None:
    """``results.json`` and ``learning_curves.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_curves(results, out / "learning_curves.png")
