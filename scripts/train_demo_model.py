"""Build script: train the built-in demo fusion model on synthetic data and export its ONNX graph.

Makes ``abaw_rt/defaults/demo.safetensors`` (an abaw-rt checkpoint: weights + JSON header with config,
normalisation, window/stride and provenance) and ``abaw_rt/defaults/demo.fp32.onnx`` (``abaw-rt export``'s
graph, parity-checked against torch at several lengths). The data are the synthetic sequences of
``abaw_rt.defaults.demo_data`` in the default extractors' feature space (``fer`` 7 + ``logmel`` 65); the
model is the paper's architecture at a small width (``abaw_rt.train.demo.DEMO_WIDTHS``) with
heads VA and EXPR, trained in one run by ``abaw_rt.train.loop.train`` (what ``abaw-rt train`` runs), the two
losses summed (``abaw_rt.train.demo.demo_recipe``). Seeded: on CPU the same arguments and thread count give the same weights (the shipped
model: the defaults with --threads 2).

A demonstration of the product, NOT a reproduction of the paper's numbers (README, "Model card").

    pip install torch==2.13.0 && pip install -e '.[torch]'
    python scripts/train_demo_model.py --threads 2 --epochs 20   # the shipped model; 10-20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abaw_rt import __version__  # noqa: E402
from abaw_rt.checkpoint import CheckpointHeader, load_checkpoint, save_checkpoint  # noqa: E402
from abaw_rt.io import file_sha256  # noqa: E402
from abaw_rt.defaults import CHECKPOINT_FILE, DEFAULTS_DIR, FER_FILE, LOGMEL_FILE  # noqa: E402
from abaw_rt.defaults.demo_data import CIRCUMPLEX, FER_TO_ABAW, DemoDataConfig, make_dataset  # noqa: E402
from abaw_rt.train.demo import DEMO_ATTENTION_BAND  # noqa: E402


EXPR_7 = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")  # the labels that occur


def _f1_7(m: dict) -> float:
    """EXPR macro F1 over the 7 labels the synthetic set uses ("Other" never occurs)."""
    return sum(m[f"expr_f1_{n}"] for n in EXPR_7) / len(EXPR_7)


def _demo_metrics(m: dict) -> dict:
    """The model card's figures from the run's validation metrics."""
    return {
        "ccc_valence": m["va_ccc_valence"],
        "ccc_arousal": m["va_ccc_arousal"],
        "ccc_mean": m["va_score"],
        "expr_f1": m["expr_f1"],  # macro over ABAW's 8 labels ("Other" never occurs: its F1 counts as 0)
        "expr_f1_7": _f1_7(m),
        "expr_accuracy": m["expr_accuracy"],
        "score": m["score"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULTS_DIR / CHECKPOINT_FILE, help="checkpoint path (.safetensors)")
    ap.add_argument("--videos", type=int, default=200, help="synthetic sequences (80 %% train, 20 %% validation)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=12.0, help="shortest synthetic sequence")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="longest synthetic sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--attention-band", type=int, default=DEMO_ATTENTION_BAND,
                    help="attention reaches +-N frames in each layer (0: the whole window, as the paper)")
    ap.add_argument("--no-export", action="store_true", help="skip the ONNX export (tests)")
    args = ap.parse_args(argv)

    import torch

    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.export.onnx_export import export_onnx
    from abaw_rt.train.demo import demo_data, demo_recipe
    from abaw_rt.train.loop import Reporter, train

    t0 = time.perf_counter()
    data_cfg = DemoDataConfig(args.videos, args.min_seconds, args.max_seconds, seed=args.seed)
    videos = make_dataset(data_cfg)
    n_val = max(1, args.videos // 5)
    train_videos, val_videos = videos[:-n_val], videos[-n_val:]
    frames = sum(v.frames for v in videos)
    print(f"synthetic set: {len(train_videos)} train + {len(val_videos)} validation sequences, {frames:,} frames "
          f"({time.perf_counter() - t0:.0f} s)")

    cfg = demo_recipe(epochs=args.epochs, seed=args.seed, threads=args.threads,
                      attention_band=args.attention_band or None)

    class Print(Reporter):
        def epoch_end(self, r):
            m = r.metrics
            print(f"epoch {r.epoch:3d}  loss {r.train_loss:.3f}  CCC V {m['va_ccc_valence']:.3f} "
                  f"A {m['va_ccc_arousal']:.3f}  EXPR F1(8) {m['expr_f1']:.3f} F1(7) {_f1_7(m):.3f} "
                  f"acc {m['expr_accuracy']:.3f}  {r.seconds:.0f} s{'  *' if r.best else ''}", flush=True)

    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg, Path(run_dir), reporter=Print(), data=demo_data(train_videos, val_videos))
        best = load_checkpoint(result.best_path)
    extractor_sha = {n: file_sha256(DEFAULTS_DIR / n) for n in (FER_FILE, LOGMEL_FILE)}
    metrics = _demo_metrics(result.best_metrics)
    header = CheckpointHeader(
        config=best.header.config,
        normalization=best.header.normalization,
        window=cfg.windows.window,
        stride=cfg.windows.stride,
        fps=None,  # trained on 25 and 30 fps sequences
        provenance={
            "created_by": f"abaw-rt {__version__} scripts/train_demo_model.py",
            "trained": True,
            "demo": True,
            "note": "built-in DEMO model trained on synthetic data in the default extractors' feature space; "
            "not trained on Aff-Wild2 and not a reproduction of the paper (README, 'Model card')",
            "data": {
                "kind": "synthetic (abaw_rt.defaults.demo_data)",
                "config": {"videos": data_cfg.videos, "min_seconds": data_cfg.min_seconds,
                           "max_seconds": data_cfg.max_seconds, "fps_choices": list(data_cfg.fps_choices),
                           "seed": data_cfg.seed},
                "train_videos": len(train_videos),
                "val_videos": len(val_videos),
                "frames": frames,
                "fer_to_abaw": list(FER_TO_ABAW),
                "circumplex": {k: list(v) for k, v in CIRCUMPLEX.items()},
            },
            "extractors": {"fer": f"{FER_FILE} sha256 {extractor_sha[FER_FILE]}",
                           "logmel": f"{LOGMEL_FILE} sha256 {extractor_sha[LOGMEL_FILE]}"},
            "train_config": cfg.to_dict(),
            "best_epoch": result.best_epoch,
            "metrics": {k: round(v, 4) for k, v in metrics.items()},
            "metrics_on": "synthetic validation sequences (stitched, pooled over frames)",
            "history": [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.row().items()} for r in result.history
            ],
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    state = dict(best.tensors)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        save_checkpoint(staged, header, state)
        if not args.no_export:
            ckpt = load_checkpoint(staged)
            res = export_onnx(ckpt, onnx_path_for(staged, "fp32"), precision="fp32")
            print(f"exported {res.path.name}: checked at lengths {list(res.checked_lengths)}, max |ONNX - torch| "
                  f"{res.max_abs_error:.1e}")
        for f in sorted(Path(tmp).iterdir(), key=lambda p: p.suffix == ".safetensors"):  # graph first, checkpoint last
            f.replace(out.parent / f.name)
    print(f"wrote {out} (best epoch {result.best_epoch}: " +
          ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + f"); {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
