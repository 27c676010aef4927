"""The online detector trainer and scorer over a real pool of canvases of real digits."""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from activestream.actors.detector import (
    DetectorTrainer,
    DetectorTrainerService,
    box_answer,
    boxes_to_json,
    decode_rgb,
    image_hit,
)
from activestream.actors.detector_scorer import DetectorScorer
from activestream.actors.items import ItemStore
from activestream.actors.labels import LabelConflict, LabelError, UnknownId
from activestream.config import ModelConfig, TrainingConfig
from activestream.errors import ConfigError, DataError
from activestream.models.detection import fcos_detector
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import open_image, read_coco
from activestream.sources.detection_pool import write_detection_pool
from activestream.tasks.boxes import Box

pytestmark = pytest.mark.compute

SPEC = CanvasSpec(source="digits", pool=48, test=16, size=96, scale=(24, 48), seed=2)
TRAINING = TrainingConfig(buffer_size=8, steps_per_update=6, batch_size=4, update_seconds=None)


def small_detector(num_classes: int) -> torch.nn.Module:
    return fcos_detector(num_classes, image_size=96)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, SPEC)
    pool_set = read_coco(str(out / "pool"))
    shards = write_detection_pool(pool_set, str(out / "shards"), rows_per_shard=20)
    return pool_set, read_coco(str(out / "test")), shards


def trainer(data, **kwargs) -> DetectorTrainer:
    pool_set, _, shards = data
    return DetectorTrainer(
        training=kwargs.pop("training", TRAINING), items=ItemStore(shards),
        classes=pool_set.classes, detector=small_detector, **kwargs,
    )  # fmt: skip


def label(item) -> dict:
    return {"id": item.id, "boxes": [b.to_json() for b in item.boxes]}


def test_the_pool_holds_every_image_byte_for_byte_under_its_id_with_the_classes(data):
    pool_set, _, shards = data
    store = ItemStore(shards)
    assert shards.classes == pool_set.classes and shards.encoded
    assert len(store) == len(pool_set.items) and shards.file_rows == (20, 20, 8)
    item = pool_set.items[31]
    assert store.original(item.id)[0] == open_image(item)


def test_two_images_with_one_id_are_refused_naming_both(data, tmp_path):
    pool_set = data[0]
    twin = dataclasses.replace(pool_set.items[1], id=pool_set.items[0].id)
    clash = dataclasses.replace(pool_set, items=(pool_set.items[0], twin))
    with pytest.raises(DataError, match=f"two images have the id '{twin.id}'"):
        write_detection_pool(clash, str(tmp_path / "shards"))


def test_box_labels_are_held_and_counted_and_an_empty_list_is_a_label(data):
    t = trainer(data)
    items = data[0].items
    result = t.add_labels([label(items[0]), {"id": items[1].id, "boxes": []}])
    assert (result.accepted, result.duplicates) == (2, 0)
    assert t.labels_seen == 2 and t.buffered == 2
    assert t.held_labels()[items[1].id] == []
    assert t.held_labels()[items[0].id] == boxes_to_json(box_answer(items[0].boxes))


def test_the_same_boxes_in_another_order_repeat_the_label(data):
    t = trainer(data)
    item = next(i for i in data[0].items if len(i.boxes) > 1)
    t.add_labels([label(item)])
    shuffled = {"id": item.id, "boxes": [b.to_json() for b in reversed(item.boxes)]}
    assert t.add_labels([shuffled]).duplicates == 1


def test_other_boxes_for_a_labeled_image_conflict_unless_relabeling(data):
    t = trainer(data)
    item = data[0].items[2]
    t.add_labels([label(item)])
    with pytest.raises(LabelConflict, match=r"already labeled \d+ box"):
        t.add_labels([{"id": item.id, "boxes": []}])
    assert t.add_labels([{"id": item.id, "boxes": []}], relabel=True).accepted == 1
    assert t.held_labels()[item.id] == []


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ({"bbox": [90, 0, 20, 10], "label": 0}, "past the image's width 96"),
        ({"bbox": [0, 0, -3, 10], "label": 0}, "both must be > 0"),
        ({"bbox": [0, 0, 5, 5], "label": "cat"}, "unknown class 'cat'"),
        ({"bbox": [0, 0, 5, 5], "label": 10}, "outside 0..9"),
        ({"bbox": [0, 0, 5], "label": 0}, "four finite numbers"),
    ],
)
def test_a_bad_box_rejects_the_whole_batch_with_the_reason(data, box, reason):
    t = trainer(data)
    items = data[0].items
    with pytest.raises(LabelError, match=reason):
        t.add_labels([label(items[0]), {"id": items[1].id, "boxes": [box]}])
    assert t.labels_seen == 0


