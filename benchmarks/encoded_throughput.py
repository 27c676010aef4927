"""Scoring JPEG-encoded images: the warm scorer pool against a torch DataLoader, same cores.

    python -m activestream.benchmarks.encoded_throughput --out docs/encoded-throughput
    python -m activestream.benchmarks.encoded_throughput --render

Fashion-MNIST re-encoded as JPEG (quality 90) in Parquet shards; the digits CNN and entropy.

* ``activestream``: the streaming scorer pool reading the shards and decoding in the scorers,
  measured after its first cycle over the shards (warm actors, as the continuous loop runs).
* ``dataloader``: what a skilled engineer writes without Ray: a ``torch.utils.data.DataLoader``
  whose worker processes read the same shards and decode the same JPEGs, the model and the same
  entropy + global top-k in the main process; a discarded warm-up pass, persistent workers, and
  the best of 1 or 2 workers and 1 or 2 torch threads.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activestream.benchmarks.freshness import SCORING
from activestream.benchmarks.pages import Page, add_tiny_argument

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/encoded_throughput.py",
    *SCORING,
    "benchmarks/baselines.py",
)

PAGE = Page(
    "encoded_throughput",
    "Scoring JPEG images: warm scorer pool vs a DataLoader",
    "encoded-throughput",
    "encoded_throughput.json",
)
BEGIN, END = PAGE.begin, PAGE.end


def write_jpeg_shards(src: str, out: Path, rows: int, rows_per_shard: int) -> None:
    """Re-encode the first ``rows`` pool images of ``src`` as JPEG shards under ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from activestream.sources.shards import load_arrays, open_shards

    if out.exists() and sum(1 for _ in out.glob("*.parquet")):
        return
    out.mkdir(parents=True, exist_ok=True)
    ids, x, labels = load_arrays(open_shards(f"{src}/pool"))
    ids, x, labels = ids[:rows], x[:rows], labels[:rows]
    for start in range(0, len(ids), rows_per_shard):
        stop = min(start + rows_per_shard, len(ids))
        images = []
        for img in x[start:stop]:
            buf = io.BytesIO()
            Image.fromarray(np.rint(img[0] * 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            images.append(buf.getvalue())
        table = pa.table(
            {
                "id": pa.array(ids[start:stop].tolist(), pa.string()),
                "image": pa.array(images, pa.binary()),
                "label": pa.array(labels[start:stop], pa.int64()),
            }
        )
        pq.write_table(table, out / f"part-{start // rows_per_shard:05d}.parquet")


class _Shards(torch.utils.data.IterableDataset):  # Parquet files, split across workers by file
    def __init__(self, paths: list[str], shape: tuple[int, int, int], batch: int) -> None:
        super().__init__()
        self.paths, self.shape, self.batch = paths, shape, batch

    def __iter__(self):  # noqa: ANN204
        import pyarrow.parquet as pq

        from activestream.sources.images import decode_images

        info = torch.utils.data.get_worker_info()
        mine = self.paths if info is None else self.paths[info.id :: info.num_workers]
        for path in mine:
            pf = pq.ParquetFile(path)
            for rb in pf.iter_batches(batch_size=self.batch, columns=["id", "image"]):
                x, _ = decode_images(rb.column(1), self.shape)
                yield rb.column(0).to_pylist(), torch.from_numpy(x)


def dataloader_rate(
    paths: list[str], shape: tuple[int, int, int], workers: int, threads: int, batch: int
) -> float:
    import torch

    from activestream import samplers
    from activestream.models import build_model

    torch.set_num_threads(threads)
    model = build_model("digits_cnn", shape=shape, num_classes=10).eval()
    score = samplers.get("entropy")
    loader = torch.utils.data.DataLoader(
        _Shards(paths, shape, batch),
        batch_size=None,
        num_workers=workers,
        persistent_workers=True,
        prefetch_factor=4,
    )

    def one_pass() -> tuple[int, float]:
        top = samplers.TopK(256)
        began, rows = time.perf_counter(), 0
        with torch.inference_mode():
            for ids, x in loader:
                probs = torch.softmax(model(x), dim=1).double().numpy()
                top.push(np.asarray(ids, dtype=object), score(probs), np.zeros(len(ids), np.int64))
                rows += len(ids)
        return rows, time.perf_counter() - began

    one_pass()  # warm-up: workers started, caches warm
    rows, seconds = one_pass()
    return rows / seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    from activestream.benchmarks.suite import machine
    from activestream.benchmarks.throughput import ray_pass
    from activestream.config import Config
    from activestream.pipelines.runtime import init_ray
    from activestream.sources.fashion_mnist import write_fashion_mnist_shards
    from activestream.sources.shards import open_shards

    write_fashion_mnist_shards(args.src, progress=False)
    out = Path(args.data)
    write_jpeg_shards(args.src, out, args.rows, args.rows_per_shard)
    shards = open_shards(str(out))
    cfg = Config().with_overrides({"data.dataset": str(out), "sampling.sampler": "entropy"})
    baseline = {
        f"workers={w},threads={t}": round(
            dataloader_rate(list(shards.paths), shards.shape, w, t, cfg.scoring.batch_size), 1
        )
        for w in (1, 2)
        for t in (1, 2)
    }
    best = max(baseline, key=baseline.__getitem__)
    print(f"dataloader: {baseline} (best {best})")
    init_ray(cfg.ray)
    _, warm, _ = ray_pass(cfg, shards, cycles=3)
    print(f"activestream warm pool: {warm:.0f} rows/s")
    return {
        "machine": machine(),
        "settings": {
            "rows": shards.num_rows,
            "rows_per_shard": args.rows_per_shard,
            "model": "digits_cnn on 1x28x28, entropy, global top-256",
            "activestream": (
                f"{cfg.scoring.num_scorers} scorers x {cfg.scoring.threads_per_scorer} thread, "
                "rows/s after the first of 3 cycles over the shards"
            ),
        },
        "results": [
            {
                "name": "jpeg_scoring",
                "activestream_rows_per_s": round(warm, 1),
                "dataloader_rows_per_s": baseline[best],
                "dataloader_best_setting": best,
                "dataloader_all_settings": baseline,
                "ratio": round(warm / baseline[best], 2),
            }
        ],
    }


def render_markdown(data: dict[str, Any]) -> str:
    """The table, from the JSON alone."""
    s, m = data["settings"], data["machine"]
    lines = [
        f"{s['rows']:,} JPEG images in shards of {s['rows_per_shard']:,}; {s['model']}; "
        f"activestream: {s['activestream']}; {m['cores']} cores ({m['cpu']}).",
        "",
        "| measured | activestream rows/s | DataLoader rows/s (best setting) | ratio |",
        "|---|---|---|---|",
    ]
    for r in data["results"]:
        lines.append(
            f"| {r['name']} | {r['activestream_rows_per_s']:,.0f} | "
            f"{r['dataloader_rows_per_s']:,.0f} ({r['dataloader_best_setting']}) | "
            f"{r['ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--src", default="data/fashion-mnist")
    parser.add_argument("--data", default="data/fashion-mnist-jpeg")
    parser.add_argument("--out", default="docs/encoded-throughput")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rows-per-shard", type=int, default=2_000)
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rows, args.rows_per_shard = 400, 200
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(args),
        render=render_markdown,
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
