"""The ``activestream`` command line.

Every user error (bad flag, bad config key, unreadable data) is one line on stderr and exit
code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from activestream.config import Config, load_config
from activestream.errors import ActivestreamError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (defaults run without one)")
    parser.add_argument("--seed", type=int, help="seed for every random choice")


def _load(args: argparse.Namespace, overrides: dict[str, object]) -> Config:
    task = getattr(args, "task", None)  # --task, where the command has it, over the file's
    return load_config(args.config).with_overrides({"seed": args.seed, "task": task, **overrides})


def _task(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--task",
        choices=["classification", "detection"],
        help=f"the config's task: over the file's, default classification; detection: {what}",
    )


def cmd_score(args: argparse.Namespace) -> int:
    """One scoring pass over a pool, then query selection; all scores go to Parquet."""
    import numpy as np

    from activestream.pipelines.runtime import init_ray
    from activestream.pipelines.scoring import score_pass
    from activestream.samplers.selection import select_queries
    from activestream.sources.resolve import resolve_dataset

    cfg = _load(
        args,
        {
            "data.dataset": args.data,
            "model.factory": args.arch,
            "sampling.sampler": args.sampler,
            "sampling.k": args.k,
            "sampling.explore_p": args.explore_p,
        },
    )
    if cfg.task == "detection":
        raise ActivestreamError(
            "score runs a classifier's samplers over a pool; a detection pool is scored by "
            "its service (activestream serve --task detection --data DIR)"
        )
    pool, _ = resolve_dataset(cfg)
    weights = _load_weights(args.weights) if args.weights else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    init_ray(cfg.ray)
    try:
        result = score_pass(cfg, pool, weights=weights, out=args.out, progress=True)
    finally:
        import ray

        ray.shutdown()
    picks = select_queries(
        result.top.ids.tolist(),
        result.explore.ids.tolist(),
        k=cfg.sampling.k,
        p=cfg.sampling.explore_p,
        rng=np.random.default_rng(cfg.seed),
    )
    scores = dict(zip(result.top.ids.tolist(), result.top.scores.tolist(), strict=True))
    print(
        f"scored {result.rows} rows in {result.seconds:.1f} s "
        f"({result.rows_per_second:.0f} rows/s) with {cfg.model.factory}, "
        f"sampler {cfg.sampling.sampler}; all scores in {args.out}"
    )
    print(f"{'query':<20} {'score':>7}  chosen by")
    for pick in picks:
        score = f"{scores[pick.id]:.4f}" if pick.id in scores else "-"
        how = "exploration (random)" if pick.explored else cfg.sampling.sampler
        print(f"{pick.id:<20} {score:>7}  {how}")
    return 0


def _load_weights(path: str) -> object:
    """A state dict file (as served by GET /model/weights) as version-1 weights."""
    import ray
    import torch

    from activestream.actors.weights import WeightsVersion

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ActivestreamError(f"cannot read weights {path}: {err}".splitlines()[0]) from None
    arrays = {k: v.numpy() for k, v in state.items()}
    return WeightsVersion(version=1, labels_seen=0, refs=[ray.put(arrays)])


def cmd_simulate(args: argparse.Namespace) -> int:
    """Oracle simulation of every strategy over several seeds; JSON, PNG and a table out."""
    cfg = _load(args, {})
    if cfg.task == "detection":
        return _simulate_detection(args, cfg)
    from activestream.pipelines.simulate import (
        STREAM_STRATEGIES,
        simulate,
        summary_table,
        write_results,
    )
    from activestream.sources.resolve import resolve_dataset

    default = "variable_uncertainty" if args.mode == "stream" else "entropy,margin,random"
    strategies = [s.strip() for s in (args.samplers or default).split(",") if s.strip()]
    for name in strategies:
        if args.mode == "stream":
            if name not in STREAM_STRATEGIES:
                raise ActivestreamError(
                    f"--mode stream takes samplers {', '.join(STREAM_STRATEGIES)}, got {name!r}"
                )
            continue
        Config().with_overrides({"sampling.sampler": name})  # one-line error for unknown names
    args.budget = 400 if args.budget is None else args.budget
    if args.budget < 1 or args.seeds < 1 or args.answer_delay < 0 or args.workers < 1:
        raise ActivestreamError("--budget, --seeds and --workers must be >= 1, --answer-delay >= 0")
    cfg = _load(
        args,
        {
            "data.dataset": args.dataset,
            "training.buffer_size": args.buffer_size,
            "training.policy": args.policy,
            "sampling.explore_p": args.explore_p,
        },
    )
    pool, test = resolve_dataset(cfg)
    if test is None:
        raise ActivestreamError(
            f"{cfg.data.dataset}: the simulator needs a test/ split beside pool/"
        )
    results = simulate(
        cfg,
        pool,
        test,
        strategies=strategies,
        seeds=args.seeds,
        budget=args.budget,
        answer_delay=args.answer_delay,
        dataset=cfg.data.dataset,
        mode=args.mode,
        workers=args.workers,
    )
    out = Path(args.out)
    write_results(results, out)
    print(summary_table(results))
    print(f"wrote {out / 'results.json'} and {out / 'learning_curves.png'}")
    return 0


def _simulate_detection(args: argparse.Namespace, config: Config) -> int:
    """The detection simulator behind ``simulate --task detection``: boxes, mAP, same outputs.

    ``--budget`` is the labeled images a run ends with: the random seed images, then rounds of
    ``--buffer-size`` images (the last round whole), each followed by online steps. It runs
    the study's own detector and settings, so a config may say ``task`` and ``data.dataset``
    (``--dataset`` over it) and nothing else.
    """
    keys = _changed_keys(config, Config(task="detection"))
    keys = [key for key in keys if key != "data.dataset" and (key != "seed" or args.seed is None)]
    dataset = args.dataset or (None if config.data.dataset == "digits" else config.data.dataset)
    ignored = {
        f"config keys other than task and data.dataset ({', '.join(keys)})": keys,
        "--seed": args.seed,
        "--policy": args.policy,
        "--mode stream": args.mode == "stream",
        "--answer-delay": args.answer_delay,
    }
    if any(ignored.values()):
        used = ", ".join(flag for flag, value in ignored.items() if value)
        raise ActivestreamError(
            f"--task detection does not take {used} (it runs seeds 0..--seeds-1 with the "
            "flags --samplers, --budget, --buffer-size, --explore-p, --seeds and --workers)"
        )
    if not dataset:
        raise ActivestreamError(
            "--task detection needs --dataset DIR with pool/ and test/ in COCO, YOLO or Parquet "
            "layout (activestream make-detection writes canvases of real images)"
        )
    from activestream.pipelines.detection_sim import DetectionSimConfig, simulate

    base = DetectionSimConfig()
    batch = base.batch if args.buffer_size is None else args.buffer_size
    budget = base.seed_images + base.rounds * base.batch if args.budget is None else args.budget
    if batch < 1 or budget <= base.seed_images or args.workers < 1:
        raise ActivestreamError(
            f"--buffer-size and --workers must be >= 1 and --budget above the "
            f"{base.seed_images} random seed images (got {batch}, {args.workers}, {budget})"
        )
    samplers = [s.strip() for s in (args.samplers or ",".join(base.samplers)).split(",")]
    cfg = DetectionSimConfig(
        samplers=tuple(s for s in samplers if s),
        seeds=args.seeds,
        batch=batch,
        rounds=-(-(budget - base.seed_images) // batch),
        explore_p=base.explore_p if args.explore_p is None else args.explore_p,
    )
    out = Path(args.out)
    results = simulate(dataset, cfg, out, workers=args.workers)
    from activestream.benchmarks.detection import plot  # the detection page's own figure

    plot(results, out)
    print("| strategy | mAP@0.5 | mAP@[.5:.95] | images to random's final | boxes |")
    print("|---|---|---|---|---|")
    for name, row in results["strategies"].items():
        reach = row["labels_to_reach_random_final"]
        images, boxes = (("-" if v is None else f"{v:.0f}") for v in reach.values())
        print(f"| {name} | {row['map50_mean']:.3f} ± {row['map50_std']:.3f} | "
              f"{row['map_mean']:.3f} | {images} | {boxes} |")  # fmt: skip
    print(f"wrote {out / 'results.json'} and {out / 'learning_curves.png'}")
    return 0


def _changed_keys(cfg: Config, base: Config) -> list[str]:
    """The dotted keys whose values differ between ``cfg`` and ``base``.

    >>> _changed_keys(Config().with_overrides({"sampling.k": 8, "seed": 3}), Config())
    ['sampling.k', 'seed']
    """

    def flat(node: object, prefix: str = "") -> dict[str, object]:
        if not isinstance(node, dict):
            return {prefix.rstrip("."): node}
        return {
            k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()
        }

    mine, theirs = flat(cfg.model_dump()), flat(base.model_dump())
    return sorted(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))


def cmd_make_detection(args: argparse.Namespace) -> int:
    """Canvases of real images with their boxes, in COCO layout, as ``pool/`` and ``test/``."""
    from activestream.sources.canvases import CanvasSpec, make_canvases

    spec = CanvasSpec(args.source, args.pool, args.test, args.size, seed=args.seed or 0)
    if spec.pool < 1 or spec.test < 1:
        raise ActivestreamError(f"--pool and --test must be >= 1, got {spec.pool}, {spec.test}")
    if spec.size < spec.scale[1]:
        raise ActivestreamError(
            f"--size {spec.size} is smaller than the largest object ({spec.scale[1]} px)"
        )
    manifest = make_canvases(args.out, spec)
    print(
        f"{args.out}: {manifest['images']['pool']} pool and {manifest['images']['test']} test "
        f"canvases of {spec.size} px, {manifest['boxes']['pool']} + {manifest['boxes']['test']} "
        f"boxes, {len(manifest['classes'])} classes ({spec.source})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Start Ray, the loop's actors and the Serve app; block until Ctrl-C, then shut down."""
    import signal
    import threading

    from activestream.deploy import serve_app
    from activestream.pipelines.runtime import direct_ingress_env, init_ray
    from activestream.sources.fs import check_storage

    cfg = _load(args, {"data.dataset": args.data})
    if args.data_dir:
        cfg = cfg.with_overrides({"data.cache_dir": args.data_dir})
    if not 0 < args.port < 65536:
        raise ActivestreamError(f"--port must be in 1..65535, got {args.port}")
    # Before any actor exists: a bad bucket or key is one line now, not a dead actor later.
    if cfg.data.dataset != "digits":
        check_storage(cfg.data.dataset, cfg.storage)
        cfg = _detection_pool(cfg)
    elif cfg.task == "detection":
        raise ActivestreamError(
            "task detection serves images with boxes: --data DIR in COCO, YOLO or Parquet "
            "layout (activestream make-detection writes canvases of real images)"
        )
    check_storage(cfg.state_dir, cfg.storage, write=True)
    direct = cfg.serve.direct_ingress and not cfg.ray.address
    if direct:  # read by Serve's processes when they start: before the cluster exists
        os.environ.update(direct_ingress_env(args.port))
    init_ray(cfg.ray)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve_app.start(cfg, host=args.host, port=args.port, direct=direct)
        print(f"activestream serving on http://{args.host}:{args.port}/  (Ctrl-C to stop)")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        import ray
        from ray import serve

        from activestream.pipelines.loop import LOOP_ACTOR

        print("shutting down: final checkpoint", file=sys.stderr)
        serve.shutdown()
        try:  # the trainer writes a checkpoint; the label log already holds every label
            ray.get(ray.get_actor(LOOP_ACTOR).stop.remote(), timeout=120)
        except Exception as err:  # noqa: BLE001 - a crashed loop: recovery replays the log
            print(f"final checkpoint skipped: {err}".splitlines()[0], file=sys.stderr)
        ray.shutdown()
    return 0


