import pytest
import torch
from torch import nn

from activestream.models import build_model, check_model, model_names, register_model
from activestream.models.checks import ModelCheckError


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


# -- the contract check users run on their own models -----------------------------------------


HEAVY = {"efficientnet_lite0"}  # pretrained: ~10 s of CPU each, covered in test_pretrained


@pytest.mark.parametrize(
    "arch",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in model_names()],
)
def test_every_registered_model_passes_the_contract_check(arch):
    check_model(arch, shape=(3, 32, 32), num_classes=5)


def test_the_contract_check_accepts_a_plain_user_factory():
    def linear(num_classes, *, shape, dropout):
        c, h, w = shape
        return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, num_classes))

    check_model(linear, shape=(1, 8, 8), num_classes=10)


def test_the_contract_check_catches_a_model_that_ignores_the_class_count():
    def fixed_ten(num_classes, dropout=0.25):
        return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(64, 10))

    with pytest.raises(ModelCheckError, match="last nn.Linear has 10 outputs, not 3"):
        check_model(fixed_ten, shape=(1, 8, 8), num_classes=3)


def test_the_contract_check_catches_a_model_without_dropout_when_asked_for_some():
    def no_dropout(num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    with pytest.raises(ModelCheckError, match="no dropout layer"):
        check_model(no_dropout, shape=(1, 8, 8), num_classes=3, dropout=0.5)
    check_model(no_dropout, shape=(1, 8, 8), num_classes=3, dropout=0.0)


def test_the_contract_check_catches_weights_that_do_not_survive_a_state_dict():
    class Unregistered(nn.Module):
        built = 0

        def __init__(self, num_classes):
            super().__init__()
            Unregistered.built += 1
            self.fc = nn.Linear(64, num_classes)
            # A plain tensor attribute, not a buffer: it never reaches the state dict.
            self.offset = torch.full((num_classes,), float(Unregistered.built))

        def forward(self, x):
            return self.fc(x.flatten(1)) + self.offset

    with pytest.raises(ModelCheckError, match="state dict gives other logits"):
        check_model(
            lambda num_classes: Unregistered(num_classes), shape=(1, 8, 8), num_classes=3, dropout=0
        )


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    from activestream.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_a_registered_import_string_builds_like_a_built_in(scratch_registry):
    register_model("test-tiny-cnn", "activestream.models.builtin:digits_cnn")
    net = build_model("test-tiny-cnn", shape=(1, 8, 8), num_classes=4)
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-tiny-cnn", "activestream.models.builtin:digits_cnn")


def test_an_import_string_that_does_not_import_names_the_target(scratch_registry):
    register_model("test-missing", "no_such_package.models:net")
    with pytest.raises(ValueError, match="cannot import model factory 'no_such_package"):
        build_model("test-missing", shape=(1, 8, 8), num_classes=4)


def test_a_model_with_lazy_layers_is_built_with_every_weight_materialized():
    from torch.nn.parameter import is_lazy
    from user_plugins import lazy_cnn

    net = build_model(lazy_cnn, shape=(1, 8, 8), num_classes=3, seed=4)
    assert not any(is_lazy(p) for p in net.parameters())
    twin = build_model(lazy_cnn, shape=(1, 8, 8), num_classes=3, seed=4)
    for a, b in zip(net.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_contract_check_accepts_a_model_with_lazy_layers():
    check_model("user_plugins:lazy_cnn", shape=(1, 8, 8), num_classes=3)


def test_a_lazy_model_that_cannot_take_the_input_shape_names_the_dry_forward():
    def broken(num_classes):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(5), nn.Linear(7, num_classes))

    with pytest.raises(ValueError, match="dry forward at shape"):
        build_model(broken, shape=(1, 8, 8), num_classes=3)
