"""Benchmark: INT8 (abaw-rt quantize, budget search) vs FP32 onnxruntime on the paper-size fusion model and FER.

1. A paper-size va checkpoint trained on the synthetic set (made here if missing:
   ``abaw-rt make-synthetic DATA --dims paper`` then ``abaw-rt train -r training/recipes/va.toml --data DATA
   --size paper --epochs 4 --set optim.lr=3e-4 --out RUN``), exported to FP32 ONNX.
2. The INT8 search on the synthetic feature store (|ΔCCC| budget 0.01 per dimension), timed.
3. FP32 vs INT8 latency at B=1 T=300 and B=8 T=300 with 1 and 2 onnxruntime threads; both graphs measured in
   the same run, taking turns in blocks (abaw_rt.bench.measure), so the ratio is fair on a busy machine.
4. |ΔCCC| against the labels of the validation split: whole videos through the inference windows and
   stitching, FP32 and INT8 graph, CCC of each against the labels.
5. Extractors (part ``fer``): the built-in FER model (abaw_rt/defaults/fer_minixception.onnx), calibrated on
   augmented crops of the built-in sample face: INT8 speed-up at B=1 and B=16 and the cosine similarity of its
   outputs with FP32 (search budget cosine 0.99).
6. The paper's reference extractors (part ``zoo``: ``abaw-rt zoo build --size tiny|paper``, random weights):
   the same, on face crops normalised as each spec says, and on speech-like waveforms for wav2vec2.

Targets (issue 14): INT8 >= 1.8x FP32 ORT at both shapes with |ΔCCC| <= 0.01; search <= 10 min.
Each part is saved into the result file as it finishes, with its own load average (the machine may be shared).

    python benchmarks/bench_int8.py [--checkpoint runs/va_paper/best.safetensors --data runs/synth_paper]
        [--parts fusion fer zoo] [--zoo-size tiny|paper] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from abaw_rt.bench.measure import time_in_turns
from abaw_rt.machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SPEEDUP, TARGET_DCCC, TARGET_SEARCH_S = 1.8, 0.01, 600.0


def ensure_checkpoint(ckpt: Path, data: Path, epochs: int) -> dict:
    """Train the benchmark's checkpoint when it is not there yet; returns how it was trained."""
    how = {"data": str(data), "recipe": "training/recipes/va.toml", "size": "paper", "epochs": epochs, "lr": 3e-4}
    if ckpt.is_file():
        return {**how, "trained_here": False}
    if not (data / "features").is_dir():
        subprocess.run(["abaw-rt", "make-synthetic", str(data), "--dims", "paper"], check=True)
    subprocess.run(["abaw-rt", "train", "-r", how["recipe"], "--data", str(data), "--size", "paper", "--epochs",
                    str(epochs), "--set", "optim.lr=3e-4", "--out", str(ckpt.parent)], check=True)
    return {**how, "trained_here": True}


def latency(graphs: dict, feeds: dict, threads: int, args) -> dict:
    """p50 of each graph on the same feeds, in blocks that take turns (``rounds`` times)."""
    from abaw_rt.runners.onnx_generic import OnnxModelRunner

    runners = {k: OnnxModelRunner(p, threads=threads, spin=True) for k, p in graphs.items()}
    for r in runners.values():
        r.activate()
    try:
        timings = time_in_turns(runners, feeds, args.warmup, args.min_iters, args.min_seconds, rounds=args.rounds)
    finally:
        for r in runners.values():
            r.deactivate()
    out = {k: t.to_dict() for k, t in timings.items()}
    out["speedup"] = out["fp32"]["p50_ms"] / out["int8"]["p50_ms"]
    return out


def validation_dccc(fp32: Path, int8: Path, data: Path, header) -> dict:
    """CCC of the FP32 and the INT8 graph against the validation labels (stitched whole videos)."""
    from abaw_rt.pipeline.segments import plan_segments, run_segments
    from abaw_rt.pipeline.stitch import Stitcher
    from abaw_rt.runners.ort_runner import OrtRunner
    from abaw_rt.store import FeatureStore
    from abaw_rt.train.dataset import load_split
    from abaw_rt.train.metrics import va_metrics

    samples = load_split(FeatureStore(data / "features"), data / "annotations/VA_Estimation_Challenge/Validation_Set",
                         "va", header.config, 5)
    scores = {}
    for name, graph in (("fp32", fp32), ("int8", int8)):
        preds, targets = [], []
        with OrtRunner(graph, threads=2) as runner:
            for s in samples:
                plan = plan_segments(s.frames, header.window, header.stride)
                st = Stitcher(s.frames, {"va": 2})
                for seg, out in run_segments(runner, dict(s.inputs), plan, batch=8):
                    st.add(seg.start, {"va": out["va"]})
                preds.append(st.result()["va"])
                targets.append(s.target)
        scores[name] = va_metrics(np.concatenate(preds), np.concatenate(targets))
    d = {k: abs(scores["int8"][k] - scores["fp32"][k]) for k in ("ccc_valence", "ccc_arousal")}
    return {"videos": len(samples), "fp32": scores["fp32"], "int8": scores["int8"], "abs_delta_ccc": d}


