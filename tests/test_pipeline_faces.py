"""Faces: detection every N frames with interpolation, face choice, letterboxed detection, 5-point alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")

from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from abaw_rt.pipeline.decode import VideoDecoder  # noqa: E402
from abaw_rt.pipeline.extractor_spec import CropMode, DetectorSpec, load_detector  # noqa: E402
from abaw_rt.pipeline.faces import (  # noqa: E402
    ARCFACE_TEMPLATE,
    Face,
    FaceChoice,
    FaceDetector,
    FaceTracker,
    box_landmarks,
    choose,
    crop_transform,
    nms,
    similarity,
    warp,
)
from abaw_rt.runners.onnx_generic import OnnxModelRunner  # noqa: E402


def face(x1, y1, x2, y2, score=0.9) -> Face:
    box = np.array([x1, y1, x2, y2], float)
    return Face(box, box_landmarks(box), score)


class FakeFrame:
    def __init__(self, index):
        self.index = index
        self.time = index / 25

    def release(self):
        pass


def run_tracker(n, every, faces_at, choice=FaceChoice.largest):
    """Push n frames; faces_at(i) gives the detector's faces at frame i. Returns (settled faces, detected frames)."""
    detected = []

    def detect(frame):
        detected.append(frame.index)
        return faces_at(frame.index)

    tr = FaceTracker(detect, every, choice)
    out = []
    for i in range(n):
        out += tr.push(FakeFrame(i))
    out += tr.finish()
    assert [f.index for f, _ in out] == list(range(n))  # every frame settled once, in order
    return [fc for _, fc in out], detected


@pytest.mark.parametrize("n, every", [(1, 5), (5, 5), (6, 5), (23, 5), (10, 1), (7, 10)])
def test_detection_every_n_and_on_the_last_frame(n, every):
    _, detected = run_tracker(n, every, lambda i: [face(i, 0, i + 10, 10)])
    expected = sorted(set(range(0, n, every)) | {n - 1})
    assert detected == expected


def test_boxes_are_interpolated_between_detections():
    faces, _ = run_tracker(11, 5, lambda i: [face(10 * i, 0, 10 * i + 60, 60)])
    xs = [f.box[0] for f in faces]
    np.testing.assert_allclose(xs, [10 * i for i in range(11)])  # linear motion is recovered exactly
    np.testing.assert_allclose(faces[3].landmarks, box_landmarks(np.array([30, 0, 90, 60.0])))


def test_frames_between_a_face_and_no_face_take_the_nearer_detection():
    # detections at 0, 5, 10: a face at 0 and 5, none at 10
    faces, _ = run_tracker(11, 5, lambda i: [face(0, 0, 50, 50)] if i <= 5 else [])
    assert [f is not None for f in faces] == [True] * 6 + [True, True, False, False, False]


def test_a_jump_between_people_is_not_interpolated():
    faces, _ = run_tracker(6, 5, lambda i: [face(0, 0, 20, 20)] if i == 0 else [face(100, 0, 120, 20)])
    assert [f.box[0] for f in faces] == [0, 0, 0, 100, 100, 100]


def test_face_choice_and_track_continuity():
    small_left, big_right = face(0, 0, 20, 20), face(100, 0, 160, 60)
    both = [small_left, big_right]
    assert choose(both, FaceChoice.largest, None) is big_right
    assert choose(both, FaceChoice.left, None) is small_left
    assert choose(both, FaceChoice.right, None) is big_right
    assert choose([], FaceChoice.largest, None) is None
    # once following the small face, a detection overlapping it continues the track even if smaller than another
    moved = face(2, 0, 22, 20)
    assert choose([big_right, moved], FaceChoice.largest, small_left) is moved
    faces, _ = run_tracker(8, 1, lambda i: [face(100, 0, 160, 60), face(i, 0, 20 + i, 20)], FaceChoice.left)
    assert all(f.box[2] - f.box[0] == 20 for f in faces)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    assert list(nms(boxes, np.array([0.8, 0.9, 0.7]), 0.4)) == [1, 2]


def test_similarity_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE
    dst = src @ rot.T + shift
    m = similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_aligned_crop_puts_the_landmarks_on_the_template():
    img = np.zeros((200, 300, 3), np.uint8)
    f = face(120, 40, 200, 120)
    for x, y in f.landmarks.round().astype(int):
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    crop = warp(img, crop_transform(f, CropMode.aligned, (112, 112)), (112, 112))
    for x, y in ARCFACE_TEMPLATE.round().astype(int):
        assert crop[y - 2 : y + 3, x - 2 : x + 3].max() > 100
    box = warp(img, crop_transform(f, CropMode.box, (64, 64), margin=0.0), (64, 64))
    assert box.shape == (64, 64, 3)
    corners = np.array([[120, 40, 1], [200, 120, 1]]) @ crop_transform(f, CropMode.box, (64, 64)).T
    np.testing.assert_allclose(corners, [[0, 0], [64, 64]])  # the box fills the crop


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faces")
    syn.write_video(d / "wide.mp4", frames=12, size=(320, 180), audio=False)
    syn.blob_detector(d / "blob.onnx", size=(96, 128))
    syn.fixed_detector(d / "two.onnx", [(10, 10, 30, 30, 0.9), (80, 5, 120, 45, 0.95), (81, 6, 121, 46, 0.5)])
    return d


def _detector(path: Path) -> FaceDetector:
    det = FaceDetector(load_detector(path), OnnxModelRunner(path).activate())
    det.prepare()
    return det


def test_blob_detector_finds_the_drawn_face_through_the_letterbox(video):
    det = _detector(video / "blob.onnx")
    assert det.image.size == (96, 128)
    truth = syn.moving_face(320, 180, 12)
    for frame in VideoDecoder(video / "wide.mp4", audio=False).frames():
        found = det.detect(frame)
        assert len(found) == 1
        np.testing.assert_allclose(found[0].box, truth(frame.index)[0], atol=4.0)  # 320 -> 128: 2.5 px per input px


def test_fixed_detector_scales_back_and_suppresses_duplicates(video):
    det = _detector(video / "two.onnx")
    frame = next(iter(VideoDecoder(video / "wide.mp4", audio=False).frames()))
    found = det.detect(frame)
    assert len(found) == 2  # the third box overlaps the second and scores lower
    scale = 320 / 128
    np.testing.assert_allclose(found[0].box, np.array([80, 5, 120, 45]) * scale)
    assert choose(found, FaceChoice.left, None).box[0] == pytest.approx(10 * scale)


def test_fit_canvas_is_refused_for_a_graph_of_fixed_size(video):
    import dataclasses

    from abaw_rt.pipeline.extractor_spec import Canvas

    spec = dataclasses.replace(load_detector(video / "blob.onnx"), canvas=Canvas.fit)
    det = FaceDetector(spec, OnnxModelRunner(spec.onnx).activate())
    with pytest.raises(AbawRtError, match=r'blob.onnx.*canvas = "fit" needs an input of any height and width.*\[1, 3, 96, 128\]'):
        det.prepare()


def test_detector_needs_a_size_when_the_graph_has_none(video, tmp_path):
    import onnx

    m = onnx.load(str(video / "blob.onnx"))
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    spec = DetectorSpec(onnx=tmp_path / "dyn.onnx")
    det = FaceDetector(spec, OnnxModelRunner(spec.onnx).activate())
    with pytest.raises(AbawRtError, match="input_size"):
        det.prepare()
