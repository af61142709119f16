"""Pipeline layer, stages 1-3 for an Aff-Wild2 image folder: read the aligned crops, resize, extract.

The features go into the same per-frame rows as a video's (``stream.rows.FeatureRows``, held whole: image
folders are short) and on to the same consumers (fusion windows and sinks, or the feature store).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.features import Progress, VideoFeatures
from abaw_rt.pipeline.inputs import IMAGE_FOLDER_FPS, Source, frame_images
from abaw_rt.pipeline.report import StageTimes


def image_run(extractors, source: Source, progress: Progress | None, consumer: Callable, fill: bool) -> VideoFeatures:
    """The visual features of an image folder of aligned face crops (00001.jpg, ...), handed to
    ``consumer(rows, times)``'s stage; returns what the report needs.

    Missing frame numbers are frames without a face; frame times assume ``IMAGE_FOLDER_FPS``.
    """
    from abaw_rt.errors import require_module
    from abaw_rt.pipeline.extractors import CropBatcher
    from abaw_rt.pipeline.stream.rows import FeatureRows

    cv2 = require_module("cv2", "video")
    times = StageTimes()
    wall0 = time.perf_counter()
    visual = [e for e in extractors if e.spec.modality == "visual"]
    images = frame_images(source.path)
    n = max(images)
    rows = FeatureRows({e.name: e.spec.dim for e in visual}, fill=fill, hold=True)
    consume = consumer(rows, times)
    batcher = CropBatcher(visual, store=rows.store, timer=lambda name, s: times.add(f"extract:{name}", s))
    found = np.zeros(n, dtype=bool)
    for number in sorted(images):
        with times.time("decode"):
            bgr = cv2.imread(str(images[number]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AbawRtError(f"image '{images[number]}': not a readable image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        found[number - 1] = True
        with times.time("align"):  # the crops are already aligned: only resized to each extractor's input
            crops = {e.name: cv2.resize(rgb, e.image.size[::-1], interpolation=cv2.INTER_LINEAR) for e in visual}
        for e in visual:
            batcher.add(e.name, number - 1, crops[e.name])
        if progress and number % 10 == 0:
            progress(source.name, number, n)
    batcher.flush()
    ft = np.arange(n, dtype=np.float64) / IMAGE_FOLDER_FPS
    consume.finish(ft, found)
    info = {
        "decode": {"images": len(images), "frames_from_numbers": n, "fps_assumed": IMAGE_FOLDER_FPS},
        "faces": {
            "used": True,
            "found": int(found.sum()),
            "missing": int((~found).sum()),
            "detections": 0,
            "note": "aligned crops: missing frame numbers are frames without a face",
        },
        "audio": {"used": False, "track": False},
    }
    return VideoFeatures(source, {}, found, ft, None, times, info, wall=time.perf_counter() - wall0)
