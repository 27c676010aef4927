"""A user's own model, sampler and pretrained weights over encoded images, through real Serve."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import requests
import torch
from encoded_data import encode, image_for, write_encoded

from activestream.config import Config
from activestream.errors import ConfigError

pytestmark = pytest.mark.slow

MODEL = {
    "model.factory": "user_plugins:tiny_mlp",
    "model.kwargs": {"hidden": 12},
    "model.resize": 16,
    "sampling.sampler": "user_plugins:first_class_doubt",
}


@pytest.fixture(scope="module")
def init_weights(tmp_path_factory):
    """A state dict of the user's model, saved as a user would (``torch.save``)."""
    import user_plugins

    torch.manual_seed(123)
    net = user_plugins.tiny_mlp(3, shape=(3, 16, 16), hidden=12)
    path = tmp_path_factory.mktemp("weights") / "init.pt"
    torch.save(net.state_dict(), path)
    return path, {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def service(run_service, tmp_path_factory, init_weights):
    root = tmp_path_factory.mktemp("encoded")
    truth = write_encoded(root / "data" / "pool", 60, files=3, bad_rows=2)
    write_encoded(root / "data" / "test", 12, files=1, seed=1)
    cfg = Config().with_overrides(
        {
            "data.dataset": str(root / "data"),
            "data.cache_dir": str(root / "cache"),
            "training.buffer_size": 4,
            "training.steps_per_update": 3,
            "sampling.candidates": 32,
            "model.init_weights": str(init_weights[0]),
            **MODEL,
        }
    )
    with run_service(cfg) as base:
        yield {"base": base, "truth": truth, "root": root}


def test_version_zero_serves_the_pretrained_weights(service, init_weights):
    raw = requests.get(f"{service['base']}/model/weights", timeout=30).content
    state = torch.load(io.BytesIO(raw), weights_only=True)
    for key, value in init_weights[1].items():
        assert torch.equal(state[key], value), key


def test_queries_come_from_the_users_sampler_and_skip_bad_images(service):
    body = requests.get(f"{service['base']}/queries", params={"n": 8}, timeout=30).json()
    ids = [q["id"] for q in body["queries"]]
    assert ids and all(i in service["truth"] for i in ids)
    metrics = requests.get(f"{service['base']}/metrics", timeout=30).text
    assert "activestream_bad_items 2.0" in metrics
    assert "activestream_pool_items 62.0" in metrics, metrics


def test_labels_for_encoded_items_train_the_users_model(service):
    base, truth = service["base"], service["truth"]
    before = requests.get(f"{base}/model", timeout=30).json()
    assert before["arch"] == "user_plugins:tiny_mlp"
    leased = requests.get(f"{base}/queries", params={"n": 8}, timeout=30).json()["queries"]
    labels = [{"id": q["id"], "label": truth[q["id"]]} for q in leased]
    answer = requests.post(f"{base}/labels", json={"labels": labels}, timeout=30).json()
    assert answer["accepted"] == len(labels)
    deadline = time.monotonic() + 60
    while requests.get(f"{base}/model", timeout=30).json()["version"] <= before["version"]:
        assert time.monotonic() < deadline, "no new version after labels"
        time.sleep(0.2)


def test_item_image_returns_the_original_bytes(service):
    import pyarrow.parquet as pq

    table = pq.read_table(service["root"] / "data" / "pool" / "part-00000.parquet")
    item, data = table.column("id")[1].as_py(), table.column("image")[1].as_py()
    answer = requests.get(f"{service['base']}/items/{item}/image", timeout=30)
    assert answer.status_code == 200
    assert answer.content == data and answer.headers["content-type"] == "image/png"


def test_predict_takes_a_raw_image_body(service):
    data = encode(image_for(1, (30, 22), np.random.default_rng(5)), "PNG")
    answer = requests.post(
        f"{service['base']}/predict", data=data, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert len(prediction["probs"]) == 3


def test_predict_takes_a_multipart_upload_of_several_files(service):
    rng = np.random.default_rng(6)
    files = [
        ("file", (f"{i}.jpg", encode(image_for(i, (25, 25), rng), "JPEG"), "image/jpeg"))
        for i in range(2)
    ]
    answer = requests.post(f"{service['base']}/predict", files=files, timeout=30)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2


def test_predict_rejects_bytes_that_are_not_an_image(service):
    answer = requests.post(
        f"{service['base']}/predict",
        data=b"\x89PNG broken",
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert answer.status_code == 422
    assert "not a decodable image" in answer.json()["detail"]


def test_a_factory_that_does_not_import_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"'model\.factory'.*cannot import.*no_such_module"):
        Config().with_overrides({"model.factory": "no_such_module:net"})


def test_a_factory_that_returns_the_wrong_thing_is_a_config_error():
    from activestream.actors.net import build_net

    cfg = Config().with_overrides({"model.factory": "user_plugins:not_a_model"})
    with pytest.raises(ConfigError, match="returned str, not a torch.nn.Module"):
        build_net(cfg.model, stored_shape=(1, 8, 8), num_classes=3)


def test_init_weights_that_do_not_fit_name_the_keys(tmp_path):
    from activestream.actors.net import build_net, load_init_weights

    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "bad.pt")
    cfg = Config().with_overrides(MODEL)
    net = build_net(cfg.model, stored_shape=(3, 16, 16), num_classes=3)
    with pytest.raises(ConfigError, match="does not fit model.factory.*missing"):
        load_init_weights(net, str(tmp_path / "bad.pt"))


@pytest.mark.parametrize(
    "content", [b"not a state dict", b"", b"\x80\x04K\x01."], ids=["text", "empty", "pickle"]
)
def test_init_weights_that_are_not_a_torch_file_are_one_config_error(tmp_path, content):
    from activestream.actors.net import build_net, load_init_weights

    (tmp_path / "w.pt").write_bytes(content)
    net = build_net(Config().model, stored_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match=r"w\.pt: cannot load a state dict"):
        load_init_weights(net, str(tmp_path / "w.pt"))