def face_crops(n: int, seed: int = 0, size: int = 64, mean=(0.5,) * 3, std=(0.5,) * 3, scale: float = 1 / 255) -> np.ndarray:
    """(n, 3, size, size) extractor inputs: random crops, scales, flips and brightness of the built-in sample
    face, normalised as the extractor's spec says ((pixel * scale - mean) / std; FER: to [-1, 1])."""
    import cv2

    img = cv2.imread(str(Path(__file__).resolve().parents[1] / "abaw_rt/defaults/sample_face.jpg"))[:, :, ::-1]
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    mean, std = np.asarray(mean, np.float32).reshape(3, 1, 1), np.asarray(std, np.float32).reshape(3, 1, 1)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        s = rng.uniform(0.6, 1.0)
        ch, cw = int(h * s), int(w * s)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = cv2.resize(img[y : y + ch, x : x + cw], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        crop = np.clip(crop * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30), 0, 255)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = (crop.transpose(2, 0, 1) * scale - mean) / std
    return out


def waveforms(n: int, length: int, seed: int = 0) -> np.ndarray:
    """(n, length) 16 kHz audio-like inputs: a few harmonics with a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    out = np.empty((n, length), np.float32)
    for i in range(n):
        f0 = rng.uniform(90, 280)
        voice = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) for k in range(1, 6))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t) ** 2
        out[i] = 0.3 * voice * env + rng.normal(0, 0.02, length)
    return out


def search(graph: Path, calib: Path, out: Path, budget: list[str], threads: int) -> dict:
    from abaw_rt.quant.calib import CalibConfig, open_calibration
    from abaw_rt.quant.drift import parse_budget
    from abaw_rt.quant.report import build_report, report_path, search_record, stamp_graph, write_report
    from abaw_rt.quant.search import SearchConfig, search_precision

    t0 = time.perf_counter()
    data = open_calibration(calib, graph, CalibConfig())
    cfg = SearchConfig("int8", parse_budget(budget), threads=threads)
    result = search_precision(graph, out, data, cfg, progress=lambda m: print(f"  [{time.perf_counter() - t0:6.1f}s] {m}", flush=True))
    record = search_record(result, cfg.budget, cfg.quant)
    stamp_graph(out, graph, record)
    report = build_report(result, record, graph, out, data.source, None)
    write_report(report_path(out), report)
    return {**record, "wall_s": time.perf_counter() - t0, "trials": len(result.trials), "calibration": data.source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/va_paper/best.safetensors"))
    ap.add_argument("--data", type=Path, default=Path("runs/synth_paper"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_int8"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--time", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-iters", type=int, default=4)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget", nargs="*", default=["ccc=0.01"])
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="What to measure (default: all).")
    ap.add_argument("--zoo-size", choices=("tiny", "paper"), default="tiny", help="Reference extractors' size (abaw-rt zoo build).")
    ap.add_argument("--out", type=Path, default=None, help="Result file; parts run now replace theirs in it.")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"int8_cpu_{time.strftime('%Y%m%d')}.json"
    result = json.loads(out.read_text()) if out.is_file() else {"kind": "int8"}
    result.update(machine=machine_info(), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    for part in args.parts:
        load = os.getloadavg()
        got = PARTS[part](args)
        key = f"zoo_{args.zoo_size}" if part == "zoo" else part
        result[key] = {**got, "args": {k: str(v) for k, v in vars(args).items()}, "load_average_start": load,
                        "load_average_end": os.getloadavg()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")  # each part saved as it finishes
    print(json.dumps(result.get("fusion", {}).get("targets")), "->", out)


def fusion_bench(args) -> dict:
    """Steps 1-4 of the module docstring: train (if missing), export, search, validation |ΔCCC|, latency."""
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.feeds import example_feeds

    result = {"training": ensure_checkpoint(args.checkpoint, args.data, args.epochs)}
    ckpt = load_checkpoint(args.checkpoint)
    fp32 = args.work / "va_paper.fp32.onnx"
    if not fp32.is_file():
        export_onnx(ckpt, fp32, precision="fp32")
    int8 = args.work / "va_paper.int8.onnx"
    calib = train_split_store(args.data, args.work / "calib_store")
    print("INT8 search on", calib, flush=True)
    result["search"] = search(fp32, calib, int8, args.budget, threads=max(args.threads))
    print(f"search: {result['search']['wall_s']:.1f} s, {len(result['search']['kept_high'])} node(s) kept FP32", flush=True)
    result["validation"] = validation_dccc(fp32, int8, args.data, ckpt.header)
    print("validation |ΔCCC|:", result["validation"]["abs_delta_ccc"], flush=True)
    cells = []
    for threads in args.threads:
        for b in args.batches:
            feeds = example_feeds(ckpt.header, b, args.time, rng=np.random.default_rng(0))
            cell = {"threads": threads, "batch": b, "time": args.time, **latency({"fp32": fp32, "int8": int8}, feeds, threads, args)}
            cells.append(cell)
            print(f"T={args.time} B={b} threads={threads}: fp32 {cell['fp32']['p50_ms']:.1f} ms, int8 "
                  f"{cell['int8']['p50_ms']:.1f} ms, {cell['speedup']:.2f}x", flush=True)
    result["latency"] = cells
    d = result["validation"]["abs_delta_ccc"]
    result["targets"] = {
        "speedup_ge_1.8_all_cells": all(c["speedup"] >= TARGET_SPEEDUP for c in cells),
        "abs_delta_ccc_le_0.01": max(d.values()) <= TARGET_DCCC,
        "search_le_10_min": result["search"]["wall_s"] <= TARGET_SEARCH_S,
    }
    return result


def train_split_store(data: Path, out: Path) -> Path:
    """The training split's videos of ``data``'s feature store, linked into ``out``: calibration and the
    search's held-aside videos never include a validation video (where |ΔCCC| is measured)."""
    src = data / "features"
    labels = (data / "annotations/VA_Estimation_Challenge/Train_Set").glob("*.txt")
    train = {p.stem.removesuffix("_left").removesuffix("_right") for p in labels}  # two-person videos: one store entry
    index = json.loads((src / "store.json").read_text())
    index["videos"] = {v: meta for v, meta in index["videos"].items() if v in train}
    for sub in [d for d in src.iterdir() if d.is_dir()]:
        (out / sub.name).mkdir(parents=True, exist_ok=True)
        for v in index["videos"]:
            link = out / sub.name / f"{v}.npy"
            if (sub / f"{v}.npy").is_file() and not link.exists():
                link.symlink_to((sub / f"{v}.npy").resolve())
    (out / "store.json").write_text(json.dumps(index, indent=1))
    return out


