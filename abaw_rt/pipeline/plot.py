"""Pipeline layer, stage 5: the per-video plot (plot.png), drawn with Pillow in a few tens of milliseconds.

matplotlib cost 1.9 s per run here (1.2 s to import, 0.7 s to lay out and render one figure), more than
the whole pipeline spends on a 20 s clip; this module draws the same three panels directly: valence and
arousal over time (no-face spans shaded), the expression strip, AU probabilities, a time axis, and the
legends outside the data and the axis label. Long tracks are drawn from a bounded min/max envelope, and
frames are placed on pixel columns a chunk at a time: no whole-track copy, whatever the video's length.
"""

from __future__ import annotations

import io
from array import array
from types import SimpleNamespace

import numpy as np

from abaw_rt.model.config import HEAD_LABELS

PLOT_BINS = 1500  # a 1000-pixel-wide figure: more points only cost memory
COLUMN_CHUNK = 1 << 14  # frames placed on pixel columns at a time: no per-frame temporaries of a long video

S = 2  # drawn at twice the size, then halved (anti-aliased lines and text)
WIDTH = 1000
LEFT, RIGHT, TOP = 70, 20, 34
PANEL_H = {"va": 200, "expr": 44, "au": 150}
GAP = 12
VALENCE, AROUSAL = (31, 119, 180), (255, 127, 14)  # blue, orange
NO_FACE = (222, 222, 222)
# Expression colours: none close to the valence blue or the arousal orange.
EXPR_COLOURS = (
    (127, 127, 127),  # Neutral: grey
    (214, 39, 40),  # Anger: red
    (44, 160, 44),  # Disgust: green
    (148, 103, 189),  # Fear: purple
    (240, 200, 0),  # Happiness: gold
    (140, 86, 75),  # Sadness: brown
    (227, 119, 194),  # Surprise: pink
    (23, 190, 207),  # Other: cyan
)
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)


