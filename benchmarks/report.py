"""``activestream bench report``: every generated table in README and docs, from committed JSON.

    activestream bench report            # rewrite every section below from its JSON
    python -m activestream.benchmarks.report

:func:`sections` lists each generated part of a page: the file, its two markers and the
function that renders it from the JSON a benchmark committed under ``docs/``. ``write_all``
rewrites them; ``tests/test_generated_docs`` renders every one and fails when a committed page
and its JSON disagree, so no number in those parts is typed by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activestream.pipelines.curves import area_under_curve, labels_to_reach

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "fashion_cnn": "docs/study/fashion_cnn.json",
    "fashion_head": "docs/study/fashion_head.json",
    "rescore": "docs/head-rescore/head_rescore.json",
    "jpeg": "docs/encoded-throughput/encoded_throughput.json",
    "scale": "docs/scale/pool_scale.json",
}


def load(root: Path = ROOT) -> dict[str, Any]:
    """Every source JSON, by short name."""
    return {name: json.loads((root / path).read_text()) for name, path in SOURCES.items()}


def render(data: dict[str, Any]) -> str:
    """The README section: one line per figure, each naming its page."""
    rescore, jpeg, scale = data["rescore"], data["jpeg"], data["scale"]
    lines = ["| figure | measured | page |", "|---|---|---|"]
    for key, setup in (
        ("fashion_cnn", "CNN from scratch, pretrained embedding for selection"),
        ("fashion_head", "pretrained head"),
    ):
        r = data[key]
        budget = r["config"]["budget"]
        for sampler in ("margin", "auto"):
            need = r["compare"][sampler]["labels_to_random_final"]
            share = "not reached" if need is None else f"{need} labels ({need / budget:.0%})"
            lines.append(
                f"| Fashion-MNIST, {setup}, {sampler}: labels to reach random's final accuracy "
                f"({r['random_final_accuracy']:.3f}) of {budget} | {share} | "
                "[study](docs/study.md) |"
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


LEARNING_SOURCES = {
    "digits": "docs/study/digits.json",
    "fashion_head": "docs/study/fashion_head.json",
    "fashion_cnn": "docs/study/fashion_cnn.json",
    "gratings": "docs/study/gratings.json",
    "stream": "docs/study/stream.json",
    "fashion_head_parts": "docs/study/fashion_head_parts.json",
    "digits_parts": "docs/study/digits_parts.json",
    "fashion_cnn_parts": "docs/study/fashion_cnn_parts.json",
    "knobs": "docs/knobs/knobs.json",
    "real_loop": "docs/real-loop/real_loop.json",
}
#: Rows of the study's variant parts shown in the README: the defaults, and what more buys.
PART_ROWS = {
    "fashion_head_parts": (
        "Fashion-MNIST, pretrained EfficientNet-Lite0 head",
        ["margin, random cold start", "margin, maxherding", "margin, maxherding, pseudo-labels"],
    ),
    "digits_parts": (
        "Digits, CNN from scratch (cold start on the untrained model's own embedding)",
        ["margin, random cold start", "margin, maxherding"],
    ),
    "fashion_cnn_parts": (
        "Fashion-MNIST, CNN from scratch",
        ["margin, own embedding", "margin, pretrained embedding"],
    ),
}


def load_learning(root: Path = ROOT) -> dict[str, Any]:
    """The study's, the knob table's and the real loop's JSON, by short name."""
    return {n: json.loads((root / p).read_text()) for n, p in LEARNING_SOURCES.items()}


def _versus_random(c: dict[str, Any], rnd: dict[str, Any], budget: int) -> str:
    need = c["labels_to_random_final"]
    share = "not reached" if need is None else f"{need} of {budget} labels ({need / budget:.0%})"
    above = c["stays_above_from"]
    if above is None:
        where = "ends below random"
    elif above == 0:
        where = "never below random"
    else:
        where = f"never below random after {above} labels"
    return f"{share}; AUC {c['auc']:.3f} vs random's {rnd['auc']:.3f}; {where}"


