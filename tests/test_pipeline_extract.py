"""`abaw-rt extract`: stages 1-3 into the feature store, from videos and from Aff-Wild2 image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from abaw_rt.store import FeatureStore  # noqa: E402

cli = CliRunner()


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("extract")
    k = syn.tiny_kit(d / "kit", visual_dims=(8, 5))
    k["dir"] = d
    syn.write_video(d / "clip.mp4", frames=30)
    syn.write_video(d / "mute.mp4", frames=12, audio=False)
    root = d / "cropped_aligned"
    for video, numbers in {"10-60-1280x720": [1, 2, 4, 5, 6, 9], "video7": [1, 2, 3]}.items():
        _image_folder(root / video, numbers)
    k["root"] = root
    return k


def _image_folder(folder: Path, numbers) -> None:
    import cv2

    folder.mkdir(parents=True)
    for n in numbers:
        img = np.full((112, 112, 3), 30, np.uint8)
        syn.draw_face(img, (20, 20, 92, 92), tone=120 + 12 * n)
        cv2.imwrite(str(folder / f"{n:05d}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def extract(kit, inputs, out, *extra, detector=True):
    args = ["extract", *map(str, inputs), "--out", str(out), "--extractors", str(kit["spec"])]
    if detector:
        args += ["--detector", str(kit["detector"])]
    return cli.invoke(app, args + [str(x) for x in extra])


def test_extract_from_a_video_matches_the_inference_features(kit, tmp_path):
    from abaw_rt.pipeline.extractor_spec import load_detector, load_spec
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources

    store_dir = tmp_path / "store"
    res = extract(kit, [kit["dir"] / "clip.mp4"], store_dir, "--json")
    assert res.exit_code == 0, res.output
    store = FeatureStore(store_dir)
    assert store.videos() == ["clip"]
    assert store.extractors() == {
        "vis0": {"dim": 8, "modality": "visual"},
        "vis1": {"dim": 5, "modality": "visual"},
        "aud": {"dim": 4, "modality": "audio"},
    }
    stored = store.read("clip", ["vis0", "vis1", "aud"])
    assert stored.features["vis0"].shape == (30, 8) and stored.face_found.all() and stored.fps == pytest.approx(25.0)
    (src,) = collect_sources([kit["dir"] / "clip.mp4"])
    with Pipeline(load_spec(kit["spec"]), PipelineConfig(), None, load_detector(kit["detector"])) as p:
        live = p.features(src)
    for name in ("vis0", "vis1", "aud"):
        np.testing.assert_allclose(stored.features[name], live.features[name], rtol=1e-6)
    assert json.loads(res.stdout)["videos"][0]["stages"]["write"]["calls"] == 1


def test_extract_from_aligned_image_folders_needs_no_detector(kit, tmp_path):
    store_dir = tmp_path / "store"
    res = extract(kit, [kit["root"]], store_dir, detector=False)
    assert res.exit_code == 0, res.output
    store = FeatureStore(store_dir)
    assert store.videos() == ["10-60-1280x720", "video7"]
    raw = store.read("10-60-1280x720", ["vis0"], fill_missing_faces=False)
    assert raw.face_found.tolist() == [True, True, False, True, True, True, False, False, True]
    assert np.all(raw.features["vis0"][~raw.face_found] == 0)  # stored as found; the policy applies at read time
    filled = store.read("10-60-1280x720", ["vis0"])
    np.testing.assert_array_equal(filled.features["vis0"][2], raw.features["vis0"][1])  # ties: the earlier face
    np.testing.assert_array_equal(filled.features["vis0"][6], raw.features["vis0"][5])
    np.testing.assert_array_equal(filled.features["vis0"][7], raw.features["vis0"][8])
    assert "aud" not in store.extractors()  # image folders carry no audio
    rgb = filled.features["vis0"]
    assert len(np.unique(rgb[raw.face_found].round(4), axis=0)) == raw.face_found.sum()  # each image its own features


def test_unreadable_image_in_a_folder(kit, tmp_path):
    folder = tmp_path / "vid"
    _image_folder(folder, [1, 2])
    (folder / "00003.jpg").write_text("not a jpeg")
    res = extract(kit, [folder], tmp_path / "store", detector=False)
    assert res.exit_code == 2 and "00003.jpg" in res.stderr and "not a readable image" in res.stderr
    assert not (tmp_path / "store" / "vis0").exists() and FeatureStore(tmp_path / "store").videos() == []


def test_extract_adds_to_an_existing_store_and_skips_missing_audio(kit, tmp_path):
    store_dir = tmp_path / "store"
    assert extract(kit, [kit["root"] / "video7"], store_dir, detector=False).exit_code == 0
    res = extract(kit, [kit["dir"] / "mute.mp4"], store_dir, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["videos"][0]["audio"]["skipped_extractors"] == ["aud"]
    store = FeatureStore(store_dir)
    assert store.videos() == ["mute", "video7"]
    assert store.read("mute", ["vis0", "vis1"]).features["vis1"].shape == (12, 5)


def test_extract_errors(kit, tmp_path):
    res = extract(kit, [kit["dir"] / "clip.mp4"], tmp_path / "builtin", "--json", detector=False)
    assert res.exit_code == 0, res.output  # no [detector] in the spec, no --detector: the built-in RetinaFace
    assert json.loads(res.stdout)["videos"][0]["detector"].endswith("retinaface_mnet025.onnx")
    not_a_store = tmp_path / "other"
    not_a_store.mkdir()
    (not_a_store / "store.json").write_text('{"format": "something-else"}')
    res = extract(kit, [kit["dir"] / "clip.mp4"], not_a_store)
    assert res.exit_code == 2 and "not an abaw-rt feature store" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = extract(kit, [empty], tmp_path / "s")
    assert res.exit_code == 2 and "holds no videos" in res.stderr
    assert not (tmp_path / "s").exists()
