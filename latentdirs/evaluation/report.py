"""Markdown tables and a self-contained HTML report (inline SVG charts, embedded PNG grids)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from latentdirs.atomic import write_text_atomic


def markdown(results: dict[str, Any]) -> str:
    """One table per generator: a row per file (VP, floor, chance, profile means, ground truth if any).

    Mean linearity and area are over the directions that are not inert; "inert" counts the others."""
    lines = []
    for spec, files in results["generators"].items():
        lines += [f"### {spec}", "", "| file | method | K | VP | random floor | chance | mean change | inert "
                  "| mean linearity | mean area | ground truth: factor, best abs(cos) (direction, spread) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for item in files:
            profile = item["profile"]
            truth = ", ".join(f"{r['factor']} {r['abs_cos']:.2f} (d{r['best_index']}, spread {r['spread']:.2f})"
                              for r in item.get("ground_truth", []))
            vp = "n/a" if item["vp"] is None else f"{item['vp']:.3f}"
            floor = "n/a" if item["vp_random_floor"] is None else f"{item['vp_random_floor']:.3f}"
            active = [p for p in profile if not p["inert"]]
            linearity = f"{np.mean([p['linearity'] for p in active]):.3f}" if active else "n/a"
            area = f"{np.mean([p['area'] for p in active]):.3f}" if active else "n/a"
            lines.append(f"| {Path(item['file']).name} | {item['method']} | {item['directions']} | {vp} | "
                         f"{floor} | {item['vp_chance']:.3f} | {np.mean([p['change'] for p in profile]):.4f} | "
                         f"{len(profile) - len(active)} | {linearity} | {area} | {truth or '—'} |")
        lines.append("")
        for item in files:
            if item.get("calibration"):
                lines += [f"Calibration of {Path(item['file']).name} (`latentdirs measure`, 16 seeds, requests up to "
                          f"half the calibrated range):", "",
                          "| requested | achieved mean | std |", "|---|---|---|"]
                lines += [f"| {r['requested']:+.3f} | {r['mean']:+.4f} | {r['std']:.4f} |" for r in item["calibration"]]
                lines.append("")
            if item.get("factor_matrix"):
                lines += [f"Direction x factor effect of {Path(item['file']).name}:", "",
                          *factor_matrix_markdown(item["factor_matrix"]), ""]
    if results.get("content_style"):
        from latentdirs.evaluation.content_style import content_style_markdown

        for spec, figures in results["content_style"].items():
            lines += content_style_markdown(spec, figures)
    for error in results["errors"]:
        lines.append(f"- not evaluated: {error['file']}: {error['error']}")
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def factor_matrix_markdown(matrix: dict[str, Any]) -> list[str]:
    """Markdown lines of one effect matrix (:func:`latentdirs.evaluation.factors.effect_matrix`): a row per
    direction (factor changes in data spreads per unit step, its mass and purity), a row of per-factor
    gaps and a line of the overall scores."""
    names = matrix["factors"]
    labels = matrix.get("labels") or [f"d{i}" for i in range(len(matrix["matrix"]))]
    lines = ["| direction | " + " | ".join(names) + " | mass | purity |", "|---" * (len(names) + 3) + "|"]
    best = matrix.get("best") or []
    for i, (label, row) in enumerate(zip(labels, matrix["matrix"])):
        cells = [f"**{v:.3f}**" if j < len(best) and best[j] == i else f"{v:.3f}" for j, v in enumerate(row)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {matrix['mass'][i]:.3f} | {_score(matrix['purity'][i])} |")
    if matrix.get("gap") is not None:
        lines.append("| *gap (top1-top2)/top1* | " + " | ".join(f"{g:.2f}" for g in matrix["gap"]) + " | | |")
    source = ("read by the factor reader, " f"{matrix['samples']} latents, steps ±{matrix['step']:g}"
              if matrix["source"] == "read_factors" else "exact, from the true directions")
    lines += ["", f"modularity (DCI-style) **{_score(matrix['modularity'])}**, completeness "
              f"{_score(matrix['completeness_mean'])}, MIG-style gap {_score(matrix['mig'])} ({source}; "
              "bold: each factor's top direction)"]
    return lines


def _bars(values: list[float], labels: list[str], title: str, width: int = 360, height: int = 140,
          colors: list[str] | None = None) -> str:
    """An inline SVG bar chart (``colors`` per bar, default all blue); wide enough for its title."""
    width = max(width, int(6.5 * len(title)) + 12)
    top = max(values + [1e-12])
    bar = (width - 20) / max(len(values), 1)
    parts = [f'<svg width="{width}" height="{height + 30}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="4" y="12" font-size="11">{html.escape(title)}</text>']
    for i, (value, label, color) in enumerate(zip(values, labels, colors or ["#3a6fc4"] * len(values))):
        h = (height - 30) * value / top
        x = 10 + i * bar
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - h:.1f}" width="{bar - 4:.1f}" height="{h:.1f}" fill="{color}"/>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 12}" font-size="9" text-anchor="middle">{html.escape(label)}</text>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - h - 3:.1f}" font-size="8" text-anchor="middle">{value:.3g}</text>')
    return "".join(parts) + "</svg>"


def _grid_png(generator, directions, count: int = 4) -> str:
    """The top ``count`` directions at strengths ±3, ±1.5, 0 for seed 0 — or, for a calibrated file, at
    amounts 0, ±a/2, ±a (a = half the calibrated range, as in the calibration table)."""
    import warnings

    from latentdirs.edit import traverse
    from latentdirs.images import compose_grid, to_uint8
    from latentdirs.measure import probe_amounts
    from latentdirs.png import encode_png

    calibration = directions.meta.get("calibration")
    amounts = probe_amounts(calibration) if calibration else None
    indices = list(range(min(count, len(directions))))
    if amounts is not None:
        steps = amounts
        request = {"amounts": steps, "clamp_amounts": True}
    else:
        steps = [-3.0, -1.5, 0.0, 1.5, 3.0]
        request = {"alphas": steps}
    with warnings.catch_warnings():  # a seed clamped to its range is still shown, as the table's are
        warnings.simplefilter("ignore")
        tiles = np.concatenate([to_uint8(b.images) for b in traverse(generator, directions, seeds=[0],
                                                                        indices=indices, **request)])
    grid = compose_grid(tiles.reshape(len(indices), len(steps), *tiles.shape[1:]),
                        row_labels=[directions.label_of(i) for i in indices], column_labels=[f"{a:+.3g}" for a in steps])
    return base64.b64encode(encode_png(grid.pixels)).decode()


def _calibration_png(item: dict[str, Any]) -> str:
    from latentdirs.measure import AccuracyRow, accuracy_chart
    from latentdirs.png import encode_png

    rows = [AccuracyRow(**row) for row in item["calibration"]]
    chart = accuracy_chart(rows, title=f"calibration of {Path(item['file']).name}", units=item.get("calibration_units", ""))
    return base64.b64encode(encode_png(np.asarray(chart))).decode()


def write_report(results: dict[str, Any], folder: str | Path) -> Path:
    """``folder/report.html``: per generator a compare table, per file its charts and edit grid."""
    from latentdirs.directions import Directions
    from latentdirs.registry import load_generator

    sections = ["<h1>latentdirs evaluation</h1>"]
    for spec, files in results["generators"].items():
        generator = load_generator(spec, device="cpu")
        sections.append(f"<h2>{html.escape(spec)}</h2><h3>Compare</h3>")
        scored = [f for f in files if f["vp"] is not None]
        if scored:  # each file's VP beside the floor of its own size (a random basis of K directions)
            values = [v for f in scored for v in (f["vp"], f["vp_random_floor"])]
            labels = [label for f in scored for label in (Path(f["file"]).stem[:14], f"floor K={f['directions']}")]
            sections.append(_bars(values, labels, "VP: each file (blue), then its random floor (grey)",
                                  width=max(360, 70 * len(values)), colors=["#3a6fc4", "#aaaaaa"] * len(scored)))
        sections.append("<pre>" + html.escape(markdown({"generators": {spec: files}, "errors": []})) + "</pre>")
        columns = []  # one column per file, side by side
        for item in files:
            profile = item["profile"]
            names = [f"d{i}" for i in range(len(profile))]
            directions = Directions.load(item["file"], generator=generator)
            column = [f"<h3>{html.escape(Path(item['file']).name)} ({html.escape(str(item['method']))})</h3>"]
            for key in ("change", "linearity", "area"):
                column.append(_bars([p[key] or 0.0 for p in profile], names,
                                    key if key == "change" else f"{key} (inert directions shown as 0)"))
            if item.get("calibration"):
                rows = "".join(f"<tr><td>{r['requested']:+.3f}</td><td>{r['mean']:+.4f}</td><td>{r['std']:.4f}</td></tr>"
                               for r in item["calibration"])
                column.append(f"<table><tr><th>requested</th><th>achieved</th><th>std</th></tr>{rows}</table>")
                column.append(f'<p><img alt="calibration chart" src="data:image/png;base64,{_calibration_png(item)}"/></p>')
            column.append(f'<p><img alt="edit grid" src="data:image/png;base64,{_grid_png(generator, directions)}"/></p>')
            columns.append('<div class="file">' + "\n".join(column) + "</div>")
        sections.append('<div class="files">' + "\n".join(columns) + "</div>")
    for error in results["errors"]:
        sections.append(f"<p>Not evaluated: {html.escape(error['file'])}: {html.escape(error['error'])}</p>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>latentdirs evaluation</title>"
            "<style>body{font-family:sans-serif;margin:1em}svg{margin:4px}.files{display:flex;gap:24px;"
            "align-items:flex-start;overflow-x:auto}.file{flex:0 0 auto}pre{overflow-x:auto}</style></head><body>"
            + "\n".join(sections) + "</body></html>")
    path = Path(folder) / "report.html"
    write_text_atomic(path, page)
    return path