def test_an_id_outside_the_pool_or_a_label_without_boxes_is_refused(data):
    t = trainer(data)
    with pytest.raises(UnknownId, match="not-there"):
        t.add_labels([{"id": "not-there", "boxes": []}])
    with pytest.raises(LabelError, match="no boxes"):
        t.add_labels([{"id": data[0].items[0].id, "label": 3}])
    assert t.labels_seen == 0


def test_log_records_apply_once_even_when_resent(data):
    t = trainer(data)
    records = [label(i) for i in data[0].items[:5]]
    assert t.ingest(0, records[:3]) == 3
    assert t.ingest(1, records[1:]) == 5  # a resend from an older offset
    assert t.ingest(9, records) == 5  # a gap: nothing applied
    assert t.labels_seen == 5


def test_a_retracted_label_is_never_trained_on_and_can_come_back(data):
    t = trainer(data)
    item = data[0].items[0]
    t.ingest(0, [label(item), {"id": item.id, "retract": True}])
    assert t.labels_seen == 0
    t.ingest(2, [label(item)])
    assert t.labels_seen == 1


def test_a_prequential_hit_needs_every_true_box_found_and_nothing_else_claimed():
    truth = (Box((0, 0, 10, 10), 0), Box((20, 20, 10, 10), 1))
    found = {"boxes": [[21, 20, 30, 30], [0, 0, 10, 10]], "labels": [1, 0], "scores": [0.8, 0.7]}
    assert image_hit(found, truth)
    assert not image_hit({**found, "scores": [0.8, 0.2]}, truth)  # one box not sure enough
    extra = {k: [*v, v[0]] for k, v in found.items()}
    assert not image_hit(extra, truth)  # a third claim
    assert image_hit({"boxes": [[0, 0, 5, 5]], "labels": [0], "scores": [0.3]}, ())


def test_training_on_the_buffer_publishes_a_version_and_learns_the_boxes(data):
    pool_set, test_set, _ = data
    t = trainer(data, training=TRAINING.model_copy(update={"steps_per_update": 40}))
    test_images = [decode_rgb(open_image(i)) for i in test_set.items]
    test_truth = [box_answer(i.boxes) for i in test_set.items]
    before = t.evaluate_map(test_images, test_truth)["map_50"]
    t.add_labels([label(i) for i in pool_set.items[:32]])
    t.partial_fit()
    after = t.evaluate_map(test_images, test_truth)["map_50"]
    assert t.version == 1 and t.buffered == 0 and t.train_steps == 160
    assert t.prequential()[0] == 32 and len(t.prequential()[1]) == 32
    assert after > before + 0.1, (before, after)


def test_boxes_come_from_the_last_version_while_an_update_trains_and_say_which(data):
    """An update holds the model for all its steps: predictions must not wait for it."""
    import threading

    pool_set, test_set, _ = data
    t = trainer(data, training=TRAINING.model_copy(update={"steps_per_update": 40}))
    image = decode_rgb(open_image(test_set.items[0]))
    t.add_labels([label(i) for i in pool_set.items[:8]])
    t.partial_fit()
    before = t.predict_versioned([image])
    t.add_labels([label(i) for i in pool_set.items[8:16]])
    update = threading.Thread(target=t.partial_fit)
    update.start()
    time.sleep(0.5)  # into the update's 40 steps (seconds on CPUs)
    during = t.predict_versioned([image])
    training = update.is_alive()
    update.join()
    after = t.predict_versioned([image])
    assert training, "the update ended before the prediction: make it longer"
    assert before[0] == during[0] == 1 and after[0] == 2
    np.testing.assert_array_equal(during[1][0]["boxes"], before[1][0]["boxes"])
    with torch.inference_mode():
        own = t.model([torch.from_numpy(image).float().div(255)])[0]["boxes"].numpy()
    np.testing.assert_array_equal(after[1][0]["boxes"], own)


