"""Benchmark: where live predictions part from offline ones, and what each costs against ground truth.

Live (`abaw-rt live`) differs from offline `infer` in three ways: (a) face handling (the last detected face is held
between detections and a face-less frame takes the last face's features; offline interpolates boxes and fills from
the nearest face either side), (b) context: a frame only sees windows ending at most ``lookahead`` frames after it,
and (c) the merge rule over those windows. Here the fusion model is the only moving part: per-frame features are
computed once per way of handling faces, and the same features go through offline's window plan (``plan_segments``
+ ``Stitcher``) and through live's scheme (a window ending at every frame, hop 1, merged by a rule over the windows
ending at t .. t + lookahead). ``newest`` is what ``LiveStitcher`` does (checked here against it, and against a live
run in process); ``centre`` is what it did before (offline's centre weights over the windows run).
Feature variants besides offline's and live's own: the two hybrids of boxes and fill (face handling split in two),
and ``fill_in_lookahead``: a face-less frame filled, per window, from the nearest face among the frames up to that
window's end (what live could know; a candidate, not what live does).

Part ``clips``: the `make-sample-video` clip and the expressive clip (`make_expressive_video`: faces that change
every few seconds, a voice whose arousal changes), offline and live features from the built-in pipeline.
Per lookahead and rule: CCC of the simulated live predictions against offline `infer`'s, mean |Δ|, EXPR agreement.

Part ``truth``: the demo model's 40 synthetic validation sequences (`demo_data`, the model card's split) with their
VA/EXPR labels: CCC and EXPR F1 of offline and of live at each lookahead against the labels (accuracy vs latency),
and live against offline (agreement) on data whose valence and arousal really vary.

    python benchmarks/bench_live_context.py                       # both parts (~10 min on 2 busy cores)
    python benchmarks/bench_live_context.py --part clips --seconds 20

Saves benchmarks/results/live_context_cpu_<date>.json (machine, versions, date, load average, every figure).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's abaw_rt, also when another one is pip-installed
RESULTS = ROOT / "benchmarks" / "results"
WINDOW = 300
LOOKAHEADS = (0, 12, 25, 50, 100)


# -- merge rules over the windows already run ----------------------------------------------------------------------
# A rule gives the weight of the window ending at e = t + d (d = 0 .. lookahead) for frame t, from d, the window's
# length n (t sits at position n - 1 - d) and a, the offset of the newest window frame t gets (min(lookahead, frames
# left)). Only windows with d <= a (already run) count.
def _centre(d, n, a):
    return np.minimum(n - d, d + 1).astype(np.float64)  # window_weights(n, Merge.centre) at position n - 1 - d


RULES = {
    "centre": _centre,  # offline's centre weights over the windows run (LiveStitcher until 2026-12)
    "newest": lambda d, n, a: (d == np.minimum(a, WINDOW // 2)).astype(np.float64),  # LiveStitcher now: one window,
    # the newest, or past half a window the one with w/2 frames after the frame
    "uniform": lambda d, n, a: np.ones(np.shape(d)),
    "newest_half": lambda d, n, a: (2 * d >= a).astype(np.float64),  # the newer half of them, uniform
    "centre_squared": lambda d, n, a: _centre(d, n, a) ** 2,
}
PACKAGE_RULE = "newest"  # what LiveStitcher does (check_against_live_stitcher)


def window_outputs(runner, feats: dict[str, np.ndarray], face: np.ndarray | None = None,
                   batch: int = 16) -> dict[str, np.ndarray]:
    """{head: (frames, WINDOW, k)}: [e, d] is the output of the window ending at frame e (w frames or all before it)
    for frame e - d, as stitching averages it (``to_probabilities``); NaN where d >= that window's length.

    ``face`` given: the ``visual`` rows of frames without a face are filled per window from the nearest frame with
    one among the frames up to the window's end (what live can know when it runs that window); else as given."""
    from abaw_rt.model.config import LENGTHS
    from abaw_rt.pipeline.segments import pad_windows
    from abaw_rt.pipeline.stitch import to_probabilities
    from abaw_rt.store import nearest_rows

    n = len(next(iter(feats.values())))
    out: dict[str, np.ndarray] = {}
    for first in range(0, n, batch):
        ends = range(first, min(n, first + batch))
        starts = [max(0, e - WINDOW + 1) for e in ends]
        feeds = {}
        for m, x in feats.items():
            rows = []
            for a, e in zip(starts, ends):
                if face is None or m != "visual" or face[: e + 1].all():
                    rows.append(x[a : e + 1])
                elif not face[: e + 1].any():
                    rows.append(np.zeros_like(x[a : e + 1]))  # no face yet: zeros, as live
                else:
                    rows.append(x[nearest_rows(face[: e + 1])[a:]])
            feeds[m] = pad_windows(rows).astype(np.float32, copy=False)
        feeds[LENGTHS] = np.array([e + 1 - a for a, e in zip(starts, ends)], np.int64)
        o = runner.infer(feeds)
        for j, (a, e) in enumerate(zip(starts, ends)):
            for h, v in o.items():
                y = out.setdefault(h, np.full((n, WINDOW, v.shape[-1]), np.nan, np.float32))
                y[e, : e + 1 - a] = to_probabilities(h, v[j, : e + 1 - a])[::-1]
    return out


