"""The bundled data set: scikit-learn's real 8x8 digits, written once as pool and test shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.shards import ShardSet, open_shards
from activestream.sources.writing import ShardWriter, read_manifest, write_manifest, write_shards

_FORMAT_VERSION = 1


def write_digits_shards(
    out_dir: str, *, shards: int = 4, test_fraction: float = 0.25, seed: int = 0
) -> tuple[ShardSet, ShardSet]:
    """Write scikit-learn's 1797 real 8x8 digits as a stratified pool and test split.

    The split is fixed by ``seed`` so every run and every machine evaluates on the same test
    rows. A ``_SUCCESS.json`` manifest written last makes the call idempotent: when it matches
    the parameters, the existing shards are opened and nothing is rewritten.

    Args:
        out_dir: Local directory receiving ``pool/`` and ``test/``.
        shards: Number of pool files.
        test_fraction: Share of rows held out for testing.
        seed: Seed of the split.

    Returns:
        ``(pool, test)`` shard sets.
    """
    root = Path(out_dir)
    manifest_path = root / "_SUCCESS.json"
    params = {
        "dataset": "digits",
        "format": _FORMAT_VERSION,
        "shards": int(shards),
        "test_fraction": float(test_fraction),
        "seed": int(seed),
    }
    manifest = read_manifest(manifest_path)
    if manifest is not None and manifest.get("params") == params:
        try:
            pool, test = open_shards(str(root / "pool")), open_shards(str(root / "test"))
        except DataError:
            pass  # damaged since it was written: rewrite below
        else:
            if (pool.num_rows, test.num_rows) == (manifest["pool_rows"], manifest["test_rows"]):
                return pool, test

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    pool_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=labels
    )
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    ids = np.array([f"digits-{i:05d}" for i in index], dtype=object)
    classes = [str(i) for i in range(10)]

    manifest_path.unlink(missing_ok=True)
    writer = ShardWriter(str(root / "pool"), StorageConfig(), (1, 8, 8), classes, labels=True)
    for part in np.array_split(pool_idx, min(shards, len(pool_idx))):
        writer.write(ids[part], images[part], labels[part])
    pool = writer.finish()
    test = write_shards(
        str(root / "test"),
        ids[test_idx],
        images[test_idx],
        labels[test_idx],
        classes,
        rows_per_shard=len(test_idx),
    )
    write_manifest(
        manifest_path,
        {"params": params, "pool_rows": pool.num_rows, "test_rows": test.num_rows},
    )
    return pool, test
