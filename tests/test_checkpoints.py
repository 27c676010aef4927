import pytest

from activestream.actors.checkpoints import CheckpointStore
from activestream.actors.labellog import LabelLog


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    for version in range(5):
        store.save(version, bytes([version]))
    assert store.versions() == [3, 4]
    assert store.latest() == b"\x04"


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(1, b"good")
    store.save(2, b"torn")

    def accept(blob):
        if blob == b"torn":
            raise ValueError("cannot unpickle")
        return blob

    assert store.latest(accept=accept) == b"good"


def test_no_checkpoint_gives_none(tmp_path):
    assert CheckpointStore(str(tmp_path / "empty")).latest() is None


def test_a_leftover_temporary_file_is_not_a_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(1, b"one")
    (tmp_path / "ckpt-000000000002.pt.tmp").write_bytes(b"half")
    assert store.versions() == [1]


@pytest.mark.slow
def test_checkpoints_and_the_label_log_live_on_s3(s3_server, s3_bucket):
    store = CheckpointStore(f"s3://{s3_bucket}/state/checkpoints", s3_server, keep=2)
    for version in (3, 7, 9):
        store.save(version, f"v{version}".encode())
    again = CheckpointStore(f"s3://{s3_bucket}/state/checkpoints", s3_server)
    assert (again.versions(), again.latest()) == ([7, 9], b"v9")
    log = LabelLog(f"s3://{s3_bucket}/state/labels", s3_server)
    log.append([{"id": "a", "label": 1}])
    log.append([{"id": "b", "label": 2, "relabel": True}])
    reopened = LabelLog(f"s3://{s3_bucket}/state/labels", s3_server)
    assert reopened.offset == 2
    assert [(r["id"], r.get("relabel", False)) for r in reopened.read()] == [
        ("a", False),
        ("b", True),
    ]