def render_learning(data: dict[str, Any]) -> str:
    """The README's active-learning figures: labels saved, knobs, the real loop."""
    lines = [
        "| figure | sampler | labels to reach random's final accuracy; area under the curve "
        "| page |",
        "|---|---|---|---|",
    ]
    setups = [
        ("digits", "Digits, CNN from scratch"),
        ("fashion_head", "Fashion-MNIST, pretrained EfficientNet-Lite0 head"),
        ("fashion_cnn", "Fashion-MNIST, CNN from scratch, pretrained embedding for selection"),
        ("gratings", "Synthetic gratings, CNN from scratch"),
        ("stream", "Digits as a stream (ask or skip)"),
    ]
    for key, title in setups:
        r = data[key]
        table, budget = r["compare"], r["config"]["budget"]
        default = "variable_uncertainty" if key == "stream" else "margin"
        for sampler in (default, "auto"):
            lines.append(
                f"| {title}, {r['seeds']} seeds | {sampler} | "
                f"{_versus_random(table[sampler], table['random'], budget)} | "
                "[study](docs/study.md) |"
            )
    for key, (title, names) in PART_ROWS.items():
        r = data[key]
        budget, baseline = r["config"]["budget"], r["baseline"]
        for name in names:
            c = r["compare"][name]
            need = c["labels_to_random_final"]
            share = "not reached" if need is None else f"{need} of {budget} ({need / budget:.0%})"
            lines.append(
                f"| {title} ({r['pool_rows']:,} pool), {r['config']['seeds']} seeds | {name} | "
                f"{share} labels to reach "
                f"*{baseline}*'s final accuracy; AUC {c['auc']:.3f} vs "
                f"{r['compare'][baseline]['auc']:.3f}; worst gap {c['worst_gap_se']:+.1f} SE | "
                "[study](docs/study.md) |"
            )
        if "ceiling" in r:
            lines.append(
                f"| {title}: the embedding's ceiling | fitted head on all "
                f"{r['ceiling']['labels']:,} labels | {r['ceiling']['linear_probe_all_labels']:.3f}"
                f" accuracy (10-NN: {r['ceiling']['knn10_all_labels']:.3f}) | "
                "[study](docs/study.md) |"
            )
    rows = {row["name"]: row for row in data["knobs"]["rows"]}
    for name in ("old defaults", "new defaults", "reference"):
        m, rnd = rows[name]["compare"]["margin"], rows[name]["compare"]["random"]
        lines.append(
            f"| Digits, {name} ({rows[name]['what']}) | margin | "
            f"{_versus_random(m, rnd, data['knobs']['budget'])} | "
            "[knobs](docs/knobs.md) |"
        )
    from activestream.benchmarks.real_loop import targets as real_loop_targets

    loop = data["real_loop"]
    _, target = real_loop_targets(loop)
    for name, v in loop["variants"].items():
        need = labels_to_reach(v["labels"], v["accuracy_mean"], target)
        reached = "not reached" if need is None else f"{need} of {loop['budget']} labels"
        auc = area_under_curve(v["labels"], v["accuracy_mean"])
        lines.append(
            f"| Real service over HTTP, digits, {name} | {v['sampler']} | {reached} "
            f"(the service's own random session's final, {target:.3f}); AUC {auc:.3f} | "
            "[real-loop](docs/real-loop.md) |"
        )
    return "\n".join(lines) + "\n"


BENCH = "docs/bench/bench.json"
GPU_BENCH = "docs/bench/gpu/bench.json"
GPU_COMMAND = "activestream bench --quick --out docs/bench/gpu"


@dataclass(frozen=True)
class Section:
    """One generated part of a page: ``file`` between ``<!-- key:begin/end -->``."""

    file: str
    key: str
    render: Callable[[Path], str]

    @property
    def begin(self) -> str:
        return f"<!-- {self.key}:begin -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.key}:end -->"

    def committed(self, root: Path = ROOT) -> str:
        """The section as it stands in the committed page."""
        text = (root / self.file).read_text()
        return text.split(self.begin, 1)[1].split(self.end, 1)[0].removeprefix("\n")

    def write(self, root: Path = ROOT, *, check: bool = False) -> bool:
        """Rewrite the section from its JSON (not when ``check``); whether the page differed."""
        page = root / self.file
        text = page.read_text()
        new = _replace(text, self.begin, self.end, self.render(root))
        if new != text and not check:
            page.write_text(new)
        return new != text


def _json(root: Path, path: str) -> dict[str, Any]:
    return json.loads((root / path).read_text())


def _gpu(root: Path) -> str:
    from activestream.benchmarks import headline

    if not (root / GPU_BENCH).exists():
        return (
            f"No GPU run is committed yet. On a GPU machine, `{GPU_COMMAND}` writes one JSON "
            f"(`{GPU_BENCH}`) and `activestream bench report` renders it here, unchanged "
            "otherwise.\n"
        )
    return headline.headline(_json(root, GPU_BENCH))


def provenance(root: Path = ROOT) -> str:
    """Where every published figure comes from: its JSON, commit, date, and whether it is fresh.

    "Changed since" counts the commits after the figures' own that touched the code they
    measure (``MEASURES``), so the table changes when measured code does, not with every
    commit; ``activestream bench report --stale`` says which files.
    """
    from activestream.benchmarks import freshness

    lines = [
        "| figures | JSON | measured at | on | commits since that changed its code | status |",
        "|---|---|---|---|---|---|",
    ]
    reasons = {(f.benchmark, f.source): why for f, why in freshness.stale(root)}
    for f in freshness.published(root):
        since = freshness.changes_since(f, root)
        why = reasons.get((f.benchmark, f.source))
        status = "fresh" if why is None else "stale" if since else why
        part = Path(f.source).stem if f.benchmark == "study" else None
        name = f"{f.benchmark}: {part}" if part else f.benchmark
        lines.append(
            f"| {name} | `{f.source}` | `{f.commit or 'none'}` | {f.when or '-'} | "
            f"{'-' if since is None else since} | {status} |"
        )
    fresh = sum(1 for f in freshness.published(root) if (f.benchmark, f.source) not in reasons)
    lines += ["", f"{fresh} of {len(lines) - 2} published sets of figures are fresh."]
    return "\n".join(lines) + "\n"


