"""Frozen-backbone features, computed once per item and kept next to the label log.

With ``model.train: head`` only the final linear layer learns, so what the backbone makes of an
item never changes. A feature pass runs the backbone once per pool file (a Ray task each, on a
GPU where the cluster has one) and writes ``id, feature`` Parquet files under
``<durability dir>/features/<fingerprint>/``; every scoring round after that reads those files
and runs the final layer only. The fingerprint covers everything that changes the features
(factory, kwargs, initial weights, input transform, stored shape, pool), so a new backbone never
reads stale features. Files already written are kept, so a restart or a grown pool computes only
what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import torch

from activestream.actors.net import build_net, head_features
from activestream.actors.scorer import features_to_array
from activestream.actors.weights import WeightsVersion, load_numpy_state
from activestream.config import Config, ModelConfig
from activestream.models.parts import pick_device
from activestream.pipelines.runtime import scorer_gpus
from activestream.sources.fs import filesystem_for, join_path
from activestream.sources.shards import ShardSet

FEATURE_COLUMN = "feature"


def fingerprint(cfg: Config, pool: ShardSet, model: ModelConfig | None = None) -> str:
    """16 hex digits naming the features of ``pool`` under a frozen backbone.

    ``model`` defaults to ``cfg.model``; the embedding model passes its own config.
    """
    model = model or cfg.model
    key = {
        "factory": model.factory,
        "kwargs": model.kwargs,
        "init_weights": model.init_weights,
        "seed": None if model.init_weights else cfg.seed,
        "transform": [model.resize, model.channels, model.normalize],
        "shape": list(pool.shape),
        "classes": len(pool.classes),
        "pool": pool.uri,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def extract_file(
    pool: ShardSet,
    index: int,
    out_path: str,
    out_fs: pafs.FileSystem,
    model: ModelConfig,
    state: dict[str, np.ndarray] | None,
    *,
    batch_size: int = 256,
    seed: int = 0,
) -> int:
    """Write the features of pool file ``index`` to ``out_path``; returns the rows written.

    Rows whose image does not decode are left out (they are never queried either).
    """
    net = build_net(model, stored_shape=pool.shape, num_classes=len(pool.classes), seed=seed)
    if state is not None:
        load_numpy_state(net, state)
    device = pick_device()
    net.to(device).eval()
    transform = model.transform()
    tables = []
    with pool.filesystem.open_input_file(pool.paths[index]) as handle:
        pf = pq.ParquetFile(handle)
        wanted = [c for c in ("id", pool.image_column) if c in pf.schema_arrow.names]
        start = 0
        for rb in pf.iter_batches(batch_size=batch_size, columns=wanted):
            table = pool.normalize(pa.Table.from_batches([rb]), index, start)
            start += rb.num_rows
            x, ok = pool.decode(table.column(pool.image_column))
            if not ok.any():
                continue
            f = head_features(net, torch.from_numpy(transform(x[ok])).to(device))
            values = f.float().cpu().numpy()
            tables.append(
                pa.table(
                    {
                        "id": table.column("id").filter(pa.array(ok)),
                        FEATURE_COLUMN: pa.FixedSizeListArray.from_arrays(
                            pa.array(values.reshape(-1), pa.float32()), values.shape[1]
                        ),
                    }
                )
            )
    if not tables:
        return 0
    out = pa.concat_tables(tables)
    tmp = f"{out_path}.tmp-{os.getpid()}"
    local = isinstance(out_fs, pafs.LocalFileSystem)
    pq.write_table(out, tmp if local else out_path, filesystem=out_fs)
    if local:
        out_fs.move(tmp, out_path)
    return out.num_rows


def ensure_features(
    cfg: Config,
    pool: ShardSet,
    weights: WeightsVersion | None,
    *,
    model: ModelConfig | None = None,
) -> ShardSet:
    """The feature files of ``pool``, computing the missing ones; a ShardSet over them.

    Args:
        cfg: The run's config (``model`` decides the backbone, ``scoring`` the resources).
        pool: The image pool.
        weights: A published version (any: the backbone is frozen); None builds the seeded
            initial model, as the trainer does without ``init_weights``.
        model: Another frozen network than ``cfg.model`` (``sampling.embedding_model``); it
            keeps its own weights, so ``weights`` is ignored.
    """
    if model is not None:
        weights = None
    uri = f"{cfg.state_dir.rstrip('/')}/features/{fingerprint(cfg, pool, model)}"
    fs, base = filesystem_for(uri, cfg.storage)
    fs.create_dir(base, recursive=True)
    paths = [join_path(base, f"{i:06d}.parquet") for i in range(len(pool.paths))]
    infos = fs.get_file_info(paths)
    missing = [i for i, info in enumerate(infos) if info.type != pafs.FileType.File]
    state_ref = weights.refs[0] if weights is not None and weights.refs else None
    task = ray.remote(extract_file).options(
        num_cpus=cfg.scoring.cpus_per_scorer,
        num_gpus=scorer_gpus(cfg.scoring) or None,
        resources=dict(cfg.scoring.resources) or None,
    )
    done: dict[int, int] = dict(
        zip(
            missing,
            ray.get(
                [
                    task.remote(pool, i, paths[i], fs, model or cfg.model, state_ref, seed=cfg.seed)
                    for i in missing
                ]
            ),
            strict=True,
        )
    )
    rows: list[int] = []
    kept: list[str] = []
    for i, path in enumerate(paths):
        n = done.get(i)
        if n is None:  # written by an earlier pass: its footer says how many rows it holds
            with fs.open_input_file(path) as handle:
                n = pq.ParquetFile(handle).metadata.num_rows
        if n:
            kept.append(path)
            rows.append(n)
    return replace(
        pool,
        paths=tuple(kept),
        filesystem=fs,
        file_rows=tuple(rows),
        num_rows=sum(rows),
        uri=uri,
        image_column=FEATURE_COLUMN,
        encoded=False,
        has_ids=True,
        string_labels=False,
    )


def read_features(features: ShardSet, ids: list[str]) -> np.ndarray:
    """(len(ids), D) float32 features of ``ids`` from feature files, in the order asked.

    One streaming pass over the files' ``id`` column, reading the feature column of the
    matching rows only, so memory stays at the answer's size whatever the pool's. Ids without
    a row (images that did not decode) get zeros.

    Args:
        features: A ShardSet from :func:`ensure_features`.
        ids: The items wanted, e.g. a round's candidates and its random sample.
    """
    import pyarrow.compute as pc

    where = {item: j for j, item in enumerate(ids)}
    out: np.ndarray | None = None
    wanted = pa.array(list(where), pa.string())
    for path in features.paths:
        with features.filesystem.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle)
            for group in range(pf.num_row_groups):
                file_ids = pf.read_row_group(group, columns=["id"]).column("id")
                hit = pc.is_in(file_ids, value_set=wanted)
                if not pc.any(hit).as_py():
                    continue
                rows = pf.read_row_group(group, columns=["id", FEATURE_COLUMN]).filter(hit)
                values = features_to_array(rows.column(FEATURE_COLUMN))  # (hits, D)
                if out is None:
                    out = np.zeros((len(ids), values.shape[1]), np.float32)
                out[[where[i] for i in rows.column("id").to_pylist()]] = values
    return out if out is not None else np.zeros((len(ids), 0), np.float32)
