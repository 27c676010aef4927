"""The detector: torchvision's FCOS on pretrained EfficientNet-Lite0, with class rows per box."""

from __future__ import annotations

import io
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection import FCOS
from torchvision.transforms.functional import to_tensor

from activestream.models.detection import (
    DetectorCheckError,
    EfficientNetLite0Features,
    check_detector,
    detect_flipped,
    fcos_detector,
    flat_outputs,
    parameter_groups,
)
from activestream.samplers import detection as samplers
from activestream.samplers.detection import check_detections
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import open_image, read_coco

SPEC = CanvasSpec(source="digits", pool=16, test=4, size=96, scale=(24, 48), seed=1)


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, SPEC)
    data = read_coco(str(out / "pool"))
    images = [to_tensor(Image.open(io.BytesIO(open_image(i))).convert("RGB")) for i in data.items]
    targets = [
        {
            "boxes": torch.tensor([b.xyxy for b in i.boxes], dtype=torch.float32),
            "labels": torch.tensor([b.label for b in i.boxes]),
        }
        for i in data.items
    ]
    return images, targets


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return fcos_detector(10, image_size=96, score_thresh=0.02)


def test_the_backbone_taps_strides_8_16_and_32_of_pretrained_efficientnet_lite0():
    features = EfficientNetLite0Features(pretrained=True, out_channels=32)
    levels = features(torch.zeros(1, 3, 128, 128))
    assert [tuple(v.shape) for v in levels.values()] == [(1, 32, 16, 16), (1, 32, 8, 8),
                                                         (1, 32, 4, 4)]  # fmt: skip
    from activestream.models.pretrained import imagenet_state_dict

    stem = imagenet_state_dict()["_conv_stem.weight"]
    assert torch.equal(features.stem[0].weight, stem)


def test_boxes_scores_and_labels_are_torchvisions_own_with_a_class_row_per_box(detector, canvases):
    images, _ = canvases
    detector.eval()
    with torch.no_grad():
        ours = detector(images[:4])
        plain = types.MethodType(FCOS.postprocess_detections, detector)
        detector.postprocess_detections = plain  # the same network, torchvision's post-processing
        try:
            theirs = detector(images[:4])
        finally:
            del detector.postprocess_detections
    for a, b in zip(ours, theirs, strict=True):
        assert len(a["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])
        rows = a["class_scores"]
        assert rows.shape == (len(a["boxes"]), 10) and (rows >= 0).all()
        torch.testing.assert_close(rows.sum(dim=1), torch.ones(len(rows)))


def test_every_detection_sampler_scores_the_detectors_own_output(detector, canvases):
    images, _ = canvases
    detector.eval()
    with torch.no_grad():
        det = check_detections(*flat_outputs(detector(images[:4])))
    flipped = check_detections(*flat_outputs(detect_flipped(detector, images[:4])))
    for name in samplers.names():
        fn = samplers.get(name, np.random.default_rng(0))
        inputs = samplers.spec(name).inputs
        scores = fn(det, flipped) if inputs == ("detections", "flipped") else fn(det)
        assert scores.shape == (4,) and np.isfinite(scores).all(), name


def test_online_steps_leave_the_pretrained_batch_norm_statistics_as_imagenet_made_them(
    canvases,
):
    images, targets = canvases
    model = fcos_detector(10, image_size=96)
    backbone = torch.nn.ModuleList([model.backbone.stem, model.backbone.blocks])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    model.train()
    sum(model(images[:4], targets[:4]).values()).backward()
    after = backbone.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.slow
def test_a_few_online_steps_on_labeled_canvases_lower_the_training_loss(canvases):
    images, targets = canvases
    torch.manual_seed(0)
    model = fcos_detector(10, image_size=96)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = sum(model(images[:8], targets[:8]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_the_built_in_detector_passes_the_detector_check_and_is_left_as_it_was(detector):
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    detector.eval()
    check_detector(detector, 10)
    assert not detector.training
    assert all(torch.equal(v, detector.state_dict()[k]) for k, v in before.items())


def test_a_plain_torchvision_detector_fails_the_check_for_want_of_class_rows():
    ours = fcos_detector(3, lambda: EfficientNetLite0Features(pretrained=False, out_channels=32))
    plain = FCOS(ours.backbone, 3, anchor_generator=ours.anchor_generator, min_size=64,
                 max_size=64)  # fmt: skip
    with pytest.raises(DetectorCheckError, match="lack \\['class_scores'\\]"):
        check_detector(plain, 3)


def test_the_pretrained_backbone_learns_at_its_own_rate_and_every_weight_is_in_one_group(detector):
    fast, slow = parameter_groups(detector, 1e-3, 1e-4)
    assert (fast["lr"], slow["lr"]) == (1e-3, 1e-4)
    ids = [id(p) for group in (fast, slow) for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in detector.parameters())
    stem = detector.backbone.stem[0].weight
    assert any(p is stem for p in slow["params"])
    assert all(p is not stem for p in fast["params"])
    assert any(p is detector.head.classification_head.cls_logits.weight for p in fast["params"])


def test_a_model_whose_backbone_names_no_pretrained_weights_gets_one_group():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    (only,) = parameter_groups(model, 1e-3, 1e-4)
    assert only["lr"] == 1e-3 and len(only["params"]) == len(list(model.parameters()))
