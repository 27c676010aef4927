"""activestream: online active learning as a streaming pipeline on Ray.

The public API is small; everything else lives in the subpackages (``activestream.samplers``,
``activestream.actors``, ``activestream.pipelines``, ``activestream.sources``,
``activestream.models``, ``activestream.deploy``). Names are imported on first use, so
``import activestream`` stays cheap and starts neither Ray nor torch.

Example:
    >>> import activestream
    >>> cfg = activestream.Config().with_overrides({"sampling.sampler": "margin"})
    >>> score = activestream.get_sampler(cfg.sampling.sampler)
    >>> score([[0.5, 0.5], [0.9, 0.1]]).round(2).tolist()
    [1.0, 0.2]
    >>> "digits_cnn" in activestream.model_names()
    True
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("activestream")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

#: Public name -> "module:attribute" it comes from.
_EXPORTS = {
    "Config": "activestream.config:Config",
    "load_config": "activestream.config:load_config",
    "ActivestreamError": "activestream.errors:ActivestreamError",
    "ConfigError": "activestream.errors:ConfigError",
    "DataError": "activestream.errors:DataError",
    "ActiveLoop": "activestream.pipelines.loop:ActiveLoop",
    "start_loop_actor": "activestream.pipelines.loop:start_loop_actor",
    "simulate": "activestream.pipelines.simulate:simulate",
    "get_sampler": "activestream.samplers.registry:get",
    "sampler_names": "activestream.samplers.registry:names",
    "register_sampler": "activestream.samplers.registry:register",
    "check_sampler": "activestream.samplers.checks:check_sampler",
    "build_model": "activestream.models.registry:build_model",
    "model_names": "activestream.models.registry:model_names",
    "register_model": "activestream.models.registry:register_model",
    "check_model": "activestream.models.checks:check_model",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> object:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'activestream' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