def test_built_with_the_classifier_trainers_arguments_it_takes_the_pools_classes_and_weights(
    data, tmp_path
):
    pool_set, _, shards = data
    donor = trainer(data, seed=3)
    path = tmp_path / "detector.pt"
    torch.save(donor.model.state_dict(), path)
    t = DetectorTrainer(
        training=TRAINING, model=ModelConfig(init_weights=str(path)), items=ItemStore(shards),
        seed=0, detector=small_detector,
    )  # fmt: skip
    assert t.classes == pool_set.classes
    for a, b in zip(t.state_arrays().values(), donor.state_arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weights_for_other_classes_are_refused_naming_a_key(data, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(small_detector(3).state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit the detector: .*cls_logits"):
        trainer(data, model=ModelConfig(init_weights=str(path)))


def test_a_checkpoint_restores_labels_weights_and_draws_exactly(data):
    t = trainer(data)
    items = data[0].items
    t.add_labels([label(i) for i in items[:8]])
    t.partial_fit()
    t.ingest(0, [label(i) for i in items[8:11]])
    blob = t.checkpoint()
    twin = trainer(data, seed=5)
    twin.restore(blob)
    assert twin.held_labels() == t.held_labels() and twin.applied == t.applied == 3
    for a, b in zip(twin.state_arrays().values(), t.state_arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    t.add_labels([label(i) for i in items[11:16]])
    twin.add_labels([label(i) for i in items[11:16]])
    t.partial_fit()
    twin.partial_fit()
    for a, b in zip(twin.state_arrays().values(), t.state_arrays().values(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_service_trains_in_its_thread_and_publishes_each_version(data):
    published = []
    pool_set, _, shards = data
    service = DetectorTrainerService(
        publish=published.append, put=copy.deepcopy, training=TRAINING.model_copy(
            update={"publish_seconds": 0.5, "update_seconds": 5.0}),
        items=ItemStore(shards), classes=pool_set.classes, detector=small_detector,
    )  # fmt: skip
    try:
        assert service.start() == 0
        service.add_labels([label(i) for i in pool_set.items[:3]])  # under the buffer
        end = time.monotonic() + 120
        while len(published) < 2 and time.monotonic() < end:  # published after the step
            time.sleep(0.1)
        assert service.version == 1 and [w.version for w in published] == [0, 1]
        info = service.model_info()
        assert info["task"] == "detection" and info["labels_trained"] == 3
        assert info["classes"] == list(pool_set.classes) and not info["errors"]
    finally:
        service.stop()


def test_the_scorer_gives_each_image_a_score_and_flags_what_does_not_decode(data):
    pool_set, _, shards = data
    t = trainer(data)
    scorer = DetectorScorer(num_classes=len(pool_set.classes), detector=small_detector)
    scorer.set_weights(t.state_arrays(), 4)
    table = shards.read_file(0, columns=("id", "image")).slice(0, 6)
    broken = pa.table({"id": ["broken"], "image": pa.array([b"not an image"], pa.binary())})
    out = scorer(pa.concat_tables([table, broken]))
    assert out.column_names == ["id", "score", "pred", "model_version", "ok"]
    assert out.column("ok").to_pylist() == [True] * 6 + [False]
    assert set(out.column("model_version").to_pylist()) == {4}
    scores = np.array(out.column("score").to_pylist())
    assert (scores[:6] >= 0).all() and (scores[:6] <= 1).all() and scores[6] == 0


def test_the_scorer_scores_as_the_trainers_own_model_would(data):
    pool_set, _, shards = data
    t = trainer(data)
    t.add_labels([label(i) for i in pool_set.items[:8]])
    t.partial_fit()
    scorer = DetectorScorer(num_classes=len(pool_set.classes), detector=small_detector)
    scorer.set_weights(t.state_arrays(), t.version)
    images = [decode_rgb(open_image(i)) for i in pool_set.items[8:12]]
    found = t.predict(images)
    scores, sure = scorer.detect(images)
    assert sure.tolist() == [int((f["scores"] >= 0.5).sum()) for f in found]
    flip = DetectorScorer(
        num_classes=len(pool_set.classes), detector=small_detector, sampler="flip_consistency"
    )
    flip.set_weights(t.state_arrays(), t.version)
    assert flip.detect(images)[0].shape == (4,)


def test_image_embeddings_from_one_pass_tell_images_apart_whatever_they_are_batched_with(data):
    pool_set, _, shards = data
    scorer = DetectorScorer(num_classes=len(pool_set.classes), detector=small_detector, embed=True)
    table = shards.read_file(0, columns=("id", "image")).slice(0, 3)
    out = scorer(table)
    embedding = np.array(out.column("embedding").to_pylist())
    assert embedding.shape == (3, 320) and np.isfinite(embedding).all()

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    image = decode_rgb(open_image(pool_set.items[0]))
    wide = image[:, :48, :]  # a smaller image: padded when scored beside a full one
    scorer.detect([wide])
    alone = scorer.embeddings[0]
    scorer.detect([image, wide])
    beside, other = scorer.embeddings[1], scorer.embeddings[0]
    # Padding moves a stride-32 map a little (measured: cosine 0.93-0.95 to itself alone,
    # 0.67-0.75 to another canvas): the same image stays nearer itself than any other.
    assert cosine(alone, beside) > cosine(alone, other) + 0.1
