"""Detectors: torchvision's FCOS on a backbone the user names, EfficientNet-Lite0 built in.

:func:`fcos_detector` wraps any backbone factory that returns a feature pyramid (an
``nn.Module`` mapping images to an ordered dict of feature maps, with ``out_channels``) in
torchvision's FCOS; :func:`efficientnet_lite0_fpn` is that factory for the ImageNet-pretrained
EfficientNet-Lite0 the ``pretrained`` extra ships, tapped at strides 8, 16 and 32 under a
feature pyramid. FCOS is anchor-free (one point per location, no anchor shapes to tune for
the data) and single-stage, which keeps online training steps short on CPUs.

:class:`ClassAwareFCOS` also returns, for every box it keeps, the class scores of the location
that produced it (``class_scores``, (K, C), rows summing to 1): class-uncertainty samplers
(:mod:`activestream.samplers.detection.uncertainty`) need the whole row, not just the winner.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork
from torchvision.ops.misc import FrozenBatchNorm2d

#: EfficientNet-Lite0 blocks whose outputs feed the pyramid: the last block at strides 8, 16
#: and 32 (40, 112 and 320 channels).
LITE0_TAPS = (4, 10, 15)
LITE0_CHANNELS = (40, 112, 320)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every ``BatchNorm2d`` in ``module`` replaced by a frozen copy of its statistics and affine.

    Online steps see a handful of images: batch statistics that small would drag the
    pretrained running means around with every step, so the backbone keeps ImageNet's, as
    torchvision's own detectors do with pretrained backbones.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0's stem and blocks, returning the taps' outputs under an FPN.

    The backbone's batch norms are frozen (:func:`freeze_batchnorm`); the pyramid has none.

    Args:
        pretrained: Load the ImageNet weights of the ``pretrained`` extra (else random).
        out_channels: Channels of every pyramid level; a multiple of 32 (FCOS's head
            normalises in 32 groups).
    """

    def __init__(self, pretrained: bool = True, out_channels: int = 64) -> None:
        super().__init__()
        from activestream.models.pretrained import _import_efficientnet, imagenet_state_dict

        efficientnet, _ = _import_efficientnet()
        net = efficientnet.from_name("efficientnet-lite0")
        if pretrained:
            net.load_state_dict(imagenet_state_dict(), strict=True)
        self.stem = freeze_batchnorm(nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6()))
        self.blocks = freeze_batchnorm(net._blocks[: LITE0_TAPS[-1] + 1])
        self.fpn = FeaturePyramidNetwork(list(LITE0_CHANNELS), out_channels)
        self.out_channels = out_channels

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The ImageNet-trained weights (stem and blocks), for a smaller learning rate."""
        return [*self.stem.parameters(), *self.blocks.parameters()]

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """(N, 3, H, W) -> pyramid levels ``"0"``, ``"1"``, ``"2"`` at strides 8, 16, 32."""
        x = self.stem(images)
        taps: OrderedDict[str, Tensor] = OrderedDict()
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in LITE0_TAPS:
                taps[str(len(taps))] = x
        return self.fpn(taps)


def parameter_groups(model: nn.Module, lr: float, pretrained_lr: float) -> list[dict[str, Any]]:
    """Optimizer groups: ``pretrained_lr`` for a backbone's pretrained weights, ``lr`` for the rest.

    Fine-tuning a pretrained backbone at the new layers' rate can stall a run (measured on the
    canvases at AdamW 1e-3 throughout: of four runs, one stayed near mAP@0.5 0.18 through 240
    images and one until 112); a tenth of it keeps what ImageNet taught. A backbone without
    ``pretrained_parameters`` gets one group.
    """
    pretrained = getattr(getattr(model, "backbone", None), "pretrained_parameters", None)
    if pretrained is None:
        return [{"params": list(model.parameters()), "lr": lr}]
    slow = {id(p) for p in pretrained()}
    return [
        {"params": [p for p in model.parameters() if id(p) not in slow], "lr": lr},
        {"params": [p for p in model.parameters() if id(p) in slow], "lr": pretrained_lr},
    ]


def efficientnet_lite0_fpn(pretrained: bool = True, out_channels: int = 64) -> nn.Module:
    """Backbone factory: pretrained EfficientNet-Lite0 under a three-level feature pyramid."""
    return EfficientNetLite0Features(pretrained=pretrained, out_channels=out_channels)


class ClassAwareFCOS(FCOS):
    """torchvision's FCOS whose detections also carry each box's class scores (``class_scores``).

    Post-processing is torchvision's own (score threshold, top-k per level, class-wise NMS);
    for each kept box it also gathers ``sqrt(sigmoid(logit_c) * sigmoid(centerness))`` for every
    class c at the box's location, normalised to sum to 1.
    """

    def postprocess_detections(
        self,
        head_outputs: dict[str, list[Tensor]],
        anchors: list[list[Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """As :meth:`FCOS.postprocess_detections`, plus ``class_scores`` (K, C) per image."""
        detections: list[dict[str, Tensor]] = []
        for index, image_shape in enumerate(image_shapes):
            found: dict[str, list[Tensor]] = {"boxes": [], "scores": [], "labels": [], "rows": []}
            for regression, logits, ctrness, level_anchors in zip(
                [r[index] for r in head_outputs["bbox_regression"]],
                [c[index] for c in head_outputs["cls_logits"]],
                [b[index] for b in head_outputs["bbox_ctrness"]],
                anchors[index],
                strict=True,
            ):
                rows = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(ctrness))  # (A, C)
                num_classes = rows.shape[-1]
                flat = rows.flatten()
                keep = torch.where(flat > self.score_thresh)[0]
                k = det_utils._topk_min(keep, self.topk_candidates, 0)
                scores, order = flat[keep].topk(k)
                keep = keep[order]
                anchor = torch.div(keep, num_classes, rounding_mode="floor")
                boxes = self.box_coder.decode(regression[anchor], level_anchors[anchor])
                found["boxes"].append(box_ops.clip_boxes_to_image(boxes, image_shape))
                found["scores"].append(scores)
                found["labels"].append(keep % num_classes)
                found["rows"].append(rows[anchor])
            boxes, scores, labels, rows = (torch.cat(found[key]) for key in found)
            kept = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)
            kept = kept[: self.detections_per_img]
            rows = rows[kept]
            detections.append(
                {
                    "boxes": boxes[kept],
                    "scores": scores[kept],
                    "labels": labels[kept],
                    "class_scores": rows / rows.sum(dim=1, keepdim=True).clamp_min(1e-12),
                }
            )
        return detections


def fcos_detector(
    num_classes: int,
    backbone: Callable[[], nn.Module] = efficientnet_lite0_fpn,
    *,
    image_size: int = 128,
    score_thresh: float = 0.05,
) -> ClassAwareFCOS:
    """FCOS for ``num_classes`` on ``backbone()`` (any module returning a feature pyramid).

    Args:
        num_classes: Object classes (FCOS has no background class).
        backbone: Factory of the feature extractor; it must set ``out_channels`` and return as
            many levels as the anchor generator below has sizes (one per level).
        image_size: Images are resized so their longer side is this (canvases: no resizing).
        score_thresh: Boxes under it are dropped before NMS; 0.05 as torchvision's mAP runs.

    Returns:
        A :class:`ClassAwareFCOS` taking lists of (3, H, W) float images in [0, 1], normalised
        inside with ImageNet's mean and std.
    """
    features = backbone()
    was_training = features.training
    features.eval()  # a probe must not move any running statistics
    with torch.no_grad():
        levels = len(features(torch.zeros(1, 3, 64, 64)))
    features.train(was_training)
    sizes = tuple((16 * 2**i,) for i in range(levels))  # one point per location per level
    anchors = AnchorGenerator(sizes, ((1.0,),) * levels)
    return ClassAwareFCOS(
        features,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        anchor_generator=anchors,
        score_thresh=score_thresh,
    )


def flat_outputs(
    outputs: list[dict[str, Tensor]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-image detections -> the flat arrays detection samplers take.

    Returns:
        ``boxes`` (M, 4) ``[x1, y1, x2, y2]``, ``class_scores`` (M, C), ``scores`` (M,) and
        ``counts`` (N,): image i owns the next ``counts[i]`` rows.
    """
    parts = {key: [o[key].detach().cpu().numpy() for o in outputs] for key in
             ("boxes", "class_scores", "scores")}  # fmt: skip
    counts = np.array([len(o["scores"]) for o in outputs], dtype=np.int64)
    width = outputs[0]["class_scores"].shape[1] if outputs else 0
    boxes = np.concatenate(parts["boxes"]) if outputs else np.zeros((0, 4))
    rows = np.concatenate(parts["class_scores"]) if outputs else np.zeros((0, width))
    scores = np.concatenate(parts["scores"]) if outputs else np.zeros(0)
    return boxes.astype(np.float64), rows.astype(np.float64), scores.astype(np.float64), counts


