import json

import pytest

from activestream.actors.labellog import LabelLog


def records(n, start=0):
    return [{"id": f"i{k}", "label": k % 10} for k in range(start, start + n)]


def test_appended_records_survive_reopening(tmp_path):
    log = LabelLog(str(tmp_path))
    assert log.append(records(3)) == 3
    assert log.append(records(2, start=3), annotator="ann") == 5
    log.close()
    again = LabelLog(str(tmp_path))
    assert again.offset == 5
    got = list(again.read())
    assert [r["id"] for r in got] == [f"i{k}" for k in range(5)]
    assert got[4]["annotator"] == "ann"
    assert isinstance(got[0]["time"], float)


def test_reading_from_an_offset_skips_earlier_records(tmp_path):
    log = LabelLog(str(tmp_path), segment_records=4)
    for k in range(0, 10, 2):
        log.append(records(2, start=k))
    assert [r["id"] for r in log.read(from_offset=7)] == ["i7", "i8", "i9"]
    assert list(log.read(from_offset=10)) == []


def test_segments_rotate_and_are_named_by_their_first_offset(tmp_path):
    log = LabelLog(str(tmp_path), segment_records=4)
    for k in range(10):
        log.append(records(1, start=k))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["seg-000000000000.jsonl", "seg-000000000004.jsonl", "seg-000000000008.jsonl"]


def test_a_torn_last_line_is_dropped_and_appends_continue(tmp_path):
    log = LabelLog(str(tmp_path))
    log.append(records(2))
    log.close()
    segment = next(tmp_path.iterdir())
    with open(segment, "ab") as fh:
        fh.write(b'{"id": "half-writ')
    again = LabelLog(str(tmp_path))
    assert again.offset == 2
    again.append(records(1, start=2))
    lines = segment.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["i0", "i1", "i2"]


def test_an_empty_append_changes_nothing(tmp_path):
    log = LabelLog(str(tmp_path))
    assert log.append([]) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_log_works_on_s3(s3_server, s3_bucket):
    uri = f"s3://{s3_bucket}/labels"
    log = LabelLog(uri, s3_server)
    log.append(records(3))
    log.append(records(2, start=3))
    again = LabelLog(uri, s3_server)
    assert again.offset == 5
    assert [r["id"] for r in again.read(from_offset=2)] == ["i2", "i3", "i4"]
