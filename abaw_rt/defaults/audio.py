"""Defaults layer: log-mel filterbank + log-energy audio features in numpy, and the same maths as an ONNX graph.

One feature vector per 25 ms window (400 samples at 16 kHz), VGGish-style (Hershey et al., ICASSP 2017):
periodic Hann window, |FFT| over 512 points, 64 HTK-mel bands from 125 to 7500 Hz, ``log(mel + 0.01)``; plus
the log mean energy of the window, ``log(mean(x^2) + 1e-8)`` (floor about -80 dBFS). 65 values.

The pipeline runs extractors as ONNX graphs (``abaw_rt.pipeline.extractors``): windows every 10 ms (hop 160)
are laid on the video's clock and stretched to frames by nearest timestamp, as the authors did with
their audio features. ``build_logmel_onnx`` writes the graph the default extractor spec names; the numpy
``log_mel`` is its reference (and what ``scripts/train_demo_model.py`` uses to make training data). The
graph computes its DFT matrices from Range/Mod/Cos/Sin at load time, so the file stays about 70 kB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # the pipeline's audio rate (Zhou et al. 2023, pre-processing)
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms: the spec's hop between windows
N_FFT = 512  # the window zero-padded to 512 points (VGGish)
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0  # VGGish's band edges
LOG_OFFSET = 0.01  # added to mel magnitudes before the log (VGGish)
ENERGY_FLOOR = 1e-8  # added to the mean energy before the log
DIM = N_MELS + 1
FEATURE_NAMES = tuple(f"mel{i:02d}" for i in range(N_MELS)) + ("log_energy",)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE, fmin: float = FMIN,
               fmax: float = FMAX) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular weights, computed in mel space as VGGish's mel_features does."""
    bins = n_fft // 2 + 1
    bin_mel = hz_to_mel(np.linspace(0.0, rate / 2, bins))
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    w = np.empty((bins, n_mels))
    for i in range(n_mels):
        lo, mid, hi = edges[i : i + 3]
        w[:, i] = np.maximum(0.0, np.minimum((bin_mel - lo) / (mid - lo), (hi - bin_mel) / (hi - mid)))
    w[0, :] = 0.0  # the DC bin carries no band
    return w.astype(np.float32)


def hann(n: int = WINDOW) -> np.ndarray:
    """Periodic Hann window (the STFT convention)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def log_mel(windows: np.ndarray) -> np.ndarray:
    """(B, 400) float waveform windows (16 kHz, -1..1) -> (B, 65) float32: 64 log-mel values and the log energy."""
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != WINDOW:
        raise ValueError(f"windows: shape {x.shape}, expected (B, {WINDOW})")
    spectrum = np.abs(np.fft.rfft(x * hann(), n=N_FFT, axis=1))
    mel = spectrum @ mel_matrix().astype(np.float64)
    energy = np.mean(x * x, axis=1, keepdims=True)
    return np.hstack([np.log(mel + LOG_OFFSET), np.log(energy + ENERGY_FLOOR)]).astype(np.float32)


def frame_times_features(wave: np.ndarray, times: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Features of the 25 ms window centred at each time (seconds) of a mono waveform; silence outside it.

    With ``times`` on a 10 ms grid this is the pipeline's audio feature track before stretching to frames.
    """
    wave = np.asarray(wave, dtype=np.float32)
    start = np.round(np.asarray(times) * rate).astype(np.int64) - WINDOW // 2
    pad_lo = int(max(0, -start.min())) if len(start) else 0
    pad_hi = int(max(0, start.max() + WINDOW - len(wave))) if len(start) else 0
    padded = np.concatenate([np.zeros(pad_lo, np.float32), wave, np.zeros(pad_hi, np.float32)])
    idx = (start + pad_lo)[:, None] + np.arange(WINDOW)[None, :]
    return log_mel(padded[idx])


