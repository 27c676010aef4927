"""Weight broadcast: one ``ray.put`` per version, a cheap version number for every scorer.

The trainer puts each new state dict into the object store once and publishes a small
:class:`WeightsVersion` on a :class:`WeightsBoard`. Scorers ask the board for the latest version
number before each batch (a few bytes) and fetch the weights only when the number changed, so
the cost of a new version is one put plus one zero-copy read per node, whatever the pool size.

Example:
    >>> board = WeightsBoard()
    >>> board.latest_version()
    -1
    >>> board.publish(WeightsVersion(version=3, labels_seen=48, refs=[]))
    True
    >>> board.publish(WeightsVersion(version=2, labels_seen=32, refs=[]))
    False
    >>> board.latest_version()
    3
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: How long one long poll on the board waits before it answers None (scorers ask again).
LISTEN_SECONDS = 10.0


@dataclass(frozen=True)
class WeightsVersion:
    """A published model version.

    Attributes:
        version: Monotonic version number; 0 is the initial random model.
        labels_seen: Labels the trainer had trained on when it produced this version.
        refs: ``[ObjectRef]`` of the state dict as numpy arrays. Wrapped in a list because Ray
            resolves top-level ObjectRef arguments: inside a list the reference travels as a
            reference, and only the scorers that need it dereference it.
        published_at: ``time.time()`` at publication, for label-to-scorer latency.
    """

    version: int
    labels_seen: int
    refs: list[Any] = field(default_factory=list)
    published_at: float = 0.0


class WeightsBoard:
    """Holds the newest :class:`WeightsVersion`; thread-safe so it can serve many scorers.

    Args:
        recover: Returns the newest version published before this board started (the
            trainer's), or None. A restarted board calls it in a background thread, so readers
            see the current version again within moments instead of -1 until the next update.
        retry_seconds: How long ``recover`` is retried while it fails (the trainer restarting).
    """

    def __init__(
        self,
        recover: Callable[[], WeightsVersion | None] | None = None,
        retry_seconds: float = 60.0,
    ) -> None:
        self._lock = threading.Condition()
        self._latest: WeightsVersion | None = None
        self.recover_error: str | None = None
        if recover is not None:
            threading.Thread(
                target=self._recover, args=(recover, retry_seconds), name="recover", daemon=True
            ).start()

    def _recover(self, recover: Callable[[], WeightsVersion | None], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.latest_version() < 0 and time.monotonic() < deadline:
            try:
                weights = recover()
            except Exception as err:  # noqa: BLE001 - the trainer may be restarting too
                self.recover_error = f"{type(err).__name__}: {err}"
                time.sleep(0.2)
                continue
            if weights is not None:
                self.publish(weights)
            return

    def publish(self, weights: WeightsVersion) -> bool:
        """Make ``weights`` the latest unless a newer version is already there."""
        with self._lock:
            if self._latest is not None and weights.version <= self._latest.version:
                return False
            self._latest = weights
            self._lock.notify_all()
            return True

    def listen(self, after: int, timeout: float) -> WeightsVersion | None:
        """The newest version once it is past ``after``, or None after ``timeout`` seconds.

        A long poll, like Ray Serve's ``LongPollHost.listen_for_change``: the board is the one
        authority on versions, and a reader (the loop, each scorer) blocks here until something
        newer exists and gets its reference in the same answer, instead of polling. Run the
        board with ``max_concurrency`` above the number of listeners.

        >>> board = WeightsBoard()
        >>> board.listen(-1, timeout=0.01) is None
        True
        >>> _ = board.publish(WeightsVersion(version=3, labels_seen=48))
        >>> board.listen(-1, timeout=0.01).version, board.listen(3, timeout=0.01)
        (3, None)
        """
        with self._lock:
            self._lock.wait_for(
                lambda: self._latest is not None and self._latest.version > after, timeout
            )
            latest = self._latest
        return latest if latest is not None and latest.version > after else None

    def latest_version(self) -> int:
        """The newest version number, or -1 before the first publication."""
        with self._lock:
            return -1 if self._latest is None else self._latest.version

    def latest(self) -> WeightsVersion | None:
        """The newest version with its reference, or None before the first publication."""
        with self._lock:
            return self._latest


def state_to_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Copy a module's state dict to CPU numpy arrays, which Ray stores and reads zero-copy."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_state(module: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Load numpy arrays (possibly read-only views into the object store) into ``module``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffers: load_state_dict copies
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    module.load_state_dict(tensors)