def live_merge(y: dict[str, np.ndarray], lookahead: int, rule: str) -> dict[str, np.ndarray]:
    """{head: (frames, k)} each frame merged from the windows ending at t .. min(t + lookahead, last frame):
    a weighted average (``RULES``), or ``best``: the one window where the frame sits most centrally (centre
    weight; ties keep the earlier window), as ``Merge.none`` in ``LiveStitcher``."""
    out = {}
    for h, v in y.items():
        n = len(v)
        acc, wsum = np.zeros((n, v.shape[-1])), np.zeros(n)
        for d in range(min(lookahead, WINDOW - 1) + 1):
            t = np.arange(n - d)
            e = t + d
            length = np.minimum(e + 1, WINDOW)
            if rule == "best":
                w = _centre(d, length, None)
                better = w > wsum[t]
                acc[t[better]] = v[e[better], d]
                wsum[t[better]] = w[better]
                continue
            a = np.minimum(t + lookahead, n - 1) - t  # offset of the newest window frame t gets
            w = RULES[rule](np.full(len(t), d), length, a)
            acc[t] += w[:, None] * v[e, d]
            wsum[t] += w
        out[h] = acc if rule == "best" else acc / wsum[:, None]
    return out


def check_against_live_stitcher(y: dict[str, np.ndarray], lookahead: int) -> float:
    """Max |Δ| between ``live_merge(PACKAGE_RULE)`` and the package's LiveStitcher fed the same windows, hop 1."""
    from types import SimpleNamespace

    from abaw_rt.pipeline.stream.stitch import LiveStitcher

    n = len(next(iter(y.values())))
    st = LiveStitcher({h: v.shape[-1] for h, v in y.items()}, lookahead, WINDOW)
    got = {}
    for e in range(n):
        st.add_frame(SimpleNamespace(index=e, time=e / 25.0, face=True))
        length = min(e + 1, WINDOW)
        st.add_window(e - length + 1, {h: v[e, :length][::-1] for h, v in y.items()})
        for rows in (st.ready(e), st.flush() if e == n - 1 else None):
            for i in range(len(rows) if rows is not None else 0):
                got[rows.start + i] = {h: v[i] for h, v in rows.merged.items()}
    sim = live_merge(y, lookahead, PACKAGE_RULE)
    return max(float(np.abs(np.stack([got[i][h] for i in range(n)]) - sim[h]).max()) for h in y)


def offline_stitch(runner, feats: dict[str, np.ndarray], batch: int = 8) -> dict[str, np.ndarray]:
    """{head: (frames, k)} offline's window plan and centre-weighted stitching, as `infer`."""
    from abaw_rt.pipeline.segments import plan_segments, run_segments
    from abaw_rt.pipeline.stitch import Stitcher, to_probabilities

    n = len(next(iter(feats.values())))
    stitcher = None
    for seg, o in run_segments(runner, feats, plan_segments(n, WINDOW, 200), batch):
        stitcher = stitcher or Stitcher(n, {h: v.shape[-1] for h, v in o.items()})
        stitcher.add(seg.start, {h: to_probabilities(h, v) for h, v in o.items()})
    return stitcher.result()