def build_logmel_onnx(path: Path, opset: int = 17) -> Path:
    """Write the log-mel + energy extractor graph: input ``audio`` (batch, 400) -> output ``features`` (batch, 65).

    The same maths as ``log_mel`` (float32): the real and imaginary DFT matrices (400 x 257) are built in-graph
    from integer ``n * k mod 512`` (exact angles), Cos and Sin; onnxruntime folds them once at load.
    """
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    def const(name, arr):
        return numpy_helper.from_array(np.asarray(arr), name)

    bins = N_FFT // 2 + 1
    inits = [
        const("hann", hann()),
        const("mel_w", mel_matrix()),
        const("n_end", np.array(WINDOW, np.int64)),
        const("k_end", np.array(bins, np.int64)),
        const("zero_i", np.array(0, np.int64)),
        const("one_i", np.array(1, np.int64)),
        const("n_fft", np.array(N_FFT, np.int64)),
        const("ax0", np.array([0], np.int64)),
        const("ax1", np.array([1], np.int64)),
        const("two_pi_over_n", np.array(2 * np.pi / N_FFT, np.float32)),
        const("log_offset", np.array(LOG_OFFSET, np.float32)),
        const("energy_floor", np.array(ENERGY_FLOOR, np.float32)),
    ]
    n = helper.make_node
    nodes = [
        # DFT matrices: angle[n, k] = 2 pi (n k mod N) / N, exact in integers before the float cast
        n("Range", ["zero_i", "n_end", "one_i"], ["n_idx"]),
        n("Range", ["zero_i", "k_end", "one_i"], ["k_idx"]),
        n("Unsqueeze", ["n_idx", "ax1"], ["n_col"]),
        n("Unsqueeze", ["k_idx", "ax0"], ["k_row"]),
        n("Mul", ["n_col", "k_row"], ["nk"]),
        n("Mod", ["nk", "n_fft"], ["nk_mod"]),
        n("Cast", ["nk_mod"], ["nk_f"], to=T.FLOAT),
        n("Mul", ["nk_f", "two_pi_over_n"], ["angle"]),
        n("Cos", ["angle"], ["dft_re"]),
        n("Sin", ["angle"], ["dft_im"]),
        # windowed magnitude spectrum -> mel -> log
        n("Mul", ["audio", "hann"], ["xw"]),
        n("MatMul", ["xw", "dft_re"], ["re"]),
        n("MatMul", ["xw", "dft_im"], ["im"]),
        n("Mul", ["re", "re"], ["re2"]),
        n("Mul", ["im", "im"], ["im2"]),
        n("Add", ["re2", "im2"], ["power"]),
        n("Sqrt", ["power"], ["magnitude"]),
        n("MatMul", ["magnitude", "mel_w"], ["mel"]),
        n("Add", ["mel", "log_offset"], ["mel_off"]),
        n("Log", ["mel_off"], ["log_mel"]),
        # log mean energy
        n("Mul", ["audio", "audio"], ["sq"]),
        n("ReduceMean", ["sq"], ["energy"], axes=[1], keepdims=1),
        n("Add", ["energy", "energy_floor"], ["energy_off"]),
        n("Log", ["energy_off"], ["log_energy"]),
        n("Concat", ["log_mel", "log_energy"], ["features"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "abaw_rt_logmel",
        [helper.make_tensor_value_info("audio", T.FLOAT, ["batch", WINDOW])],
        [helper.make_tensor_value_info("features", T.FLOAT, ["batch", DIM])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="abaw-rt")
    model.ir_version = 8  # readable by onnxruntime >= 1.14 and TensorRT 8.6+
    model.doc_string = (
        f"log-mel ({N_MELS} HTK bands {FMIN:g}-{FMAX:g} Hz, |FFT| {N_FFT}, periodic Hann {WINDOW}, log(mel + "
        f"{LOG_OFFSET:g})) + log mean energy, per {WINDOW}-sample window of 16 kHz mono audio"
    )
    helper.set_model_props(model, {"abaw_rt.feature_names": ",".join(FEATURE_NAMES)})
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    from abaw_rt.io import atomic_write_bytes

    return atomic_write_bytes(Path(path), data)
