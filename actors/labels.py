"""The rules a batch of labels must pass, shared by the ledger (HTTP side) and the trainer.

A batch is judged as a whole: one bad record rejects all of it, so a client never has to
guess which half of a batch was kept.

Example:
    >>> known = {"a": 1}
    >>> check_batch([{"id": "a", "label": 1}, {"id": "b", "label": 0}], num_classes=3,
    ...             known=known.get)
    Checked(fresh={'b': 0}, changed={}, duplicates=1)
    >>> check_batch([{"id": "a", "label": 2}], num_classes=3, known=known.get)
    Traceback (most recent call last):
    ...
    activestream.actors.labels.LabelConflict: record 0: id 'a' is already labeled 1, got 2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class LabelError(ValueError):
    """A label batch was rejected as a whole; nothing from it was accepted."""


class UnknownId(LabelError):
    """A label names an id that is not in the pool."""


class LabelConflict(LabelError):
    """An id already labeled got a different label; the first answer stands."""


@dataclass(frozen=True)
class AddResult:
    """Outcome of one ``add_labels`` call.

    Attributes:
        accepted: New labels and relabels kept.
        duplicates: Records repeating an answer already held (idempotent retries).
        trainer_ok: False when the trainer could not be reached in time; the labels are
            durable anyway and reach it when it is back.
    """

    accepted: int
    duplicates: int
    trainer_ok: bool = True


@dataclass(frozen=True)
class Checked:
    """A batch that passed :func:`check_batch`: what to add, what to change, what repeats."""

    fresh: dict[str, int]
    changed: dict[str, int]
    duplicates: int


def check_batch(
    records: Iterable[Any],
    *,
    num_classes: int,
    known: Callable[[str], int | None],
    relabel: bool = False,
) -> Checked:
    """Validate ``{"id", "label"}`` records against the labels already held.

    A repeated (id, label) is a duplicate. The same id with another label raises
    :class:`LabelConflict` (the first answer stands) unless ``relabel`` is set, which replaces
    it: an annotator's undo. Ids are not looked up in the pool here; callers check that.

    Args:
        records: The batch, in request order.
        num_classes: Labels must lie in ``0..num_classes - 1``.
        known: The label held for an id, or None.
        relabel: Replace held labels instead of rejecting a different answer.

    Raises:
        LabelError: Naming the first bad record; nothing of the batch is to be kept.
    """
    fresh: dict[str, int] = {}
    changed: dict[str, int] = {}
    duplicates = 0
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or "id" not in rec or "label" not in rec:
            raise LabelError(f"record {i}: expected an object with 'id' and 'label'")
        item_id, label = rec["id"], rec["label"]
        if not isinstance(item_id, str):
            raise LabelError(f"record {i}: id must be a string, got {item_id!r}")
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise LabelError(f"record {i}: label must be an integer, got {label!r}")
        label = int(label)
        if not 0 <= label < num_classes:
            raise LabelError(
                f"record {i}: label {label} outside the class range 0..{num_classes - 1}"
            )
        held = fresh.get(item_id, changed.get(item_id))
        if held is None:
            held = known(item_id)
        if held is not None and held != label and relabel and item_id not in fresh:
            changed[item_id] = label
            continue
        if held is not None:
            if held != label:
                raise LabelConflict(
                    f"record {i}: id {item_id!r} is already labeled {held}, got {label}"
                )
            duplicates += 1
            continue
        fresh[item_id] = label
    return Checked(fresh, changed, duplicates)


class ClassLabels:
    """What a class label is for one pool: an index checked against its classes, logged as is.

    The ledger is written against this shape (``check``, ``to_log``, ``from_log``,
    ``queue_label``), so another task plugs in its own label kind (the detection task's box
    labels) without a second ledger.

    Args:
        items: The pool: its classes, and which ids it holds.

    Example:
        >>> import tempfile
        >>> from activestream.actors.items import ItemStore
        >>> from activestream.sources.digits import write_digits_shards
        >>> pool, _ = write_digits_shards(tempfile.mkdtemp(), shards=1)
        >>> kind = ClassLabels(ItemStore(pool))
        >>> first = ItemStore(pool).ids()[0]
        >>> kind.check([{"id": first, "label": 3}], known={}.get).fresh == {first: 3}
        True
        >>> kind.to_log(first, 3, time=0)["label"], kind.from_log({"id": first, "label": 3})
        (3, 3)
    """

    def __init__(self, items: Any) -> None:
        self.items = items

    def check(
        self, records: Iterable[Any], *, known: Callable[[str], Any], relabel: bool = False
    ) -> Checked:
        """Judge a batch as a whole against the answers held (``known``) and the pool.

        Raises:
            UnknownId: An id the pool does not hold.
            LabelError: Naming the first bad record; nothing is to be kept.
        """
        checked = check_batch(
            records, num_classes=len(self.items.classes), known=known, relabel=relabel
        )
        unknown = self.items.missing(list(checked.fresh))
        if unknown:
            raise UnknownId(f"unknown id {unknown[0]!r}: not in the pool")
        return checked

    @staticmethod
    def to_log(item_id: str, answer: int, **fields: Any) -> dict[str, Any]:
        """The label-log record of an answer: ``{"id", "label", ...fields}``."""
        return {"id": item_id, "label": answer, **fields}

    @staticmethod
    def from_log(record: Mapping[str, Any]) -> int:
        """The answer a label-log record holds."""
        return int(record["label"])

    @staticmethod
    def queue_label(answer: int) -> int | None:
        """What the query queue learns of an answer (``auto`` judges its arms by the class)."""
        return answer