def _page(module: Any, slug: str, source: str) -> Callable[[Path], str]:
    return lambda root: module.render_markdown(_json(root, f"docs/{slug}/{source}"))


def sections() -> list[Section]:
    """Every generated section of README.md and docs/, with how to render it."""
    from activestream.benchmarks import (
        allocator,
        detection,
        detector_speed,
        encoded_throughput,
        head_rescore,
        headline,
        knobs,
        pool_scale,
        real_loop,
        study,
    )

    def bench(render: Callable[[dict[str, Any]], str]) -> Callable[[Path], str]:
        return lambda root: render(_json(root, BENCH))

    def study_page(root: Path) -> str:
        data, machine = study.load(root / "docs" / "study")
        return study.render_markdown(data, machine)

    return [
        Section("README.md", "provenance", provenance),
        Section("README.md", "bench", bench(headline.headline)),
        Section("README.md", "bench_gpu", _gpu),
        Section("README.md", "forgetting", bench(headline.forgetting)),
        Section("README.md", "faults", bench(headline.faults)),
        Section("README.md", "recovery", bench(headline.recovery)),
        Section("README.md", "startup", bench(headline.startup)),
        Section("README.md", "real_workloads", lambda root: render(load(root))),
        Section("README.md", "active_learning", lambda root: render_learning(load_learning(root))),
        Section("docs/bench.md", "bench_full", bench(headline.full)),
        Section("docs/scaling.md", "scaling", bench(headline.scaling)),
        Section("docs/study.md", "study", study_page),
        Section("docs/pool-scale.md", "pool_scale", _page(pool_scale, "scale", "pool_scale.json")),
        Section("docs/allocator.md", "allocator", _page(allocator, "allocator", "allocator.json")),
        Section("docs/knobs.md", "knobs", _page(knobs, "knobs", "knobs.json")),
        Section("docs/detection.md", "detection", _page(detection, "detection", "detection.json")),
        Section(
            "README.md",
            "detection",
            lambda root: detection.render_readme(_json(root, "docs/detection/detection.json")),
        ),
        Section(
            "docs/detector-speed.md",
            "detector_speed",
            _page(detector_speed, "detector-speed", "detector_speed.json"),
        ),
        Section(
            "README.md",
            "detector_speed",
            lambda root: detector_speed.render_readme(
                _json(root, "docs/detector-speed/detector_speed.json")
            ),
        ),
        Section("docs/real-loop.md", "real_loop", _page(real_loop, "real-loop", "real_loop.json")),
        Section(
            "docs/head-rescore.md",
            "head_rescore",
            _page(head_rescore, "head-rescore", "head_rescore.json"),
        ),
        Section(
            "docs/encoded-throughput.md",
            "encoded_throughput",
            _page(encoded_throughput, "encoded-throughput", "encoded_throughput.json"),
        ),
    ]


def _replace(text: str, begin: str, end: str, section: str) -> str:
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + section + end + rest.split(end, 1)[1]


def write_all(root: Path = ROOT, *, check: bool = False) -> list[str]:
    """Rewrite every generated section (only compare when ``check``); ``file:key`` of those
    that differed from their JSON."""
    return [f"{s.file}:{s.key}" for s in sections() if s.write(root, check=check)]


def check(root: Path = ROOT) -> list[str]:
    """Why the published pages do not stand for ``HEAD``, one line each; empty when they do.

    Two ways to fall behind: a generated section that differs from its JSON (rerun the report),
    and figures whose measured code changed after their JSON's commit (rerun the benchmark).
    """
    return [f"out of date: {key}" for key in write_all(root, check=True)] + stale_lines(root)


def stale_lines(root: Path = ROOT) -> list[str]:
    """Each published set of figures whose measured code changed after it was measured.

    Each line ends with the command that measures it again and, where its JSON recorded it,
    how long that took last time, so a rerun can be planned before it is started.
    """
    from activestream.benchmarks import freshness

    lines = []
    for f, why in freshness.stale(root):
        took = "" if f.seconds is None else f" (last run: {f.seconds / 60:.0f} min)"
        lines.append(f"stale: {f.benchmark} ({f.source}): {why}; rerun: {freshness.rerun(f)}{took}")
    return lines


def main() -> None:
    changed = write_all()
    print("\n".join(f"rewrote {c}" for c in changed) or "every generated section is current")


if __name__ == "__main__":
    main()
