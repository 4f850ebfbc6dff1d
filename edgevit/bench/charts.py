"""Pillow charts for benchmark reports (matplotlib is not a dependency): horizontal bars and scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

PALETTE = ["#2a7ab0", "#e07b39", "#4c9a2a", "#b03a2e", "#7d3c98", "#7f7f7f", "#17a589", "#d4ac0d"]


def bars(path: Path, title: str, subtitle: str, rows: list[tuple[str, float, str]], color_of=None) -> None:
    """rows: (label, value, annotation). One horizontal bar per row, longest = widest."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    label_w = max([len(r[0]) for r in rows] + [10]) * 6 + 20
    width, bar_h, gap, top = 900, 20, 8, 52
    left = min(label_w, 320)
    img = Image.new("RGB", (width, top + len(rows) * (bar_h + gap) + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((12, 12), title, fill="black", font=font)
    draw.text((12, 30), subtitle, fill="#555555", font=font)
    longest = max((r[1] for r in rows), default=1.0) or 1.0
    for k, (label, value, note) in enumerate(rows):
        y = top + k * (bar_h + gap)
        length = max(2, int((width - left - 250) * value / longest))
        draw.text((12, y + bar_h // 2 - 6), label[: (left - 20) // 6], fill="black", font=font)
        draw.rectangle([left, y, left + length, y + bar_h], fill=(color_of(label) if color_of else PALETTE[0]))
        draw.text((left + length + 8, y + bar_h // 2 - 6), note, fill="black", font=font)
    img.save(path)


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        steps = (1, 2, 5) if math.log10(hi / lo) < 2.5 else (1,)
        return [m * 10.0 ** e for e in decades for m in steps]
    step = 10 ** math.floor(math.log10((hi - lo) or 1.0))
    if (hi - lo) / step < 4:
        step /= 2
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def scatter(draw, box, points, xlabel, ylabel, log_x=False, log_y=False, font=None, bands=None) -> None:
    """Labelled points (x, y, label, color) in box=(x0, y0, x1, y1); bands: optional (y_lo, y_hi) per point."""
    x0, y0, x1, y1 = box
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + ([b for band in bands for b in band] if bands else [])
    if not xs:
        draw.text((x0 + 10, y0 + 10), "no data", fill="#555555", font=font)
        return
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    lox, hix = min(xs), max(xs)
    loy, hiy = min(ys), max(ys)
    if log_x:
        lox, hix = lox / 1.3, hix * 1.3
    else:
        pad = (hix - lox) * 0.08 or 1.0
        lox, hix = lox - pad, hix + pad
    if log_y:
        loy, hiy = loy / 1.3, hiy * 1.3
    else:
        pad = (hiy - loy) * 0.08 or 1.0
        loy, hiy = loy - pad, hiy + pad
    px = lambda v: x0 + (fx(v) - fx(lox)) / ((fx(hix) - fx(lox)) or 1) * (x1 - x0)  # noqa: E731
    py = lambda v: y1 - (fy(v) - fy(loy)) / ((fy(hiy) - fy(loy)) or 1) * (y1 - y0)  # noqa: E731
    draw.rectangle([x0, y0, x1, y1], outline="#999999")
    for t in _ticks(lox, hix, log_x):
        if lox <= t <= hix:
            draw.line([px(t), y1, px(t), y1 + 4], fill="black")
            draw.text((px(t) - 12, y1 + 6), f"{t:g}", fill="black", font=font)
    for t in _ticks(loy, hiy, log_y):
        if loy <= t <= hiy:
            draw.line([x0 - 4, py(t), x0, py(t)], fill="black")
            draw.text((x0 - 40, py(t) - 6), f"{t:g}", fill="black", font=font)
    draw.text(((x0 + x1) // 2 - 3 * len(xlabel), y1 + 22), xlabel, fill="black", font=font)
    draw.text((x0 - 40, y0 - 16), ylabel, fill="black", font=font)
    for i, (x, y, label, color) in enumerate(points):
        cx, cy = px(x), py(y)
        if bands and bands[i]:
            draw.line([cx, py(bands[i][0]), cx, py(bands[i][1])], fill=color)
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        draw.text((cx + 5, cy - 5), label, fill="#333333", font=font)


def zoo_plot(path: Path, title: str, rows: list[dict], value_key: str, value_label: str,
             band_key: str | None = None) -> None:
    """Latency vs MACs (log-log) and, for rows with a known top-1, accuracy vs latency, side by side."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    families = sorted({r.get("family", "") for r in rows})
    color = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}
    img = Image.new("RGB", (1400, 640), "white")
    draw = ImageDraw.Draw(img)
    draw.text((12, 10), title, fill="black", font=font)
    ok = [r for r in rows if r.get(value_key)]
    pts = [(r["macs"] / 1e6, r[value_key], r["model"], color[r.get("family", "")]) for r in ok if r.get("macs")]
    bands = [tuple(r[band_key]) if band_key and r.get(band_key) else None for r in ok if r.get("macs")]
    scatter(draw, (70, 50, 660, 560), pts, "MACs (M, log)", value_label + " (log)", log_x=True, log_y=True,
            font=font, bands=bands if band_key else None)
    acc = [(r[value_key], r["top1"], r["model"], color[r.get("family", "")]) for r in ok if r.get("top1")]
    scatter(draw, (770, 50, 1360, 560), acc, value_label + " (log)", "ImageNet top-1 % (published)", log_x=True,
            font=font)
    if not acc:
        draw.text((790, 70), "no model with a known top-1 in this run", fill="#555555", font=font)
    x = 70
    for f in families:
        draw.rectangle([x, 600, x + 10, 610], fill=color[f])
        draw.text((x + 14, 598), f or "?", fill="black", font=font)
        x += 20 + 7 * len(f or "?")
        if x > 1300:
            break
    img.save(path)