def _envelope(t: np.ndarray, y: np.ndarray, bins: int = PLOT_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Long tracks as a min/max envelope over ``bins`` time bins (extremes kept, memory bounded)."""
    if len(t) <= 2 * bins:
        return t, y
    starts = np.linspace(0, len(t), bins + 1).astype(int)[:-1]
    lo, hi = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    return np.repeat(t[starts], 2), np.stack([lo, hi], axis=1).ravel()


def _viridis(p: np.ndarray) -> np.ndarray:
    """Probabilities 0..1 -> RGB uint8 along viridis (5 anchors, linear in between)."""
    x = np.clip(np.nan_to_num(p), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    i = np.minimum(x.astype(int), len(_VIRIDIS) - 2)
    f = (x - i)[..., None]
    return (_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def _fonts():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11 * S), ImageFont.load_default(size=13 * S)
    except TypeError:  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        f = ImageFont.load_default()
        return f, f


def _nice_step(span: float, target: int = 8) -> float:
    raw = max(span, 1e-9) / target
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw))


def plot_png(pred) -> bytes:
    """Valence/arousal over time with the expression strip (and AU probabilities), as PNG bytes."""
    from abaw_rt.errors import require_module

    require_module("PIL", "video")
    from PIL import Image, ImageDraw

    heads = [h for h in ("va", "expr", "au") if h in pred.merged]
    font, big = _fonts()
    t = np.asarray(pred.frame_times, float)
    t0 = float(t[0])
    t1 = float(t[-1]) + (float(t[-1] - t[-2]) if len(t) > 1 else 0.04)
    plot_w = WIDTH - LEFT - RIGHT
    legend_rows = 1 + ("expr" in heads)
    height = TOP + sum(PANEL_H[h] for h in heads) + GAP * (len(heads) - 1) + 44 + 18 * legend_rows
    img = Image.new("RGB", (WIDTH * S, height * S), "white")
    draw = ImageDraw.Draw(img)
    draw.text((WIDTH * S // 2, 8 * S), pred.name, fill="black", font=big, anchor="mt")

    def x_of(tt):
        return (LEFT + (np.asarray(tt, float) - t0) / max(t1 - t0, 1e-9) * plot_w) * S

    first_frame, no_face_cols = _columns(t, t0, t1, plot_w, pred.face_found)
    y = TOP
    for head in heads:
        h = PANEL_H[head]
        box = (LEFT * S, y * S, (LEFT + plot_w) * S, (y + h) * S)
        if head == "va":
            _va_panel(draw, pred, t, no_face_cols, box, x_of, font)
        elif head == "expr":
            strip = np.array(EXPR_COLOURS, np.uint8)[np.asarray(pred.decisions["expr"])[first_frame].astype(int)]
            img.paste(Image.fromarray(np.repeat(strip[None], h * S, 0)).resize((plot_w * S, h * S)), box[:2])
            draw.text(((LEFT - 8) * S, (y + h / 2) * S), "EXPR", fill="black", font=font, anchor="rm")
        else:
            probs = np.asarray(pred.merged["au"])[first_frame].astype(float).T  # (12, plot_w)
            heat = Image.fromarray(_viridis(probs)).resize((plot_w * S, h * S), Image.NEAREST)
            img.paste(heat, box[:2])
            for i, name in enumerate(HEAD_LABELS["au"]):
                draw.text(((LEFT - 6) * S, (y + (i + 0.5) * h / 12) * S), name, fill="black", font=font, anchor="rm")
        draw.rectangle(box, outline="black", width=S)
        y += h + GAP
    _time_axis(draw, t0, t1, x_of, (y - GAP) * S, font)
    legend_y = (y - GAP + 36) * S
    _legend(draw, [("valence", VALENCE), ("arousal", AROUSAL), ("no face", NO_FACE)] if "va" in heads else [],
            legend_y, font)
    if "expr" in heads:
        _legend(draw, list(zip(HEAD_LABELS["expr"], EXPR_COLOURS)), legend_y + 18 * S, font)
    buf = io.BytesIO()
    img.reduce(S).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _columns(t: np.ndarray, t0: float, t1: float, plot_w: int, face_found) -> tuple[np.ndarray, np.ndarray]:
    """(the frame shown in each pixel column: the last one starting at or before it; the columns that show a frame
    without a face: that frame, or any frame of the column without one), a chunk of frames at a time."""
    at_or_before = np.zeros(plot_w, np.int64)  # frames per column, summed: frames starting at or before it
    no_face_cols = np.zeros(plot_w, bool)
    for a in range(0, len(t), COLUMN_CHUNK):
        x = np.asarray(t[a : a + COLUMN_CHUNK], float) - t0
        x /= max(t1 - t0, 1e-9)
        x *= plot_w
        cols = np.clip(x.astype(int), 0, plot_w - 1)
        at_or_before += np.bincount(cols, minlength=plot_w)
        no_face_cols[cols[~np.asarray(face_found[a : a + COLUMN_CHUNK], bool)]] = True
    first_frame = np.clip(np.cumsum(at_or_before) - 1, 0, len(t) - 1)
    return first_frame, no_face_cols | ~np.asarray(face_found, bool)[first_frame]


def _va_panel(draw, pred, t, missing, box, x_of, font) -> None:
    x0, top, x1, bottom = box

    def y_of(v):
        return top + (1.05 - np.clip(np.asarray(v, float), -1.05, 1.05)) / 2.1 * (bottom - top)

    edges = np.flatnonzero(np.diff(np.r_[0, missing.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2]):
        draw.rectangle((x0 + a * S, top, x0 + b * S - 1, bottom), fill=NO_FACE)
    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        yy = float(y_of(v))
        if v == 0.0:
            draw.line((x0, yy, x1, yy), fill=(178, 178, 178), width=1)
        draw.line((x0 - 4 * S, yy, x0, yy), fill="black", width=S)
        draw.text((x0 - 6 * S, yy), f"{v:g}", fill="black", font=font, anchor="rm")
    draw.text((x0 - 40 * S, (top + bottom) / 2), "VA", fill="black", font=font, anchor="rm")
    d = np.asarray(pred.decisions["va"])  # its own dtype: the envelope's points go to float, not a whole track
    for k, colour in ((0, VALENCE), (1, AROUSAL)):
        tt, yy = _envelope(t, d[:, k])
        pts = np.stack([x_of(tt), y_of(yy)], axis=1).ravel().tolist()
        draw.line(pts if len(pts) >= 4 else pts * 2, fill=colour, width=S, joint="curve")


def _time_axis(draw, t0, t1, x_of, y, font) -> None:
    step = _nice_step(t1 - t0)
    for v in np.arange(np.ceil(t0 / step) * step, t1 + 1e-9, step):
        x = float(x_of(v))
        draw.line((x, y, x, y + 4 * S), fill="black", width=S)
        draw.text((x, y + 6 * S), f"{v:g}", fill="black", font=font, anchor="mt")
    draw.text((float(x_of((t0 + t1) / 2)), y + 20 * S), "time (s)", fill="black", font=font, anchor="mt")


def _legend(draw, items, y, font) -> None:
    """One centred row of colour swatches with labels, below the time axis (never over data or labels)."""
    if not items:
        return
    widths = [18 * S + draw.textlength(label, font=font) + 14 * S for label, _ in items]
    x = (WIDTH * S - sum(widths)) / 2
    for (label, colour), w in zip(items, widths):
        draw.rectangle((x, y + 3 * S, x + 14 * S, y + 13 * S), fill=colour, outline=(90, 90, 90))
        draw.text((x + 18 * S, y + 8 * S), label, fill="black", font=font, anchor="lm")
        x += w


class PlotRecord:
    """What plot.png draws, kept per frame in compact arrays (about 20 bytes a frame for VA + EXPR)."""

    def __init__(self, heads):
        self.heads = list(heads)
        self.times, self.faces = array("d"), array("B")
        self.values = {h: [] for h in heads}

    def put(self, rows) -> None:
        """A sink's final rows (``outputs.FinalRows``)."""
        self.times.extend(np.asarray(rows.times, np.float64))
        self.faces.extend(np.asarray(rows.faces, np.uint8))
        for h in self.heads:  # VA: the clipped values; EXPR: the class; AU: the probabilities
            v = rows.merged[h] if h == "au" else rows.decisions[h]
            self.values[h].append(np.asarray(v, np.float32 if h != "expr" else np.int8))

    def png(self, name: str) -> bytes:
        values = {h: np.concatenate(v) for h, v in self.values.items()}
        pred = SimpleNamespace(name=name, frame_times=np.frombuffer(self.times, np.float64),
                               face_found=np.frombuffer(self.faces, np.uint8).astype(bool), merged=values,
                               decisions=values)
        return plot_png(pred)