def _detection_pool(cfg: Config) -> Config:
    """``cfg`` serving detection data (COCO, YOLO, Hugging Face) from its pool written once.

    The data and the config's ``task`` must agree, and the detector ``cfg.model`` names is
    built and checked here, before any actor exists.
    """
    from activestream.pipelines.task import check_task, detection_sampler
    from activestream.sources.detection_pool import detection_source, serve_pool

    found = detection_source(cfg.data.dataset, storage=cfg.storage)
    check_task(cfg, "classification" if found is None else "detection")
    if found is None:
        return cfg
    detection_sampler(cfg)  # a name neither task knows: one line now, not a dead actor
    pool = serve_pool(cfg.data.dataset, cfg.data.cache_dir, storage=cfg.storage)
    if pool is None:  # the same listing said detection data a moment ago
        raise ActivestreamError(f"{cfg.data.dataset}: the data changed while it was read")
    if pool != cfg.data.dataset:
        print(f"detection data {cfg.data.dataset}: serving its pool {pool}", file=sys.stderr)
        cfg = cfg.with_overrides({"data.dataset": pool})
    _check_detector(cfg)
    return cfg


def _check_detector(cfg: Config) -> None:
    """A detector of the user's own (``model.factory``) that the loop cannot use: one line now."""
    from activestream.actors.detector import checked_detector_factory
    from activestream.sources.shards import open_shards

    checked_detector_factory(cfg.model, len(open_shards(cfg.data.dataset, cfg.storage).classes))


