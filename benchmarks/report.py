"""The README's real-workload figures, rendered from the committed JSON of each benchmark.

    python -m activestream.benchmarks.report   # rewrites the README section between markers

Each figure comes from the JSON its benchmark wrote under ``docs/``; ``tests/test_generated_docs``
fails when the README and the JSON disagree, so no number in that section is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- real_workloads:begin -->", "<!-- real_workloads:end -->"
SOURCES = {
    "study": "docs/fashion-mnist/study.json",
    "rescore": "docs/head-rescore/head_rescore.json",
    "jpeg": "docs/encoded-throughput/encoded_throughput.json",
    "scale": "docs/scale/pool_scale.json",
}


def load(root: Path = ROOT) -> dict[str, Any]:
    """Every source JSON, by short name."""
    return {name: json.loads((root / path).read_text()) for name, path in SOURCES.items()}


def render(data: dict[str, Any]) -> str:
    """The README section: one line per figure, each naming its page."""
    study, rescore, jpeg, scale = data["study"], data["rescore"], data["jpeg"], data["scale"]
    lines = ["| figure | measured | page |", "|---|---|---|"]
    for setup, r in study["setups"].items():
        budget = r["config"]["budget"]
        for sampler in ("margin", "entropy"):
            need = r["labels_to_reach_random_final"].get(sampler)
            share = "not reached" if need is None else f"{need} labels ({need / budget:.0%})"
            lines.append(
                f"| Fashion-MNIST, {setup}, {sampler}: labels to reach random's final accuracy "
                f"({r['random_final_accuracy']:.3f}) of {budget} | {share} | "
                "[fashion-mnist](docs/fashion-mnist.md) |"
            )
    ray_pass = next(r for r in rescore["results"] if r["name"] == "ray_pass")
    lines.append(
        f"| `train: head`, rescoring {ray_pass['rows']:,} images vs cached features (Ray pass) | "
        f"{ray_pass['ratio']:.1f}x faster | [head-rescore](docs/head-rescore.md) |"
    )
    tp = jpeg["results"][0]
    lines.append(
        f"| JPEG scoring, warm scorer pool vs best DataLoader | {tp['ratio']:.2f}x "
        f"({tp['activestream_rows_per_s']:,.0f} vs {tp['dataloader_rows_per_s']:,.0f} rows/s) | "
        "[encoded-throughput](docs/encoded-throughput.md) |"
    )
    rows = {r["rows"]: r for r in scale["results"]}
    big, mid = rows[max(rows)], rows[100_000] if 100_000 in rows else rows[min(rows)]
    lines.append(
        f"| One round over {big['rows']:,} rows vs {mid['rows']:,}: time per row, id index | "
        f"{(big['seconds'] / big['rows']) / (mid['seconds'] / mid['rows']):.2f}x, "
        f"{big['index_bytes_per_item']:.0f} bytes/item | [pool-scale](docs/pool-scale.md) |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + BEGIN + "\n" + render(load()) + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