def agreement(pred: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """Live (or any) predictions against a reference: CCC and mean |Δ| of V and A, EXPR agreement."""
    from abaw_rt.metrics import ccc

    p, r = np.clip(pred["va"], -1, 1), np.clip(ref["va"], -1, 1)
    return {
        "ccc_valence": round(ccc(p[:, 0], r[:, 0]), 4), "ccc_arousal": round(ccc(p[:, 1], r[:, 1]), 4),
        "mean_abs_diff_valence": round(float(np.abs(p[:, 0] - r[:, 0]).mean()), 4),
        "mean_abs_diff_arousal": round(float(np.abs(p[:, 1] - r[:, 1]).mean()), 4),
        "expr_agreement": round(float(np.mean(pred["expr"].argmax(1) == ref["expr"].argmax(1))), 4),
    }


def causal_fill(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows where ``valid`` is False take the last valid row before them (zeros before the first), as live does."""
    idx = np.where(valid, np.arange(len(valid)), -1)
    last = np.maximum.accumulate(idx)
    out = np.where((last >= 0)[:, None], x[np.maximum(last, 0)], 0.0)
    return out.astype(np.float32)


def by_modality(model_cfg, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{modality: (frames, D)}: the model's feature groups concatenated in config order (as the assembler does)."""
    return {m: np.concatenate([features[f.name] for f in model_cfg.features if f.modality == m], axis=1)
            .astype(np.float32) for m in model_cfg.modalities}


# -- part "clips": features of a real clip, both ways of handling faces ---------------------------------------------
class _Capture:
    """A live sink keeping each emitted frame's features, face flag and merged values."""

    def __init__(self):
        self.rows = []

    def put(self, rows, emit_wall: float, emit_mono: float) -> None:  # ``outputs.FinalRows`` with live's frames
        for i, row in enumerate(rows.frames):
            self.rows.append((row.index, row.face, dict(row.features),
                              {head: v[i] for head, v in rows.merged.items()}))


def clip_features(clip: Path, lookahead: int = 0) -> dict:
    """Offline features (interpolated boxes; raw rows and face flags) and live features (held boxes, causal fill)
    of one clip, each from the built-in pipeline, plus live's own predictions at ``lookahead`` (file read as fast
    as it decodes: nothing shed)."""
    from abaw_rt.pipeline.inputs import Source
    from abaw_rt.pipeline.jobs import FusionChoice, JobRunner, VideoJob
    from abaw_rt.pipeline.run import PipelineConfig
    from abaw_rt.pipeline.stream.live import LiveConfig, LiveRun
    from abaw_rt.pipeline.stream.source import parse_source

    runner = JobRunner(VideoJob(clip.parent, PipelineConfig(infer_threads=1), FusionChoice(threads=1)))
    capture = _Capture()
    with runner:
        pipe = runner.pipeline
        vf = pipe.features(Source(clip, "video", clip.stem), fill=False)
        LiveRun(pipe, parse_source(str(clip)), LiveConfig(lookahead=lookahead, shed_backlog=0), [capture]).run()
    rows = sorted(capture.rows, key=lambda r: r[0])
    names = list(vf.features)
    return {
        "offline_raw": {k: np.asarray(v, np.float32) for k, v in vf.features.items()},
        "offline_face": np.asarray(vf.face_found, bool),
        "live": {k: np.stack([r[2][k] for r in rows]).astype(np.float32) for k in names},
        "live_face": np.array([r[1] for r in rows], bool),
        "live_pred": {h: np.stack([r[3][h] for r in rows]) for h in rows[0][3]},
    }


def fusion_runner():
    """The built-in demo fusion graph on onnxruntime, one thread (what `infer` and `live` run by default)."""
    from abaw_rt import defaults
    from abaw_rt.runners.ort_runner import OrtRunner

    return OrtRunner(defaults.DEFAULTS_DIR / defaults.MODEL_FILE, threads=1)


# -- part "truth": the demo model's synthetic validation sequences, with labels -------------------------------------
def validation_videos(first: int = 160, count: int = 40, seed: int = 0):
    """The demo model's validation sequences: ``make_dataset``'s videos ``first`` .. (each seeded from (seed, index),
    so they are made alone; scripts/train_demo_model.py holds out the last fifth of 200)."""
    from abaw_rt.defaults.demo_data import DemoDataConfig, make_video

    cfg = DemoDataConfig()
    out = []
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, i])
        seconds = rng.uniform(cfg.min_seconds, cfg.max_seconds)
        fps = float(rng.choice(cfg.fps_choices))
        out.append(make_video(rng, f"demo{i:04d}", seconds, fps))
    return out


