"""Pipeline layer: loading and releasing the face detector and feature extractors a pipeline runs."""

from __future__ import annotations


def load_detector(spec, provider: str, threads: int | None):
    """The ``FaceDetector`` for a ``DetectorSpec``: RetinaFace's raw heads are decoded in numpy, other graphs
    give boxes themselves."""
    from abaw_rt.artefacts import open_graph
    from abaw_rt.pipeline.faces import FaceDetector

    if spec.decoder.value == "retinaface":
        from abaw_rt.pipeline.retinaface import RetinaFaceRunner

        runner = RetinaFaceRunner(
            spec.onnx, provider, threads, score_threshold=spec.score_threshold, nms_iou=spec.nms_iou,
        ).activate()
    else:
        runner = open_graph(spec.onnx, provider, threads, what="detector").activate()
    detector = FaceDetector(spec, runner)
    detector.prepare()
    return detector


def load_extractors(specs, provider: str, threads: int | None) -> list:
    """Entered ``FeatureExtractor`` s, one per spec; those already entered are left again when one fails."""
    from abaw_rt.pipeline.extractors import FeatureExtractor

    out = []
    try:
        for s in specs:
            out.append(FeatureExtractor(s, provider, threads).__enter__())
    except BaseException:
        release_extractors(out)
        raise
    return out


def release_extractors(extractors) -> None:
    for e in extractors:
        e.__exit__()


def release_detector(detector) -> None:
    if detector is not None:
        detector.runner.deactivate()
