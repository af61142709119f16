"""Reliability of `abaw-rt infer` on bad, odd and hostile videos: one test per case, through the CLI.

Every refusal is one line on stderr naming the file and what was expected, exit code 2, no traceback and
no output file; every odd-but-valid video (one frame, no audio, VFR, late audio, 8K) gives complete outputs.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")
pytest.importorskip("torch")

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from tests.reliability import (  # noqa: E402
    assert_clean_failure,
    audio_only,
    files_under,
    infer_kit,
    remux_faststart,
    snapshot,
    top_level_atoms,
    zero_frame_video,
)

cli = CliRunner()
N = 40  # frames of the main test video
W, S = 16, 10  # segment window and stride of the test checkpoints


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("rel_infer")
    k = infer_kit(d, W, S)
    v = d / "videos"
    v.mkdir()
    k["main"] = syn.write_video(v / "main.mp4", frames=N)
    k["faststart"] = remux_faststart(k["main"], v / "faststart.mp4")
    return k


def infer(kit, videos, out, *extra, checkpoint="av"):
    args = ["infer", *map(str, videos), "--out", str(out), "--extractors", str(kit["spec"])]
    args += ["--detector", str(kit["detector"]), "--backend", "torch", "--checkpoint", str(kit[checkpoint])]
    return cli.invoke(app, args + [str(x) for x in extra])


def ok(res) -> dict:
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return json.loads(res.stdout)["videos"][0] if res.stdout.lstrip().startswith("{") else {}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_complete(out: Path, name: str, frames: int, heads=("VA", "EXPR", "AU")) -> None:
    folder = out / name
    want = {f"{name}.{h}.txt" for h in heads} | {"predictions.csv", "report.json"}
    assert want <= {p.name for p in folder.iterdir()}, sorted(folder.iterdir())
    assert len(rows(folder / "predictions.csv")) == frames
    for h in heads:
        assert len((folder / f"{name}.{h}.txt").read_text().splitlines()) == frames + 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


# -- inputs that are refused ---------------------------------------------------------------------------
def test_missing_path(kit, tmp_path):
    res = infer(kit, [tmp_path / "nowhere.mp4"], tmp_path / "out")
    assert_clean_failure(res, "nowhere.mp4", "no such file or folder")
    assert files_under(tmp_path / "out") == []


def test_folder_with_no_videos(kit, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a video")
    (folder / "clip.mp4.part").write_bytes(b"\0" * 100)
    res = infer(kit, [folder], tmp_path / "out")
    assert_clean_failure(res, "docs", "holds no videos")
    assert files_under(tmp_path / "out") == []


def test_text_file_named_mp4(kit, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are meeting notes, not a video\n" * 20)
    res = infer(kit, [text], tmp_path / "out")
    assert_clean_failure(res, "notes.mp4", "not a readable video")
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("layout", ["moov_at_end", "faststart"])
def test_truncated_mp4_at_several_offsets(kit, tmp_path, layout):
    """Cut at 0, 16 bytes, 10..90 % and at five places inside the index ('moov'): a clean error, or (only when
    the cut spared the index and >= 90 % of the frames) complete outputs for the frames that remain."""
    src = kit["main"] if layout == "moov_at_end" else kit["faststart"]
    data = src.read_bytes()
    atoms = top_level_atoms(src)
    moov, mdat = atoms["moov"], atoms["mdat"]
    moov_end = min([o for o in atoms.values() if o > moov] + [len(data)])
    inside_index = [moov + int((moov_end - moov) * f) for f in (0.02, 0.25, 0.5, 0.75, 0.95)]
    offsets = sorted({0, 16, *(int(len(data) * f) for f in (0.1, 0.3, 0.5, 0.7, 0.9)), *inside_index, len(data) - 300})
    out = tmp_path / "out"
    refused = []
    for off in offsets:
        cut = tmp_path / f"cut_{off}.mp4"
        cut.write_bytes(data[:off])
        res = infer(kit, [cut], out, "--no-plot")
        if res.exit_code == 0:
            frames = len(rows(out / cut.stem / "predictions.csv"))
            assert 0.9 * N <= frames <= N, (off, frames)
            assert_complete(out, cut.stem, frames)
        else:
            assert_clean_failure(res, cut.name)
            assert not (out / cut.stem).exists()
            refused.append(off)
    assert not [f for f in files_under(out) if f.startswith(".")]  # no staging folder left
    # cuts that lose the index, or most of the frames, must be refused
    if layout == "moov_at_end":
        must_fail = [o for o in offsets if o < moov_end - 500]
    else:
        must_fail = [o for o in offsets if o < mdat + 0.5 * (len(data) - mdat)]
    assert set(must_fail) <= set(refused), (must_fail, refused)


def test_audio_only_file(kit, tmp_path):
    path = audio_only(tmp_path / "speech.mp4")
    res = infer(kit, [path], tmp_path / "out")
    assert_clean_failure(res, "speech.mp4", "has no video stream")
    assert files_under(tmp_path / "out") == []


def test_zero_decodable_frames(kit, tmp_path):
    path = zero_frame_video(tmp_path / "empty.mkv")
    res = infer(kit, [path], tmp_path / "out", checkpoint="vis")
    assert_clean_failure(res, "empty.mkv", "no decodable video frames")
    assert files_under(tmp_path / "out") == []


def test_no_face_anywhere(kit, tmp_path):
    path = syn.write_video(tmp_path / "wall.mp4", frames=15, faces=lambda i: [])
    res = infer(kit, [path], tmp_path / "out")
    assert_clean_failure(res, "wall.mp4", "no face found in any of its 15 frames")
    assert files_under(tmp_path / "out") == []


def test_no_audio_track_with_an_audio_model(kit, tmp_path):
    silent = syn.write_video(tmp_path / "silent.mp4", frames=12, audio=False)
    res = infer(kit, [kit["main"], silent], tmp_path / "out")
    assert_clean_failure(res, "silent.mp4", "has no audio track", "'aud'")
    assert files_under(tmp_path / "out") == []  # main.mp4 was not processed either: inputs are checked first


@pytest.mark.parametrize(
    "option, value, needles",
    [
        ("--window", "0", ["'--window'", "greater than or equal to 1"]),
        ("--stride", str(W + 1), [f"--stride {W + 1}", f"expected 1..window ({W})"]),
        ("--batch", "0", ["'--batch'", "greater than or equal to 1"]),
        ("--detect-every", "0", ["'--detect-every'", "greater than or equal to 1"]),
        ("--threads", "-2", ["'--threads'", "greater than or equal to 1"]),
    ],
)
def test_options_out_of_range(kit, tmp_path, option, value, needles):
    res = infer(kit, [kit["main"]], tmp_path / "out", option, value)
    assert_clean_failure(res, *needles)
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("case", ["corrupt", "architecture"])
def test_bad_checkpoint(kit, tmp_path, case):
    from abaw_rt.checkpoint import load_checkpoint, save_checkpoint

    bad = tmp_path / f"{case}.safetensors"
    if case == "corrupt":
        bad.write_bytes(kit["av"].read_bytes()[:3000])
    else:  # the audio-visual model's header with the visual-only model's weights
        save_checkpoint(bad, load_checkpoint(kit["av"]).header, load_checkpoint(kit["vis"]).tensors)
    res = cli.invoke(app, ["infer", str(kit["main"]), "--out", str(tmp_path / "out"), "--checkpoint", str(bad),
                           "--backend", "torch", "--extractors", str(kit["spec"]), "--detector", str(kit["detector"])])
    expected = "not a readable safetensors file" if case == "corrupt" else "weights do not match its model config"
    assert_clean_failure(res, bad.name, expected)
    assert files_under(tmp_path / "out") == []


# -- odd but valid videos: complete outputs --------------------------------------------------------------
def test_single_frame(kit, tmp_path):
    path = syn.write_video(tmp_path / "still.mp4", frames=1)
    report = ok(infer(kit, [path], tmp_path / "out", "--json"))
    assert report["frames"] == 1 and report["segments"]["count"] == 1
    assert_complete(tmp_path / "out", "still", 1)


def test_no_audio_track_with_a_visual_model(kit, tmp_path):
    silent = syn.write_video(tmp_path / "silent.mp4", frames=12, audio=False)
    report = ok(infer(kit, [silent], tmp_path / "out", "--json", checkpoint="vis"))
    assert report["audio"]["track"] is False and report["frames"] == 12
    assert_complete(tmp_path / "out", "silent", 12, heads=("EXPR",))


def test_variable_frame_rate(kit, tmp_path):
    path = syn.write_video(tmp_path / "vfr.mp4", frames=30, vfr=True)
    report = ok(infer(kit, [path], tmp_path / "out", "--json", "--no-plot"))
    assert_complete(tmp_path / "out", "vfr", 30)
    times = [float(r["time"]) for r in rows(tmp_path / "out" / "vfr" / "predictions.csv")]
    expected = np.cumsum([0.0] + [(2.0 if i % 2 else 1.0) / 25.0 for i in range(29)])
    np.testing.assert_allclose(times, expected, atol=1e-4)  # real timestamps, not index / fps
    assert report["audio"]["frame_coverage"] == 1.0


def test_audio_starting_seconds_late(kit, tmp_path):
    path = syn.write_video(tmp_path / "late.mp4", frames=100, audio_start=2.0)  # 4 s of video, audio from 2 s
    report = ok(infer(kit, [path], tmp_path / "out", "--json", "--no-plot"))
    assert_complete(tmp_path / "out", "late", 100)
    assert report["audio"]["start_s"] == pytest.approx(2.0, abs=0.05)
    assert report["audio"]["frame_coverage"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.slow
def test_8k_video_is_scaled_down_not_held_full_size(kit, tmp_path):
    """An 8K clip runs with frames scaled to 1920 px when decoded; peak memory stays near a small clip's.

    Held at full size, the prefetch queue and one detection interval of 8K frames would be about
    13 x (100 MB RGB + 50 MB YUV): well above 1 GB. Both runs go through a fresh process (`abaw-rt infer`).
    """
    big = syn.write_video(tmp_path / "uhd.mp4", frames=5, size=(7680, 4320), audio=False,
                          faces=lambda i: [(3000.0, 1500.0, 4800.0, 3300.0)])
    small = syn.write_video(tmp_path / "small.mp4", frames=5, audio=False)
    peaks = {}
    for video in (small, big):
        out = tmp_path / f"out_{video.stem}"
        cmd = [sys.executable, "-c", "from abaw_rt.cli import run; run()", "infer", str(video), "--out", str(out),
               "--checkpoint", str(kit["vis"]), "--backend", "torch", "--extractors", str(kit["spec"]),
               "--detector", str(kit["detector"]), "--no-plot", "--json"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)["videos"][0]
        peaks[video.stem] = report["peak_rss_mb"]
        assert_complete(out, video.stem, 5, heads=("EXPR",))
        if video is big:
            assert report["decode"]["size"] == [7680, 4320] and report["decode"]["scaled_to"] == [1920, 1080]
            assert report["faces"]["found"] == 5
    print(f"peak RSS: 8K clip {peaks['uhd']:.0f} MB, 160x120 clip {peaks['small']:.0f} MB")
    assert peaks["uhd"] - peaks["small"] < 400, peaks


# -- output names from hostile video names ---------------------------------------------------------------
@pytest.mark.parametrize(
    "filename, expected",
    [
        ("..mp4", "_"),  # stem '.': the output folder itself
        ("...mp4", "__"),  # stem '..': the folder above it
        (".hidden.mp4", "_hidden"),
        ("bell\x07and\nnewline\x1b[31m.mp4", "bell_and_newline_[31m"),
        ("x" * 240 + ".mp4", "x" * 160),  # cut to the name limit (staging adds to it)
    ],
)
def test_output_names_cannot_escape_or_clobber(kit, tmp_path, filename, expected):
    out = tmp_path / "out" / "results"
    (out / "other_video").mkdir(parents=True)
    (out / "other_video" / "keep.txt").write_text("an earlier run's output")
    (tmp_path / "out" / "sibling.txt").write_text("beside the output folder")
    before = snapshot(tmp_path / "out")
    video = tmp_path / "in" / filename
    video.parent.mkdir()
    video.write_bytes(kit["main"].read_bytes())
    ok(infer(kit, [video], out, "--no-plot"))
    assert sorted(p.name for p in out.iterdir()) == sorted(["other_video", expected])
    assert_complete(out, expected, N)
    after = snapshot(tmp_path / "out")
    assert {k: v for k, v in after.items() if not k.startswith(f"results/{expected}/")} == before
