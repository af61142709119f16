"""Pipeline layer: the streaming pipeline, one for offline files and live sources.

Stages joined by bounded queues (a slow stage blocks the one before it, or sheds work, never buffers without
bound): ``source`` (open a camera, URL, stdin or file) -> ``reader`` (the decode thread) -> ``tracking`` (the
faces thread: a tracker settles each frame's face) -> ``crops`` and ``frames`` / ``rows`` (visual and audio
features per frame) -> windows (``plan``: the stride plan offline; ``windows``: windows ending at the newest
frame, live) -> ``stitch`` (a frame is final once no window it will get can change it) -> sinks (``sinks``:
NDJSON and latency; ``outputs.OutputFolder``: the ABAW files, appended; ``store.StoreWriter``: the feature
store). ``offline.VideoRun`` composes them for a file read as fast as it decodes (``infer``, ``extract``);
``live.LiveRun`` for a live source (``abaw-rt live``). ``stage.StageThread`` is the one bounded-queue thread.
"""

DEFAULT_LOOKAHEAD = 25  # frames (1 s at 25 fps): README, "abaw-rt live", the measured table
DEFAULT_HOP = 1  # a window every frame: with hop h a frame can wait h - 1 frames more for its window