def truth_metrics(pred: list[dict[str, np.ndarray]], videos) -> dict:
    """CCC of V and A and EXPR macro F1 (8 labels, as the model card) against the labels, pooled over frames."""
    from abaw_rt.train.metrics import task_metrics

    va = task_metrics("va", np.clip(np.concatenate([p["va"] for p in pred]), -1, 1), np.concatenate([v.va for v in videos]))
    ex = task_metrics("expr", np.concatenate([p["expr"] for p in pred]), np.concatenate([v.expr for v in videos]))
    return {"ccc_valence": round(va["ccc_valence"], 4), "ccc_arousal": round(va["ccc_arousal"], 4),
            "expr_f1": round(ex["f1"], 4), "expr_accuracy": round(ex["accuracy"], 4)}


def pooled(preds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {h: np.concatenate([p[h] for p in preds]) for h in preds[0]}


OFFSETS = (0, 12, 25, 50, 100, 150, 200, 250, 299)  # frames after the frame, in one window (position_curve)


def position_curve(ys: list[dict[str, np.ndarray]], videos) -> list:
    """Accuracy of one full window's output for the frame d before its end (d in ``OFFSETS``; ``ys[i][head]`` is
    (frames, len(OFFSETS), k), column j for OFFSETS[j]) against the labels, no merging."""
    from abaw_rt.metrics import ccc

    rows = []
    for j, d in enumerate(OFFSETS):
        va, lab, ex, lab_ex = [], [], [], []
        for y, v in zip(ys, videos):
            e = np.arange(WINDOW - 1, v.frames)
            va.append(y["va"][e, j])
            lab.append(v.va[e - d])
            ex.append(y["expr"][e, j].argmax(1))
            lab_ex.append(v.expr[e - d])
        va, lab = np.clip(np.concatenate(va), -1, 1), np.concatenate(lab)
        rows.append({"frames_after": d, "ccc_valence": round(ccc(va[:, 0], lab[:, 0]), 4),
                     "ccc_arousal": round(ccc(va[:, 1], lab[:, 1]), 4),
                     "expr_accuracy": round(float(np.mean(np.concatenate(ex) == np.concatenate(lab_ex))), 4)})
    return rows


def windows_by_offset(y: dict[str, np.ndarray], lookahead: int) -> np.ndarray:
    """(frames - lookahead, lookahead + 1, 2): the VA outputs of the windows ending 0 .. lookahead frames after each
    frame that has ``lookahead`` frames after it (the inputs of any merge rule live could use)."""
    t = np.arange(len(y["va"]) - lookahead)
    return np.stack([y["va"][t + d, d] for d in range(lookahead + 1)], axis=1)


def best_linear_rule(designs: list[np.ndarray], targets: list[np.ndarray], newest: int) -> dict:
    """How close any fixed linear mix of the windows run could get to offline: least squares (plus a constant) per
    VA dimension, fitted on the first half of the sequences, scored on the other half; the newest window alone
    beside it."""
    from abaw_rt.metrics import ccc

    half = len(designs) // 2
    out = {}
    for j, name in enumerate(("valence", "arousal")):
        fit_x, fit_y = np.concatenate(designs[:half])[:, :, j], np.concatenate(targets[:half])[:, j]
        x, y = np.concatenate(designs[half:])[:, :, j], np.concatenate(targets[half:])[:, j]
        w, *_ = np.linalg.lstsq(np.c_[fit_x, np.ones(len(fit_x))], fit_y, rcond=None)
        out[f"fitted_mix_ccc_{name}"] = round(ccc(np.c_[x, np.ones(len(x))] @ w, y), 4)
        out[f"newest_ccc_{name}"] = round(ccc(x[:, newest], y), 4)
    return out


def part_truth(count: int, lookaheads, rules) -> dict:
    """Offline and live (per feature fill, rule and lookahead) against the validation labels and against offline."""
    videos = validation_videos(count=count)
    fills = ("nearest_fill", "causal_fill", "fill_in_lookahead")
    preds: dict = {}
    offline, offline_causal, full = [], [], []
    mixes = {la: ([], []) for la in lookaheads if la > 0}  # (window outputs by offset, offline), per lookahead
    with fusion_runner() as runner:
        for v in videos:
            vis = {"nearest_fill": v.fer, "causal_fill": causal_fill(v.fer, v.face_found), "fill_in_lookahead": v.fer}
            offline.append(offline_stitch(runner, {"visual": vis["nearest_fill"], "audio": v.logmel}))
            offline_causal.append(offline_stitch(runner, {"visual": vis["causal_fill"], "audio": v.logmel}))
            for fill in fills:
                y = window_outputs(runner, {"visual": vis[fill], "audio": v.logmel},
                                   face=v.face_found if fill == "fill_in_lookahead" else None)
                if fill == "nearest_fill":
                    full.append({h: x[:, list(OFFSETS)] for h, x in y.items()})
                    for la, (xs, ts) in mixes.items():
                        xs.append(windows_by_offset(y, la))
                        ts.append(offline[-1]["va"][: v.frames - la])
                for rule in rules:
                    for la in lookaheads:
                        preds.setdefault((fill, rule, la), []).append(live_merge(y, la, rule))
            print(f"truth: {v.name} ({v.frames} frames)", flush=True)
    ref = truth_metrics(offline, videos)
    labels = np.concatenate([v.va for v in videos])
    rows = []
    for (fill, rule, la), p in preds.items():
        m = truth_metrics(p, videos)
        rows.append({"features": fill, "rule": rule, "lookahead": la, **m,
                     "delta_ccc_valence": round(m["ccc_valence"] - ref["ccc_valence"], 4),
                     "delta_ccc_arousal": round(m["ccc_arousal"] - ref["ccc_arousal"], 4),
                     "delta_expr_f1": round(m["expr_f1"] - ref["expr_f1"], 4),
                     "vs_offline": agreement(pooled(p), pooled(offline))})
    curve = position_curve(full, videos)
    return {
        "videos": len(videos), "frames": int(sum(v.frames for v in videos)),
        "labels_std": {"valence": round(float(labels[:, 0].std()), 4), "arousal": round(float(labels[:, 1].std()), 4)},
        "offline": ref,
        "offline_causal_fill": {**truth_metrics(offline_causal, videos),
                                "vs_offline": agreement(pooled(offline_causal), pooled(offline))},
        "rows": rows,
        "single_window_by_frames_after": curve,
        "merge_rule_bound_vs_offline": {str(la): best_linear_rule(xs, ts, min(la, WINDOW // 2))
                                        for la, (xs, ts) in mixes.items()},
    }


def part_clip(kind: str, seconds: float, work: Path, lookaheads, rules) -> dict:
    """One generated clip: offline `infer` as the reference; face handling alone (offline's window plan on each
    way of making features); then live's scheme per features, rule and lookahead, against offline."""
    from bench_live import make_clip, predictions, run_offline, spread

    from abaw_rt.store import fill_from_nearest

    clip = make_clip(kind, work / f"{kind}.mp4", seconds)
    run_offline(clip, work / f"offline_{kind}")
    csv_path = work / f"offline_{kind}" / clip.stem / "predictions.csv"
    infer_va, _ = predictions(csv_path)
    check_lookahead = 50
    c = clip_features(clip, lookahead=check_lookahead)
    raw, face = c["offline_raw"], c["offline_face"]
    visual = {"offline": fill_from_nearest(raw["fer"], face),
              "offline_boxes_causal_fill": causal_fill(raw["fer"], face),
              "live_boxes_nearest_fill": fill_from_nearest(c["live"]["fer"], c["live_face"]),
              "live": c["live"]["fer"]}
    rows, handling = [], {}
    with fusion_runner() as runner:
        cfg = runner.header.config
        feats = {k: by_modality(cfg, {"fer": v, "logmel": c["live"]["logmel"] if k.startswith("live") else raw["logmel"]})
                 for k, v in visual.items()}
        ref = offline_stitch(runner, feats["offline"])
        for k in ("offline_boxes_causal_fill", "live_boxes_nearest_fill", "live"):
            handling[k] = agreement(offline_stitch(runner, feats[k]), ref)
        ys = {"offline": window_outputs(runner, feats["offline"]), "live": window_outputs(runner, feats["live"]),
              "live_fill_in_lookahead": window_outputs(runner, feats["live"], face=c["live_face"])}
    for fk, y in ys.items():
        for rule in rules:
            for la in lookaheads:
                rows.append({"features": fk, "rule": rule, "lookahead": la, **agreement(live_merge(y, la, rule), ref)})
    checks = {
        "offline_stitch_vs_infer_csv_max_abs": float(np.abs(np.clip(ref["va"], -1, 1) - infer_va).max()),
        f"live_in_process_lookahead_{check_lookahead}_vs_simulation_max_abs": max(
            float(np.abs(c["live_pred"][h] - live_merge(ys["live"], check_lookahead, PACKAGE_RULE)[h]).max())
            for h in ys["live"]),
        "live_stitcher_vs_simulation_max_abs": {la: check_against_live_stitcher(ys["live"], la) for la in lookaheads},
        "logmel_live_vs_offline_max_abs": float(np.abs(c["live"]["logmel"] - raw["logmel"]).max()),
    }
    return {"clip": kind, "seconds": seconds, "frames": len(face), "offline_spread": spread(csv_path),
            "face_found": {"offline": round(float(face.mean()), 4), "live": round(float(c["live_face"].mean()), 4)},
            "checks": checks, "face_handling_offline_plan": handling, "rows": rows}


def _print_rows(title: str, rows, keys) -> None:
    print(title)
    for r in rows:
        print("  " + "  ".join(f"{k}={r[k]}" for k in keys), flush=True)


def main() -> None:
    import argparse
    import tempfile
    from datetime import datetime, timezone

    from abaw_rt.bench.report import save_report
    from abaw_rt.machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["clips", "truth", "all"], default="all")
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each generated clip")
    ap.add_argument("--videos", type=int, default=40, help="validation sequences (the model card's 40)")
    ap.add_argument("--lookahead", type=int, nargs="+", default=list(LOOKAHEADS))
    ap.add_argument("--rules", nargs="+", choices=sorted(RULES), default=sorted(RULES))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default results/live_context_cpu_<date>.json)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="abaw-rt-live-context-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    result = {"benchmark": "live_context", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(), "load_average_before": [round(x, 2) for x in load_before],
              "config": {"part": args.part, "seconds": args.seconds, "videos": args.videos, "lookaheads": args.lookahead,
                         "rules": args.rules, "package_rule": PACKAGE_RULE, "window": WINDOW, "hop": 1, "threads": 1,
                         "models": "built-in defaults (RetinaFace, FER, log-mel, demo fusion on onnxruntime)",
                         "agreement": "CCC(live, offline): offline predictions are the reference, ΔCCC = CCC - 1"}}
    keys = ["features", "rule", "lookahead", "ccc_valence", "ccc_arousal", "mean_abs_diff_valence",
            "mean_abs_diff_arousal", "expr_agreement"]
    if args.part in ("clips", "all"):
        result["clips"] = {}
        for kind in ("sample", "expressive"):
            r = part_clip(kind, args.seconds, work, args.lookahead, args.rules)
            result["clips"][kind] = r
            print(f"{kind}: checks {r['checks']}; offline spread {r['offline_spread']}", flush=True)
            print(f"  face handling (offline plan): {r['face_handling_offline_plan']}")
            _print_rows(f"{kind}: live scheme against offline", r["rows"], keys)
    if args.part in ("truth", "all"):
        t = part_truth(args.videos, args.lookahead, args.rules)
        result["truth"] = t
        print(f"truth: offline {t['offline']}; offline with causal fill {t['offline_causal_fill']}")
        _print_rows("truth: live", t["rows"], ["features", "rule", "lookahead", "ccc_valence", "ccc_arousal", "expr_f1",
                                               "delta_ccc_valence", "delta_ccc_arousal"])
        _print_rows("truth: one window, by frames after the frame", t["single_window_by_frames_after"],
                    ["frames_after", "ccc_valence", "ccc_arousal", "expr_accuracy"])
        print(f"truth: the best fixed linear merge rule against offline {t['merge_rule_bound_vs_offline']}")
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out or RESULTS / f"live_context_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    save_report(result, out)  # atomically: a stopped run leaves no partial file
    print(f"saved {out}")


if __name__ == "__main__":
    main()
