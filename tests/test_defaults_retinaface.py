"""The default face detector: RetinaFace priors and decoding, the Runner wrapper, and a real face (astronaut)."""

from __future__ import annotations

import numpy as np
import pytest

from abaw_rt import defaults
from abaw_rt.pipeline import retinaface as rf
from abaw_rt.errors import AbawRtError

pytest.importorskip("onnxruntime")
DETECTOR = defaults.DEFAULTS_DIR / defaults.DETECTOR_FILE


def _iou(a, b) -> float:
    from abaw_rt.pipeline.faces import iou

    return iou(np.asarray(a, float), np.asarray(b, float))


def _bgr_input(rgb: np.ndarray) -> np.ndarray:
    x = rgb[..., ::-1].astype(np.float32) - np.array(rf.MEAN_BGR, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class StillFrame:
    """The two members of DecodedFrame that FaceDetector uses, over a still image."""

    def __init__(self, rgb: np.ndarray):
        self.rgb_image = rgb

    @property
    def size(self):
        return self.rgb_image.shape[1], self.rgb_image.shape[0]

    def rgb_at(self, width: int, height: int) -> np.ndarray:
        import cv2

        return cv2.resize(self.rgb_image, (width, height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("hw", [(256, 320), (180, 320), (97, 131)])
def test_priors_match_the_graph_output_count(hw):
    with rf.RetinaFaceRunner(DETECTOR, threads=1) as runner:
        loc, conf, lms = runner.session.run(["loc", "conf", "landmarks"], {"input": np.zeros((1, 3) + hw, np.float32)})
    assert loc.shape[1] == conf.shape[1] == lms.shape[1] == len(rf.priors(*hw))


def test_priors_layout():
    p = rf.priors(64, 96)
    # stride 8: 8 x 12 cells, two sizes each, row-major; the first cell's centre is half a step in
    assert p.shape == (8 * 12 * 2 + 4 * 6 * 2 + 2 * 3 * 2, 4)
    np.testing.assert_allclose(p[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(p[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64])
    np.testing.assert_allclose(p[2, :2], [12 / 96, 4 / 64])  # next cell along x
    np.testing.assert_allclose(p[2 * 12, :2], [4 / 96, 12 / 64])  # next row


def test_decoding_inverts_the_encoding():
    h, w = 128, 160
    prior = rf.priors(h, w)
    k = 37
    box = np.array([30.0, 20.0, 90.0, 100.0])  # x1, y1, x2, y2 in pixels
    cx, cy, bw, bh = (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h, (box[2] - box[0]) / w, (box[3] - box[1]) / h
    loc = np.zeros((len(prior), 4), np.float32)
    loc[k] = [(cx - prior[k, 0]) / (0.1 * prior[k, 2]), (cy - prior[k, 1]) / (0.1 * prior[k, 3]),
              np.log(bw / prior[k, 2]) / 0.2, np.log(bh / prior[k, 3]) / 0.2]
    pts = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float64)
    lms = np.zeros((len(prior), 10), np.float32)
    lms[k] = ((pts / [w, h] - prior[k, :2]) / (0.1 * prior[k, 2:])).ravel()
    conf = np.tile([0.99, 0.01], (len(prior), 1)).astype(np.float32)
    conf[k] = [0.02, 0.98]
    boxes, landmarks = rf.decode(loc, conf, lms, h, w, score_threshold=0.5)
    assert boxes.shape == (1, 5) and landmarks.shape == (1, 10)
    np.testing.assert_allclose(boxes[0, :4], box, atol=1e-3)
    assert boxes[0, 4] == pytest.approx(0.98)
    np.testing.assert_allclose(landmarks[0].reshape(5, 2), pts, atol=1e-3)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.95])
    keep = rf.nms(boxes, scores, 0.4)
    assert list(keep) == [3, 2]  # 3 suppresses 0 (IoU 0.9) and 1 (IoU 0.68); 2 is apart
    rng = np.random.default_rng(0)  # random scenes against a plain greedy pairwise reference
    for _ in range(20):
        xy = rng.uniform(0, 100, (30, 2))
        many = np.concatenate([xy, xy + rng.uniform(5, 40, (30, 2))], axis=1)
        s = rng.uniform(0, 1, 30)
        assert list(rf.nms(many, s, 0.3)) == _greedy_nms(many, s, 0.3)


def _greedy_nms(boxes, scores, threshold):
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        order = [j for j in order if _iou(boxes[i], boxes[j]) <= threshold]
    return keep


def test_finds_the_astronauts_face():
    from abaw_rt.defaults.reference_faces import ASTRONAUT_EYES, ASTRONAUT_FACE_BOX, astronaut

    image = astronaut()
    with rf.RetinaFaceRunner(DETECTOR, threads=1, score_threshold=0.5) as runner:
        out = runner.infer({"input": _bgr_input(image)})
    boxes, lms = out["boxes"][0], out["landmarks"][0].reshape(-1, 5, 2)
    assert len(boxes) == 1  # one face, and the rocket and the flag are not faces
    assert boxes[0, 4] > 0.9
    assert _iou(boxes[0, :4], ASTRONAUT_FACE_BOX) > 0.6
    eyes = lms[0, :2]
    assert np.abs(eyes - np.array(ASTRONAUT_EYES)).max() < 8.0  # pixels, on a face about 100 pixels wide


def test_no_face_in_a_blank_image():
    with rf.RetinaFaceRunner(DETECTOR, threads=1) as runner:
        out = runner.infer({"input": _bgr_input(np.full((256, 320, 3), 128, np.uint8))})
    assert out["boxes"].shape == (1, 0, 5) and out["landmarks"].shape == (1, 0, 10)


def test_default_detector_spec_through_the_pipeline_face_detector():
    """The [detector] of the default spec, run as the pipeline runs it: letterbox, decode, map back to the frame."""
    from abaw_rt.defaults.reference_faces import ASTRONAUT_FACE_BOX, astronaut
    from abaw_rt.pipeline.faces import FaceDetector

    from abaw_rt.pipeline.extractor_spec import default_detector_spec

    spec = default_detector_spec()
    image = astronaut()
    frame_w = 960  # the astronaut on a wider canvas, off-centre: the letterbox must map back correctly
    canvas = np.full((540, frame_w, 3), 90, np.uint8)
    canvas[20:532, 400:912] = image
    runner = rf.RetinaFaceRunner(spec.onnx, threads=1, score_threshold=spec.score_threshold, nms_iou=spec.nms_iou)
    with runner:
        det = FaceDetector(spec, runner)
        det.prepare()
        faces = det.detect(StillFrame(canvas))
    assert len(faces) == 1
    expected = np.array(ASTRONAUT_FACE_BOX) + [400, 20, 400, 20]
    assert _iou(faces[0].box, expected) > 0.5  # detected at 320 x 180 from 960 x 540: a coarser box


class InputShapes(rf.RetinaFaceRunner):
    """The built-in runner, recording the shape of every input it is fed."""

    def _infer(self, feeds, axes):
        self.shapes = getattr(self, "shapes", []) + [next(iter(feeds.values())).shape]
        return super()._infer(feeds, axes)


def _astronaut_frame(width: int, height: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut pasted at (x, y) on a grey frame, and where its face box lands."""
    from abaw_rt.defaults.reference_faces import ASTRONAUT_FACE_BOX, astronaut

    frame = np.full((height, width, 3), 90, np.uint8)
    image = astronaut()[: height - y, : width - x]
    frame[y : y + image.shape[0], x : x + image.shape[1]] = image
    return frame, np.array(ASTRONAUT_FACE_BOX) + [x, y, x, y]


@pytest.mark.parametrize(
    "frame_size, fitted",
    [((960, 540), (192, 320)), ((540, 960), (256, 160)), ((800, 600), (256, 320)), ((1200, 400), (128, 320))],
)
def test_fit_canvas_shrinks_to_the_frame_and_finds_the_same_face(frame_size, fitted):
    """canvas = "fit" (the default spec): the smallest canvas of the frame's aspect, sides rounded up to 32; same
    scale as the fixed 320 x 256 canvas, so the face comes back at the same place with nearly the same score."""
    import dataclasses

    from abaw_rt.pipeline.extractor_spec import Canvas, default_detector_spec
    from abaw_rt.pipeline.faces import FaceDetector

    spec = default_detector_spec()
    assert spec.canvas is Canvas.fit and spec.image.size == (256, 320)
    frame, truth = _astronaut_frame(*frame_size, x=frame_size[0] - 520, y=frame_size[1] - 380)
    found = {}
    for canvas in (Canvas.fit, Canvas.fixed):
        runner = InputShapes(spec.onnx, threads=1, score_threshold=spec.score_threshold, nms_iou=spec.nms_iou)
        with runner:
            det = FaceDetector(dataclasses.replace(spec, canvas=canvas), runner)
            det.prepare()
            found[canvas] = det.detect(StillFrame(frame))
        assert runner.shapes == [(1, 3) + (fitted if canvas is Canvas.fit else (256, 320))]
    fit, fixed = found[Canvas.fit], found[Canvas.fixed]
    assert len(fit) == len(fixed) == 1
    assert _iou(fit[0].box, truth) > 0.5
    assert _iou(fit[0].box, fixed[0].box) > 0.9 and abs(fit[0].score - fixed[0].score) < 0.02


def test_a_graph_that_is_not_retinaface_is_refused(tmp_path):
    from abaw_rt.pipeline.synthetic import blob_detector

    other = blob_detector(tmp_path / "blob.onnx")
    with pytest.raises(AbawRtError, match="RetinaFace graph"):
        rf.RetinaFaceRunner(other).activate()


def test_decoder_key_in_a_user_spec(tmp_path):
    import shutil

    from abaw_rt.pipeline.extractor_spec import DetectorDecoder, load_spec
    from abaw_rt.pipeline.synthetic import write_spec

    shutil.copy(DETECTOR, tmp_path / "rf.onnx")
    spec = load_spec(write_spec(tmp_path / "s.toml", [], {"onnx": "rf.onnx", "decoder": "retinaface",
                                                          "input_size": [128, 128]}))
    assert spec.detector.decoder is DetectorDecoder.retinaface
    with pytest.raises(AbawRtError, match="'decoder' = 'yolo'"):
        load_spec(write_spec(tmp_path / "t.toml", [], {"onnx": "rf.onnx", "decoder": "yolo"}))
