"""A user's own detector, named by ``model.factory``: built, checked, trained and served.

The built-in FCOS stays the default; an import path names the user's detector (here FCOS on a
backbone of their own, as a user who brings a backbone writes it), called with the number of
classes and ``model.kwargs``. One that breaks the contract stops ``serve`` with one line
before Ray starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from user_plugins import TinyPyramid

from activestream.actors.detector import (
    DetectorTrainer,
    checked_detector_factory,
    detector_factory,
)
from activestream.actors.items import ItemStore
from activestream.config import Config, ModelConfig, TrainingConfig
from activestream.errors import ConfigError
from activestream.models.detection import ClassAwareFCOS, fcos_detector
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import read_coco
from activestream.sources.detection_pool import serve_pool, write_detection_pool

TESTS = Path(__file__).resolve().parent
USER = ModelConfig(factory="user_plugins:tiny_fcos", kwargs={"width": 32})
SPEC = CanvasSpec(source="digits", pool=24, test=4, size=64, scale=(16, 32), seed=5)


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, SPEC)
    return out


def test_a_registered_name_builds_the_built_in_fcos_with_the_models_kwargs():
    factory = detector_factory(ModelConfig(kwargs={"image_size": 96}))
    assert factory.func is fcos_detector and factory.keywords == {"image_size": 96}


def test_an_import_path_builds_the_users_detector_with_the_models_kwargs():
    net = detector_factory(USER)(3)
    assert isinstance(net.backbone, TinyPyramid) and net.backbone.out_channels == 32


def test_the_users_detector_passes_the_check_and_pools_an_embedding():
    factory, embeds = checked_detector_factory(USER, num_classes=3)
    assert embeds and isinstance(factory(3).backbone, TinyPyramid)


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (ModelConfig(factory="user_plugins:plain_fcos"), "detections lack ['class_scores']"),
        (ModelConfig(factory="user_plugins:not_a_model"), "returned str, not a torch.nn.Module"),
        (
            ModelConfig(factory="user_plugins:tiny_fcos", kwargs={"depth": 3}),
            "unexpected keyword argument 'depth'",
        ),
    ],
)
def test_a_detector_that_breaks_the_contract_is_one_line_naming_the_factory(model, says):
    with pytest.raises(ConfigError) as err:
        checked_detector_factory(model, num_classes=3)
    message = str(err.value)
    assert message.startswith(f"model.factory {model.factory!r}") and says in message
    assert "\n" not in message


@pytest.mark.compute
def test_the_trainer_builds_trains_and_names_the_users_detector(canvases, tmp_path):
    pool_set = read_coco(str(canvases / "pool"))
    shards = write_detection_pool(pool_set, str(tmp_path / "shards"))
    training = TrainingConfig(buffer_size=4, steps_per_update=2, batch_size=4, update_seconds=None)
    t = DetectorTrainer(training=training, items=ItemStore(shards), model=USER, seed=0)
    assert isinstance(t.model, ClassAwareFCOS) and isinstance(t.model.backbone, TinyPyramid)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    labels = [{"id": i.id, "boxes": [b.to_json() for b in i.boxes]} for i in pool_set.items[:4]]
    t.add_labels(labels)
    t.partial_fit()
    assert t.version == 1 and t.model_info()["arch"] == "user_plugins:tiny_fcos"
    moved = [k for k, v in t.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.stages") for k in moved)


def test_serve_with_a_detector_that_breaks_the_contract_is_one_line_before_ray(canvases, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"task": "detection", "model": {"factory": "user_plugins:plain_fcos"}})
    )
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-m", "activestream.cli", "serve", "--config", str(config),
         "--data", str(canvases), "--data-dir", str(tmp_path / "cache"),
         "--port", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("activestream: error: model.factory 'user_plugins:plain_fcos'")
    assert "class_scores" in last and "Traceback" not in proc.stderr
    assert "Ray" not in proc.stderr and not (tmp_path / "cache" / "state").exists()


@pytest.mark.slow
def test_the_users_detector_serves_queries_learns_from_boxes_and_answers_boxes(
    run_service, canvases, tmp_path
):
    cache = tmp_path / "cache"
    pool = serve_pool(str(canvases), str(cache))  # what `activestream serve --data DIR` serves
    cfg = Config(task="detection").with_overrides(
        {
            "data.dataset": pool,
            "data.cache_dir": str(cache),
            "model.factory": USER.factory,
            "model.kwargs": USER.kwargs,
            "training.buffer_size": 4,
            "training.steps_per_update": 2,
            "training.batch_size": 4,
            "sampling.candidates": 16,
            "scoring.num_scorers": 1,
        }
    )
    truth = {item.id: item for item in read_coco(str(canvases / "pool")).items}
    with run_service(cfg) as base:
        info = requests.get(f"{base}/model", timeout=30).json()
        assert info["arch"] == "user_plugins:tiny_fcos" and info["task"] == "detection"
        queries = requests.get(f"{base}/queries", params={"n": 4}, timeout=60).json()["queries"]
        assert len(queries) == 4 and all(np.isfinite(q["score"]) for q in queries)
        labels = [
            {"id": q["id"], "boxes": [b.to_json() for b in truth[q["id"]].boxes]} for q in queries
        ]
        posted = requests.post(f"{base}/labels", json={"labels": labels}, timeout=60)
        assert posted.status_code == 200, posted.text
        deadline = time.monotonic() + 180
        while requests.get(f"{base}/model", timeout=30).json()["version"] < 1:
            assert time.monotonic() < deadline, "no version from the user's detector"
            time.sleep(0.5)
        image = next((canvases / "test" / "images").iterdir())
        answer = requests.post(
            f"{base}/predict", params={"min_score": 0}, data=image.read_bytes(),
            headers={"Content-Type": f"image/{image.suffix.lstrip('.')}"}, timeout=60,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] >= 1 and body["predictions"][0]["boxes"]