def extractor_bench(name: str, graph: Path, calib: np.ndarray, sample, batches, args) -> dict:
    """Search one extractor (cosine budget 0.99) on ``calib``, then FP32 vs INT8 latency on ``sample(b)``."""
    arr = args.work / f"{name}_calib.npy"
    np.save(arr, calib)
    int8 = args.work / f"{name}.int8.onnx"
    info = search(graph, arr, int8, ["cosine=0.99"], threads=max(args.threads))
    cells = []
    for threads in args.threads:
        for b in batches:
            cells.append({"threads": threads, "batch": b, **latency({"fp32": graph, "int8": int8}, sample(b), threads, args)})
            print(f"{name} B={b} threads={threads}: {cells[-1]['speedup']:.2f}x, cosine {info['drift']['cosine']:.4f}", flush=True)
    return {"graph": str(graph), "cosine": info["drift"]["cosine"], "budget_met": info["budget_met"],
            "kept_high": info["kept_high"], "candidates": info["candidates"], "search_s": info["wall_s"], "latency": cells}


def fer_bench(args) -> dict:
    """The built-in FER model, calibrated on augmented crops of the built-in sample face."""
    fer = Path(__file__).resolve().parents[1] / "abaw_rt/defaults/fer_minixception.onnx"
    return extractor_bench("fer_minixception", fer, face_crops(256), lambda b: {"image": face_crops(b, seed=99)}, (1, 16), args)


def zoo_bench(args) -> dict:
    """The paper's reference extractors (abaw-rt zoo build, random weights, the public files' I/O)."""
    import tomllib

    folder = args.work / f"zoo_{args.zoo_size}"
    if not (folder / "paper-va.toml").is_file():
        subprocess.run(["abaw-rt", "zoo", "build", str(folder), "--size", args.zoo_size], check=True)
    specs = {}
    for toml in sorted(folder.glob("paper-*.toml")):
        specs.update({e["name"]: e for e in tomllib.loads(toml.read_text())["extractor"]})
    out = {"size": args.zoo_size, "weights": "random (zoo build): cosine measures the lowering, not the trained net"}
    for name, spec in specs.items():
        graph = folder / spec["onnx"]
        input_name = _only_input(graph)
        if spec["modality"] == "audio":
            n = int(spec["window"])
            calib, sample, batches = waveforms(64, n), (lambda b, n=n, k=input_name: {k: waveforms(b, n, seed=99)}), (1, 8)
        else:
            size = int(spec["input_size"][0])
            norm = dict(size=size, mean=_triple(spec["mean"]), std=_triple(spec["std"]), scale=float(spec.get("scale", 1 / 255)))
            calib = face_crops(128, **norm)
            sample, batches = (lambda b, norm=norm, k=input_name: {k: face_crops(b, seed=99, **norm)}), (1, 16)
        out[name] = extractor_bench(f"{name}.{args.zoo_size}", graph, calib, sample, batches, args)
    return out


def _triple(v) -> tuple[float, float, float]:
    return tuple(float(x) for x in v) if isinstance(v, list) else (float(v),) * 3


def _only_input(graph: Path) -> str:
    from abaw_rt.runners.ort_runner import open_session

    return open_session(graph, "cpu", threads=1).get_inputs()[0].name


PARTS = {"fusion": fusion_bench, "fer": fer_bench, "zoo": zoo_bench}

if __name__ == "__main__":
    sys.exit(main())
