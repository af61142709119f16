"""Fuzzing the decode and infer path: mutated copies of small generated videos through `abaw-rt infer`.

Hypothesis draws a seed video (MP4 with its index at the end, MP4 with its index up front, Matroska), a
display-rotation flag on it (none, 90, 180, 270 degrees, or mirrored, as phones write them) and one to
four mutations (byte flips, overwrites, zeroed / deleted / duplicated ranges, inserted bytes, truncation,
garbage written over frame data mid-stream, an arbitrary display matrix in the MP4 track header); each mutated file goes through a worker process (tests/fuzz_worker.py) with a per-file time
limit. Every file must give complete outputs or one clean error line: zero tracebacks, zero hangs, zero
crashes, nothing left behind on failure.

Quick mode (CI): 20 files. Longer mode, e.g. 500 files with another seed:

    ABAW_RT_FUZZ_CASES=500 ABAW_RT_FUZZ_SEED=7 python -m pytest -q tests/test_reliability_fuzz.py -s

``ABAW_RT_FUZZ_TIMEOUT`` sets the per-file limit (default 60 s); failing inputs are kept in
``ABAW_RT_FUZZ_KEEP`` (default: the test's temporary folder) and named in the failure message.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")
pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from abaw_rt.model.config import TINY, ModelConfig  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from tests.fuzz_worker import FuzzWorker  # noqa: E402
from tests.reliability import remux_faststart, set_mp4_matrix, with_rotation  # noqa: E402

CASES = int(os.environ.get("ABAW_RT_FUZZ_CASES", "20"))
SEED = os.environ.get("ABAW_RT_FUZZ_SEED")
TIMEOUT = float(os.environ.get("ABAW_RT_FUZZ_TIMEOUT", "60"))
SEEDS = ("index_at_end.mp4", "faststart.mp4", "clip.mkv")
ROTATIONS = (None, (90, False), (180, False), (270, False), (0, True), (90, True))  # (degrees, mirrored)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    from abaw_rt.checkpoint import init_checkpoint

    d = tmp_path_factory.mktemp("fuzz")
    kit = syn.tiny_kit(d / "kit")
    cfg = ModelConfig(features=kit["features"], heads=("va", "expr", "au"), **TINY)
    ckpt = init_checkpoint(d / "av.safetensors", cfg, seed=1, window=16, stride=10)
    seeds = d / "seeds"
    seeds.mkdir()
    syn.write_video(seeds / "index_at_end.mp4", frames=20)
    remux_faststart(seeds / "index_at_end.mp4", seeds / "faststart.mp4")
    syn.write_video(seeds / "clip.mkv", frames=20, audio_start=0.2)
    keep = Path(os.environ.get("ABAW_RT_FUZZ_KEEP", d / "failures"))
    keep.mkdir(parents=True, exist_ok=True)
    worker = FuzzWorker(kit["spec"], kit["detector"], ckpt, log=d / "worker.log")
    variants = {}
    for name in SEEDS:
        for rot in ROTATIONS:
            path = seeds / name
            if rot is not None:
                path = with_rotation(path, seeds / f"rot{rot[0]}{'m' if rot[1] else ''}_{name}", *rot)
            variants[(name, rot)] = path.read_bytes()
    state = FuzzState(d, variants, worker, keep)
    yield state
    worker.close()
    print(f"\nfuzz: {dict(state.verdicts)} over {state.count} files, worker restarts {worker.restarts}")


class FuzzState:
    """The seeds, the worker and the tally (a short repr: Hypothesis prints it with a failing example)."""

    def __init__(self, folder: Path, seeds: dict[str, bytes], worker: FuzzWorker, keep: Path):
        self.dir, self.seeds, self.worker, self.keep = folder, seeds, worker, keep
        self.verdicts: Counter = Counter()
        self.count = 0

    def __repr__(self) -> str:
        return f"FuzzState({self.dir}, {self.count} files: {dict(self.verdicts)})"


position = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
head = st.integers(min_value=0, max_value=4095)  # container headers sit in the first bytes (and the index at the end)
where = st.one_of(position, head)
span = st.integers(min_value=1, max_value=4096)
mutation = st.one_of(
    st.tuples(st.just("flip"), where, st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("overwrite"), where, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("zero"), where, span),
    st.tuples(st.just("delete"), where, span),
    st.tuples(st.just("duplicate"), where, span),
    st.tuples(st.just("insert"), where, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), position),
    # mid-stream damage: up to 8 kB of garbage over the frame data, the container's index left intact
    st.tuples(st.just("garbage"), st.floats(min_value=0.2, max_value=0.8), st.integers(16, 8192),
              st.integers(0, 2**32 - 1)),
    # any display matrix (rotations, mirrors, shears, zero, huge values) in the MP4 video track header
    st.tuples(st.just("matrix"), st.just(0), st.one_of(
        st.sampled_from([(0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30), (-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30),
                         (0,) * 9, (46341, 46341, 0, -46341, 46341, 0, 0, 0, 1 << 30)]),
        st.tuples(*[st.integers(-(2**31), 2**31 - 1)] * 9))),
)


def mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for m in mutations:
        kind, at = m[0], m[1]
        pos = int(at * len(buf)) if isinstance(at, float) else at
        pos = min(pos, max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[pos] ^= m[2]
        elif kind == "overwrite":
            buf[pos : pos + len(m[2])] = m[2]
        elif kind == "zero":
            buf[pos : pos + m[2]] = bytes(len(buf[pos : pos + m[2]]))
        elif kind == "delete":
            del buf[pos : pos + m[2]]
        elif kind == "duplicate":
            buf[pos:pos] = buf[pos : pos + m[2]]
        elif kind == "insert":
            buf[pos:pos] = m[2]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "garbage":
            noise = np.random.default_rng(m[3]).integers(0, 256, m[2], dtype=np.uint8).tobytes()
            buf[pos : pos + m[2]] = noise[: len(buf[pos : pos + m[2]])]
        elif kind == "matrix":
            buf = bytearray(set_mp4_matrix(bytes(buf), m[2]))
    return bytes(buf)


def _settings(fn):
    fn = settings(
        max_examples=CASES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        phases=[Phase.generate],  # a failing file is kept and named instead of shrunk (each run costs a decode)
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )(fn)
    return hypothesis.seed(int(SEED))(fn) if SEED is not None else fn


@_settings
@given(seed=st.sampled_from(SEEDS), rotation=st.sampled_from(ROTATIONS),
       mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_videos_give_outputs_or_one_clean_error(fuzz, seed, rotation, mutations):
    fuzz.count += 1
    k = fuzz.count
    data = mutate(fuzz.seeds[(seed, rotation)], mutations)
    name = f"case{k:04d}"
    video = fuzz.dir / f"{name}{Path(seed).suffix}"
    video.write_bytes(data)
    out = fuzz.dir / f"out{k:04d}"
    verdict = fuzz.worker.run(video, out, name, TIMEOUT)
    fuzz.verdicts[verdict["status"]] += 1
    try:
        if verdict["status"] not in ("ok", "error"):
            kept = fuzz.keep / video.name
            shutil.copy(video, kept)
            (kept.with_suffix(".json")).write_text(json.dumps({"seed": seed, "rotation": rotation, "mutations": repr(mutations),
                                                                "verdict": verdict}, indent=1))
            pytest.fail(f"{verdict['status']}: {verdict.get('why', '')} (input kept at {kept}; seed {seed}, "
                        f"rotation {rotation}, "
                        f"mutations {mutations!r})\n{verdict.get('detail', '')}")
    finally:
        video.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
