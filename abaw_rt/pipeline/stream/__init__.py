"""Pipeline layer: the streaming pipeline behind ``abaw-rt live``.

Stages joined by bounded queues (``queue.Queue(maxsize=...)``: a slow stage blocks the one before it, or
sheds work, never buffers without bound): ``source`` (open a camera, URL, stdin or paced file) ->
``reader`` (decode thread) -> ``frames`` (faces, visual and audio features, shedding) -> ``windows``
(window assembler, fusion every hop frames, stitching over windows already run) -> ``sinks`` (NDJSON,
the end-of-run files) -> ``latency``; ``live`` composes them. Offline ``infer`` keeps its own windows
(``abaw_rt.pipeline.run``, ``window_feed``: the whole-video plan, run batch by batch while decoding).
"""

DEFAULT_LOOKAHEAD = 25  # frames (1 s at 25 fps): README, "abaw-rt live", the measured table
DEFAULT_HOP = 1  # a window every frame: with hop h a frame can wait h - 1 frames more for its window
