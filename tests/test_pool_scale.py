"""The pool-scale page shows the committed measurements, and its ratios are computed right."""

import json
from pathlib import Path

import pytest

from activestream.benchmarks import pool_scale

ROOT = Path(__file__).resolve().parent.parent


def _data(rows_seconds_pss):
    return {
        "results": [
            {
                "rows": rows,
                "seconds": seconds,
                "rows_per_second": rows / seconds,
                "peak_pss_mb": pss,
                "index_bytes_per_item": 29.0,
                "shards": rows // 10,
            }
            for rows, seconds, pss in rows_seconds_pss
        ]
    }


def test_the_committed_page_shows_the_committed_json():
    data = json.loads((ROOT / "docs/scale/pool_scale.json").read_text())
    text = (ROOT / "docs/pool-scale.md").read_text()
    assert pool_scale.section(text) == pool_scale.render_markdown(data)


def test_the_committed_json_has_every_figure_of_every_size():
    data = json.loads((ROOT / "docs/scale/pool_scale.json").read_text())
    assert {"machine", "settings", "results"} <= data.keys()
    assert data["settings"]["rows_per_shard"] > 0
    assert {"object_store_mb", "read_concurrency"} <= data["settings"].keys()
    for row in data["results"]:
        assert set(row) == {
            "rows",
            "seconds",
            "rows_per_second",
            "peak_pss_mb",
            "index_bytes_per_item",
            "shards",
        }
        assert row["shards"] == -(-row["rows"] // data["settings"]["rows_per_shard"])


def test_the_ratios_compare_the_largest_pool_with_100k_rows():
    data = _data([(100, 2.0, 300.0), (100_000, 50.0, 400.0), (1_000_000, 600.0, 500.0)])
    q = pool_scale.ratios(data["results"])
    assert q["largest_rows"] == 1_000_000 and q["reference_rows"] == 100_000
    assert q["peak_pss"] == pytest.approx(1.25)
    assert q["time_per_row"] == pytest.approx((600.0 / 1_000_000) / (50.0 / 100_000))  # 1.2
    text = pool_scale.render_markdown(data)
    assert "1,000,000 rows against 100,000 rows: peak PSS 1.25x, time per row 1.20x" in text
    assert "| 1,000,000 | 100,000 | 600.0 | 1,667 | 500 | 29.0 |" in text.splitlines()


def test_without_100k_rows_the_smallest_pool_is_the_reference():
    q = pool_scale.ratios(_data([(2_000, 10.0, 100.0), (8_000, 20.0, 300.0)])["results"])
    assert q["reference_rows"] == 2_000
    assert q["peak_pss"] == pytest.approx(3.0)
    assert q["time_per_row"] == pytest.approx(0.5)


def test_rendering_replaces_only_the_marked_section(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(f"# Title\n\nbefore\n\n{pool_scale.BEGIN}\nold\n{pool_scale.END}\n\nafter\n")
    data = _data([(1_000, 1.0, 10.0)])
    pool_scale.write_doc(data, doc)
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert pool_scale.section(text) == pool_scale.render_markdown(data)
    assert "old" not in text


def test_a_missing_page_is_created_with_the_markers(tmp_path):
    doc = tmp_path / "docs" / "new.md"
    data = _data([(1_000, 1.0, 10.0), (10_000, 10.0, 10.0)])
    pool_scale.write_doc(data, doc)
    assert pool_scale.section(doc.read_text()) == pool_scale.render_markdown(data)


def test_the_session_totals_and_the_load_come_from_the_per_process_records():
    data = _data([(10_000, 1.0, 100.0), (100_000, 10.0, 900.0), (1_000_000, 100.0, 500.0)])
    data["machine"] = {"cores": 2}
    data["by_process"] = [
        {"rows": n, "peak_total_pss_mb": total, "load_1m_before": 1.0, "load_1m_after": 2.5}
        for n, total in ((1_000_000, 4_400.0), (10_000, 2_000.0), (100_000, 4_000.0))
    ]
    text = pool_scale.render_markdown(data)
    assert (
        "Session total PSS at the peak, baseline included, for 10,000 / 100,000 / 1,000,000 "
        "rows: 2,000 / 4,000 / 4,400 MB (1,000,000 against 100,000 rows: 1.10x)."
    ) in text
    assert "(2 cores): 1.0 -> 2.5, 1.0 -> 2.5, 1.0 -> 2.5." in text
