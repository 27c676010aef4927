"""Classifiers by name: the registry, the built-in architectures and the model contract.

The registry imports no torch until a model is built; :mod:`~activestream.models.builtin` holds
the three built-in architectures and :func:`~activestream.models.checks.check_model` runs the
contract every factory must keep.
"""

from activestream.models.registry import (
    ModelFactory,
    Shape,
    build_model,
    model_names,
    register_model,
    resolve,
)


def __getattr__(name: str) -> object:
    # check_model needs torch; the registry must not, so it is imported on first use.
    if name == "check_model":
        from activestream.models.checks import check_model

        return check_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ModelFactory",
    "Shape",
    "build_model",
    "check_model",
    "model_names",
    "register_model",
    "resolve",
]
