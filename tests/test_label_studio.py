"""The Label Studio bridge as a plain class: schema, predictions, scores, webhooks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.actors.items import ItemStore
from activestream.actors.label_studio import (
    VERSION_PREFIX,
    LabelStudioBridge,
    LocalService,
    Schema,
    confidence,
    stale_tasks,
)
from activestream.actors.ledger import LabelLedger
from activestream.actors.trainer import Trainer
from activestream.config import LabelStudioConfig, ModelConfig, TrainingConfig

DIGITS = "".join(f'<Choice value="{i}"/>' for i in range(10))
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    f'<Choices name="label" toName="image" choice="single">{DIGITS}</Choices></View>'
)


@pytest.fixture()
def bridge(digits, tmp_path):
    _, pool, _, _ = digits
    trainer = Trainer(
        training=TrainingConfig(buffer_size=4), model=ModelConfig(), items=ItemStore(pool)
    )
    ledger = LabelLedger(str(tmp_path / "labels"), items=ItemStore(pool))
    ledger.start()
    return LabelStudioBridge(
        items=ItemStore(pool),
        service=LocalService(ledger, trainer),
        config=LabelStudioConfig(url=None, api_key=None),
    )


def tasks_for(ids):
    return [{"id": n + 1, "data": {"image": f"/x/{n}.png", "id": i}} for n, i in enumerate(ids)]


def test_choices_named_after_the_classes_map_by_name_whatever_their_order():
    reordered = "".join(f'<Choice value="{i}"/>' for i in reversed(range(10)))
    xml = CONFIG.replace(DIGITS, reordered)
    schema = Schema.parse(xml, tuple(str(i) for i in range(10)))
    assert schema.by_name and schema.index("7") == 7 and schema.choice(3) == "3"


def test_choices_with_other_names_map_by_position():
    xml = CONFIG.replace(DIGITS, "".join(f'<Choice value="c{i}"/>' for i in range(10)))
    schema = Schema.parse(xml, tuple(str(i) for i in range(10)))
    assert not schema.by_name and schema.index("c4") == 4 and schema.choice(4) == "c4"


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        ("<View><Image name='i' value='$image'/></View>", "no <Choices>"),
        ("<View><Choices name='l' toName='i'><Choice value='0'/></Choices></View>", "<Image"),
        (CONFIG.replace(DIGITS, '<Choice value="a"/><Choice value="b"/>'), "2 choices"),
        ("<View", "not XML"),
    ],
)
def test_a_label_config_that_cannot_label_the_pool_is_refused_with_a_reason(xml, reason):
    with pytest.raises(ValueError, match=reason):
        Schema.parse(xml, tuple(str(i) for i in range(10)))


def test_an_annotation_result_reads_as_its_class():
    schema = Schema.parse(CONFIG, tuple(str(i) for i in range(10)))
    result = [{"from_name": "label", "type": "choices", "value": {"choices": ["6"]}}]
    assert schema.label_of(result) == 6
    assert schema.label_of([{"from_name": "other", "type": "choices", "value": {}}]) is None


def test_confidence_is_one_minus_the_samplers_uncertainty():
    probs = np.array([[0.1] * 10, [0.91] + [0.01] * 9])
    for sampler in ("margin", "entropy", "least_confidence"):
        conf = confidence(probs, sampler)
        assert conf[0] < conf[1] and ((conf >= 0) & (conf <= 1)).all()
    assert confidence(probs, "bald").tolist() == confidence(probs, "margin").tolist()


def test_setup_answers_the_version_string_label_studio_compares(bridge):
    answer = bridge.setup({"project": "3.1795701708", "schema": CONFIG})
    assert answer == {"model_version": f"{VERSION_PREFIX}0"}


def test_predict_answers_one_prediction_per_task_in_task_order(bridge, digits):
    _, pool, _, _ = digits
    ids = list(ItemStore(pool).ids()[:5])
    bridge.setup({"project": 3, "schema": CONFIG})
    answer = bridge.predict({"project": "3.1", "tasks": tasks_for(ids)})
    results = answer["results"]
    assert len(results) == 5 and answer["model_version"] == f"{VERSION_PREFIX}0"
    probs = bridge.service.predict_proba(ItemStore(pool).get(ids))
    expected = confidence(probs, "margin")
    for result, p, conf in zip(results, probs, expected, strict=True):
        (region,) = result["result"]
        assert region["from_name"] == "label" and region["to_name"] == "image"
        assert region["value"]["choices"] == [str(int(p.argmax()))]
        assert result["score"] == pytest.approx(conf, abs=1e-5)


def test_a_task_whose_image_cannot_be_fetched_keeps_its_place_with_an_empty_result(bridge, digits):
    _, pool, _, _ = digits
    known = str(ItemStore(pool).ids()[0])
    bridge.setup({"project": 3, "schema": CONFIG, "hostname": "http://127.0.0.1:9"})
    tasks = [{"id": 1, "data": {"image": "/data/upload/3/none.png"}}, tasks_for([known])[0]]
    tasks[1]["id"] = 2
    results = bridge.predict({"project": 3, "tasks": tasks})["results"]
    assert results[0]["result"] == [] and results[1]["result"]
    assert any("not fetched" in e for e in bridge.status()["errors"])


def test_predict_for_a_project_never_set_up_uses_the_label_config_it_carries(bridge, digits):
    _, pool, _, _ = digits
    ids = list(ItemStore(pool).ids()[:2])
    answer = bridge.predict({"project": 9, "label_config": CONFIG, "tasks": tasks_for(ids)})
    assert len(answer["results"]) == 2 and 9 in bridge.status()["projects"]


def test_webhooks_are_queued_and_other_actions_are_acknowledged(bridge):
    assert bridge.webhook({"action": "PROJECT_UPDATED"}) == {
        "status": "ok",
        "action": "PROJECT_UPDATED",
    }
    assert bridge._events.qsize() == 0
    bridge.webhook({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {}})
    assert bridge._events.qsize() == 1


def test_an_event_for_a_project_never_set_up_sets_it_up_from_the_config_it_carries(bridge):
    bridge.webhook(
        {
            "action": "ANNOTATIONS_DELETED",
            "project": {"id": 4, "label_config": CONFIG},
            "annotations": [{"id": 1}],
        }
    )
    bridge._handle(bridge._events.get_nowait())
    assert 4 in bridge.status()["projects"]


scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    new=scores,
    top=st.integers(1, 10),
    tolerance=st.floats(0, 0.5),
)
def test_after_rewriting_the_stale_scores_label_studio_agrees_with_the_model(
    data, new, top, tolerance
):
    new = np.round(np.array(new), 6)
    held = np.array(
        data.draw(
            st.lists(
                st.one_of(st.none(), st.floats(0, 1, allow_nan=False)),
                min_size=len(new),
                max_size=len(new),
            )
        ),
        dtype=np.float64,
    )
    after = held.copy()
    after[stale_tasks(held, new, top=top, tolerance=tolerance)] = new[
        stale_tasks(held, new, top=top, tolerance=tolerance)
    ]
    assert not np.isnan(after).any()  # every task holds a score
    assert np.all(np.abs(after - new) <= tolerance + 1e-12)  # none lags more than the tolerance
    k = min(top, len(new))
    # Label Studio's first k (lowest held scores) are the model's first k, with their scores
    assert np.sort(after)[:k].tolist() == np.sort(new)[:k].tolist()
    front = np.sort(new)[k - 1]
    assert np.array_equal(after[new <= front], new[new <= front])


def test_unchanged_scores_are_never_rewritten():
    held = np.array([0.1, 0.5, 0.9])
    assert stale_tasks(held, held.copy(), top=3, tolerance=0.0).tolist() == []
