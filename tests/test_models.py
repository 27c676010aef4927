import pytest
import torch

from actors.models import build_model, model_names


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        ("digits_cnn", (1, 8, 8)),
        ("digits_cnn", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
        ("resnet18", (1, 8, 8)),
        ("mobilenet_v3_small", (3, 32, 32)),
    ],
)
def test_every_model_maps_its_input_shape_to_class_logits(arch, shape):
    net = build_model(arch, shape=shape, num_classes=7).eval()
    with torch.inference_mode():
        out = net(torch.rand(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_same_seed_gives_the_same_initial_weights():
    a = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=3).state_dict()
    b = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=3).state_dict()
    c = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_building_a_model_leaves_the_global_torch_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=9)
    assert torch.equal(torch.rand(1), expected)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("vgg", shape=(3, 32, 32), num_classes=10)
    assert "digits_cnn" in model_names()