@torch.no_grad()
def detect_flipped(model: nn.Module, images: list[Tensor]) -> list[dict[str, Tensor]]:
    """Detections on the mirrored images, boxes mapped back into each image's own frame."""
    outputs = model([image.flip(-1) for image in images])
    for image, found in zip(images, outputs, strict=True):
        width = image.shape[-1]
        boxes = found["boxes"].clone()
        boxes[:, 0], boxes[:, 2] = width - found["boxes"][:, 2], width - found["boxes"][:, 0]
        found["boxes"] = boxes
    return outputs


class DetectorCheckError(ValueError):
    """A detector breaks the contract the trainer and scorers rely on; the message says how."""


def check_detector(model: nn.Module, num_classes: int, image_size: int = 64) -> None:
    """Check that ``model`` trains and detects as the detection task expects, or raise.

    The contract is torchvision's detection API plus a class row per box: in train mode
    ``model(images, targets)`` returns a dict of finite scalar losses whose sum backpropagates;
    in eval mode ``model(images)`` returns, per image, ``boxes`` (K, 4) ``[x1, y1, x2, y2]``
    inside the image, ``scores`` (K,) in [0, 1], ``labels`` (K,) below ``num_classes`` and
    ``class_scores`` (K, num_classes) rows summing to 1. Images of two sizes go in together,
    as real data sets mix sizes. The model's mode and weights are left as they were.

    Raises:
        DetectorCheckError: Naming the first broken part of the contract.
    """
    images = [torch.rand(3, image_size, image_size), torch.rand(3, image_size // 2, image_size)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 20.0, 24.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    try:
        model.train()
        losses = model(images, targets)
        if not isinstance(losses, dict) or not losses:
            raise DetectorCheckError(f"train mode must return a dict of losses, got {losses!r}")
        total = sum(losses.values())
        if not torch.isfinite(total).all() or total.dim() != 0:
            raise DetectorCheckError(f"losses must be finite scalars, got {losses}")
        total.backward()
        model.eval()
        with torch.no_grad():
            outputs = model(images)
        if not isinstance(outputs, list) or len(outputs) != len(images):
            raise DetectorCheckError("eval mode must return one dict per image")
        for image, found in zip(images, outputs, strict=True):
            missing = {"boxes", "scores", "labels", "class_scores"} - set(found)
            if missing:
                raise DetectorCheckError(f"detections lack {sorted(missing)}")
            k = len(found["scores"])
            height, width = image.shape[-2:]
            boxes, rows = found["boxes"], found["class_scores"]
            if boxes.shape != (k, 4) or rows.shape != (k, num_classes):
                raise DetectorCheckError(
                    f"{k} detections need boxes (K, 4) and class_scores (K, {num_classes}), got "
                    f"{tuple(boxes.shape)} and {tuple(rows.shape)}"
                )
            inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width)
            if not bool((inside & (boxes[:, 3] <= height)).all()):
                raise DetectorCheckError("boxes must lie inside their image")
            if k and not torch.allclose(rows.sum(dim=1), torch.ones(k), atol=1e-3):
                raise DetectorCheckError("class_scores rows must sum to 1")
            if k and not (((found["scores"] >= 0) & (found["scores"] <= 1)).all()):
                raise DetectorCheckError("scores must lie in [0, 1]")
            if k and int(found["labels"].max()) >= num_classes:
                raise DetectorCheckError(f"labels must be below {num_classes}")
    except DetectorCheckError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a user's model is reported as one
        raise DetectorCheckError(f"the detector failed: {type(err).__name__}: {err}") from err
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def capture_embedding_inputs(model: nn.Module, into: dict[str, Any]) -> None:
    """Hooks keeping, at every forward pass, the deepest backbone map and each image's size.

    Read back with :func:`pooled_embeddings` after each pass: one (N, C) embedding per image
    from the same forward pass that found its boxes, for cold starts and diverse batches.

    The deepest map is the feature pyramid's input where the backbone has one (``fpn``: the
    pretrained layers' own features), else the backbone's last output level. The sizes are
    those the detector's transform gave the images, to pool over each image's own area.
    """
    backbone = model.backbone
    fpn = getattr(backbone, "fpn", None)
    if fpn is not None:
        fpn.register_forward_hook(lambda _m, inputs, _out: into.update(deep=_deepest(inputs[0])))
    else:
        backbone.register_forward_hook(lambda _m, _inputs, out: into.update(deep=_deepest(out)))
    model.transform.register_forward_hook(
        lambda _m, _inputs, out: into.update(sizes=list(out[0].image_sizes), padded=out[0].tensors)
    )


def _deepest(levels: Any) -> torch.Tensor:
    return list(levels.values())[-1] if isinstance(levels, dict) else levels


def pooled_embeddings(captured: dict[str, Any]) -> np.ndarray:
    """(N, C) means of the deepest map over each image's own area (the padding left out)."""
    deep, padded = captured["deep"], captured["padded"]
    rows = []
    for k, (h, w) in enumerate(captured["sizes"]):
        fh = max(1, round(deep.shape[-2] * h / padded.shape[-2]))
        fw = max(1, round(deep.shape[-1] * w / padded.shape[-1]))
        rows.append(deep[k, :, :fh, :fw].float().mean(dim=(1, 2)))
    return torch.stack(rows).cpu().numpy().astype(np.float32)