def cmd_annotate(args: argparse.Namespace) -> int:
    """Label a running service from ground truth at a set pace; its learning curve out."""
    import json

    from activestream.pipelines.annotate import Oracle
    from activestream.pipelines.realloop import ground_truth

    _check_pace(args)
    cfg = _load(args, {"data.dataset": args.dataset})
    if cfg.task == "detection" and cfg.data.dataset == "digits":
        raise ActivestreamError(
            "annotate --task detection needs --dataset DIR: the data the service serves, with "
            "pool/ and test/ in COCO, YOLO or Parquet layout"
        )
    truth, held_out = ground_truth(cfg)
    oracle = Oracle(
        args.url,
        truth,
        held_out,
        annotators=args.annotators,
        rate=args.rate,
        budget=args.budget,
        token=os.environ.get("ACTIVESTREAM_TOKEN"),
    )
    report = oracle.run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotate.json").write_text(json.dumps(report, indent=1))
    last = report["curve"][-1] if report["curve"] else None
    if last is not None:
        metric = report["metric"]
        print(
            f"posted {report['posted']} labels in {report['seconds_to_post_budget']:.0f} s; "
            f"model version {last['version']} trained on {last['labels']}: "
            f"held-out {'mAP@0.5' if metric == 'map50' else metric} {last[metric]:.3f}"
        )
    print(f"wrote {out / 'annotate.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The real loop on the bundled digits: serve, oracle annotators, the sampler vs random.

    With ``--task detection``: boxes on ``--dataset DIR``, or on canvases of the bundled
    digits made once under ``data.cache_dir``; mAP@0.5 in place of accuracy.
    """
    from activestream.pipelines.realloop import demo, demo_canvases

    cfg = _load(args, {"data.dataset": args.dataset})
    detection = cfg.task == "detection"
    if args.budget is None:
        args.budget = 160 if detection else 320
    if args.rate is None:  # drawing boxes takes longer than picking a class
        args.rate = 1.0 if detection else 2.0
    _check_pace(args)
    if detection and cfg.data.dataset == "digits":  # the bundled digits, placed on canvases
        cfg = cfg.with_overrides({"data.dataset": demo_canvases(cfg)})
    demo(
        cfg,
        Path(args.out),
        budget=args.budget,
        annotators=args.annotators,
        rate=args.rate,
        settle=300.0 if detection else 60.0,  # a detector trains slower on CPUs
    )
    return 0


def _check_pace(args: argparse.Namespace) -> None:
    if args.annotators < 1 or args.budget < 1 or not args.rate > 0:
        raise ActivestreamError("--annotators and --budget must be >= 1, --rate > 0")


def _pace(parser: argparse.ArgumentParser, budget: int | None, rate: float | None = 2.0) -> None:
    parser.add_argument(
        "--dataset",
        help="'digits' or shards with pool/ and test/ (default digits); detection: a folder "
        "with pool/ and test/ in COCO, YOLO or Parquet layout",
    )
    _task(parser, "box labels, mAP@0.5 on test/")
    parser.add_argument("--annotators", type=int, default=4, help="people labeling at once")
    by_task = "320; detection: 160 images" if budget is None else str(budget)
    pace = "2; detection: 1" if rate is None else f"{rate:g}"
    parser.add_argument(
        "--rate", type=float, default=rate, help=f"labels per second per person (default {pace})"
    )
    parser.add_argument(
        "--budget", type=int, default=budget, help=f"labels to post in all (default {by_task})"
    )


def cmd_make_shards(args: argparse.Namespace) -> int:
    """Generate synthetic labeled image shards for scale tests and benchmarks."""
    from activestream.sources.synthetic import make_synthetic_shards

    if args.rows < 1:
        raise ActivestreamError(f"--rows must be at least 1, got {args.rows}")
    cfg = _load(args, {})
    shards = make_synthetic_shards(
        args.out,
        args.rows,
        rows_per_shard=args.rows_per_shard,
        num_classes=args.classes,
        seed=cfg.seed,
        test_rows=args.test_rows,
        storage=cfg.storage,
    )
    print(
        f"wrote {shards.num_rows} rows in {len(shards.paths)} shards to {args.out}/pool "
        f"(shape {tuple(shards.shape)}, {len(shards.classes)} classes)"
    )
    return 0


def cmd_fashion_mnist(args: argparse.Namespace) -> int:
    """Fashion-MNIST from the Debian package's IDX files as PNG-encoded pool and test shards."""
    from activestream.sources.fashion_mnist import write_fashion_mnist_shards

    if args.rows_per_shard < 1:
        raise ActivestreamError(f"--rows-per-shard must be at least 1, got {args.rows_per_shard}")
    if args.limit is not None and args.limit < 1:
        raise ActivestreamError(f"--limit must be at least 1, got {args.limit}")
    cfg = _load(args, {})
    shards = write_fashion_mnist_shards(
        args.out,
        rows_per_shard=args.rows_per_shard,
        limit=args.limit,
        idx_dir=args.idx_dir,
        storage=cfg.storage,
    )

    def files(n: int) -> str:
        return f"{n} shard" if n == 1 else f"{n} shards"

    verb = "wrote" if shards.written else "already written:"
    print(
        f"{verb} {shards.pool_rows} pool rows in {files(len(shards.pool_files))} to {shards.pool}"
        f" and {shards.test_rows} test rows in {files(len(shards.test_files))} to {shards.test}"
        " (grayscale PNG, 10 classes)"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Every benchmark beside its baseline (bench.json, bench.md, plots), or the report."""
    try:
        from activestream.benchmarks import report
        from activestream.benchmarks.suite import run_all
    except ImportError as err:  # pragma: no cover - an install without the benchmarks
        raise ActivestreamError(f"benchmarks are not installed: {err}") from None
    if args.action == "report":
        try:
            if args.check or args.stale:
                found = report.check() if args.check else report.stale_lines()
                fine = "every generated section is current and" if args.check else "every figure is"
                print("\n".join(found) or f"{fine} fresh")
                return 1 if found else 0
            changed = report.write_all()
        except FileNotFoundError as err:
            raise ActivestreamError(
                f"{err.filename}: missing; run the report from a checkout of the repository"
            ) from None
        print("\n".join(f"rewrote {c}" for c in changed) or "every generated section is current")
        return 0
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    from activestream.benchmarks.entry import size_of
    from activestream.benchmarks.suite import require_publishable

    require_publishable(args.out, size_of(args))
    try:
        run_all(size_of(args), Path(args.out), only, merge=args.merge)
    except ValueError as err:
        raise ActivestreamError(str(err)) from None
    except ModuleNotFoundError as err:
        raise ActivestreamError(
            f"missing {err.name!r}: the benchmarks need the bench extra (pip install -e '.[bench]')"
        ) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full CLI; subcommands follow the design's CLI contract."""
    parser = _Parser(prog="activestream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    score = sub.add_parser("score", help="one scoring pass over a pool, Parquet out")
    _common(score)
    score.add_argument("--data", help="'digits', a shard folder, an image folder or s3://...")
    score.add_argument("--out", default="results/scores.parquet", help="Parquet of all scores")
    score.add_argument("--arch", help="model architecture")
    score.add_argument("--sampler", help="uncertainty sampler")
    score.add_argument("--k", type=int, help="queries to select")
    score.add_argument("--explore-p", type=float, help="probability a slot exploits")
    score.add_argument("--weights", help="state dict file (as from GET /model/weights)")
    score.set_defaults(func=cmd_score)

    sim = sub.add_parser("simulate", help="oracle simulation of samplers vs random")
    _common(sim)
    sim.add_argument("--dataset", help="'digits' or shards with pool/ and test/ (default digits)")
    sim.add_argument(
        "--samplers",
        help="comma-separated, 'auto' for the bandit over them (default entropy,margin,random; "
        "stream: variable_uncertainty)",
    )
    sim.add_argument(
        "--mode",
        choices=["pool", "stream"],
        default="pool",
        help="pool: lease the best of a scored pool; stream: ask or skip each arriving record",
    )
    _task(sim, "boxes and mAP on --dataset DIR (see make-detection)")
    sim.add_argument(
        "--budget", type=int, help="labels per run (default 400; detection: 176 images)"
    )
    sim.add_argument("--buffer-size", type=int, help="labels per training step (default 16)")
    sim.add_argument("--explore-p", type=float, help="probability a slot exploits (0.9)")
    sim.add_argument("--policy", help="training policy: new_only, replay or full")
    sim.add_argument("--seeds", type=int, default=5)
    sim.add_argument("--answer-delay", type=int, default=0, help="rounds before labels arrive")
    sim.add_argument("--workers", type=int, default=1, help="runs at once, each in its own process")
    sim.add_argument("--out", default="results/sim")
    sim.set_defaults(func=cmd_simulate)

    srv = sub.add_parser("serve", help="Ray Serve API and labeling page")
    _common(srv)
    srv.add_argument("--data", help="pool to label (default: bundled digits)")
    _task(srv, "box labels on --data in COCO, YOLO or Parquet layout")
    srv.add_argument("--data-dir", help="where data, caches and checkpoints live")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.set_defaults(func=cmd_serve)

    ann = sub.add_parser(
        "annotate", help="oracle annotators labeling a running service from ground truth"
    )
    _common(ann)
    ann.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    _pace(ann, 320)
    ann.add_argument("--out", default="results/annotate")
    ann.set_defaults(func=cmd_annotate)

    demo = sub.add_parser(
        "demo", help="the real loop: serve + oracle annotators, the sampler against random"
    )
    _common(demo)
    _pace(demo, None, None)
    demo.add_argument("--out", default="results/demo")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks beside their baselines, table and plots")
    bench.add_argument(
        "action",
        nargs="?",
        choices=["run", "report"],
        default="run",
        help="run the benchmarks (default), or render every README/docs table from its JSON",
    )
    from activestream.benchmarks.entry import add_size_arguments

    add_size_arguments(bench)
    bench.add_argument(
        "--check",
        action="store_true",
        help="report: list out-of-date sections and stale figures, write nothing; fail if any",
    )
    bench.add_argument(
        "--stale",
        action="store_true",
        help="report: list published figures whose measured code changed since their commit",
    )
    bench.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks' rows of --out/bench.json (each run is recorded)",
    )
    bench.add_argument("--out", default="results/bench")
    bench.add_argument(
        "--only", help="comma-separated subset: throughput,broadcast,label_latency,..."
    )
    bench.set_defaults(func=cmd_bench)

    shards = sub.add_parser("make-shards", help="synthetic labeled image shards")
    _common(shards)
    shards.add_argument("--rows", type=int, default=100_000)
    shards.add_argument("--out", default="data/shards")
    shards.add_argument("--rows-per-shard", type=int, default=10_000)
    shards.add_argument("--classes", type=int, default=10)
    shards.add_argument("--test-rows", type=int, default=0)
    shards.set_defaults(func=cmd_make_shards)

    det = sub.add_parser(
        "make-detection", help="canvases of real images with their boxes (COCO layout)"
    )
    det.add_argument("--source", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    det.add_argument("--pool", type=int, default=2000, help="canvases to label")
    det.add_argument("--test", type=int, default=500, help="canvases to measure mAP on")
    det.add_argument("--size", type=int, default=128, help="canvas side in pixels")
    det.add_argument("--seed", type=int, help="seed for every random choice (default 0)")
    det.add_argument("--out", default="data/canvases", help="gets pool/ and test/")
    det.set_defaults(func=cmd_make_detection)

    fmnist = sub.add_parser(
        "fashion-mnist", help="Fashion-MNIST (apt-get install dataset-fashion-mnist) as shards"
    )
    _common(fmnist)
    fmnist.add_argument("--out", default="data/fashion-mnist", help="gets pool/ and test/")
    fmnist.add_argument("--rows-per-shard", type=int, default=10_000)
    fmnist.add_argument("--limit", type=int, help="first N rows of each split only")
    fmnist.add_argument("--idx-dir", help="folder of the IDX files (default: the Debian package's)")
    fmnist.set_defaults(func=cmd_fashion_mnist)
    return parser


def _user_error(err: BaseException) -> ActivestreamError | None:
    """The user's error inside ``err``, unwrapped from Ray's task and actor errors.

    Ray re-raises an error from a task as a ``RayTaskError`` whose text is the remote
    traceback; its ``cause`` (or a chained ``__cause__``) is the original error, which is what
    a user needs to read. Nested wrappers (a task called from an actor) are walked through.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(current, ActivestreamError) and not isinstance(cause, BaseException):
            return current
        todo += [
            cause if isinstance(cause, BaseException) else None,
            current.__cause__,
            current.__context__,
        ]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``activestream`` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ActivestreamError, ValueError) as err:
        print(f"activestream: error: {_user_error(err) or err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        user = _user_error(err)  # raised in a Ray actor or task, which wraps it
        if user is None:
            raise
        print(f"activestream: error: {user}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("activestream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
