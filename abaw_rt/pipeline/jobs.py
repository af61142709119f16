"""Pipeline layer: a whole ``infer`` / ``extract`` run described as data (``VideoJob``), and its runner.

The CLI fills a ``VideoJob`` from its options; ``JobRunner`` turns it into a loaded ``Pipeline`` and runs one
source at a time, writing that source's outputs (the infer folder, or the feature-store entry) as a whole. The
same job runs in this process or, unchanged, in each worker of a cluster (``abaw_rt.scale``): a job is plain
paths and frozen configs, so it pickles, and every worker loads the models once from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.run import Pipeline, PipelineConfig, Progress, Source, load_fusion


@dataclass(frozen=True)
class FusionChoice:
    """Which fusion model ``infer`` runs (what ``load_fusion`` takes); all None: the built-in demo model."""

    checkpoint: Path | None = None  # --checkpoint (.safetensors)
    model: Path | None = None  # --model (an exported graph)
    engine: Path | None = None  # --engine (a TensorRT plan)
    backend: str | None = None  # ort, torch or trt; None: the artefact's default
    precision: str | None = None  # None: the artefact's
    device: str = "cpu"  # where the fusion model runs
    threads: int | None = None  # onnxruntime / torch threads

    @property
    def demo(self) -> bool:
        return self.checkpoint is None and self.model is None and self.engine is None


@dataclass(frozen=True)
class VideoJob:
    """One ``infer`` or ``extract`` run over any number of sources.

    Args:
        out_dir: infer: the folder of per-video output folders; extract: the feature store.
        config: how the pipeline runs.
        fusion: the fusion model for ``infer``; None: ``extract`` (features only).
        extractors: the extractor spec (TOML); None: the built-in defaults.
        detector: a detector graph or spec; None: the spec's [detector] or the built-in RetinaFace.
        tasks: infer only these heads; None: every head of the model.
        extractor_backends: per-extractor backends from the CLI (``choose_backends``).
    """

    out_dir: Path
    config: PipelineConfig = PipelineConfig()
    fusion: FusionChoice | None = None
    extractors: Path | None = None
    detector: Path | None = None
    tasks: tuple[str, ...] | None = None
    extractor_backends: tuple[str, ...] = ()  # --extractor-backend NAME=PROVIDER|PLAN, over the spec's choices

    @property
    def verb(self) -> str:
        return "infer" if self.fusion is not None else "extract"


def spec_or_default(extractors: Path | None):
    """The extractor spec at ``extractors``, or the built-in offline one (abaw_rt/defaults; README, "Defaults")."""
    from abaw_rt.pipeline.extractor_spec import load_spec

    if extractors is None:
        from abaw_rt import defaults

        extractors = defaults.spec_path()
    return load_spec(extractors)


def detector_or_default(detector: Path | None, spec=None):
    """The detector at ``detector``; for a spec without [detector], the built-in RetinaFace; else the spec's."""
    from abaw_rt.pipeline.extractor_spec import default_detector_spec, load_detector

    if detector is not None:
        return load_detector(detector)
    if spec is not None and spec.detector is None:
        return default_detector_spec()
    return None


class JobRunner:
    """A ``VideoJob``'s pipeline: checked on construction, models loaded on entering, one source per ``run``."""

    def __init__(self, job: VideoJob):
        self.job = job
        spec = spec_or_default(job.extractors)
        if job.extractor_backends:
            from abaw_rt.pipeline.extractors import choose_backends

            spec = choose_backends(spec, job.extractor_backends)
        det = detector_or_default(job.detector, spec)
        fusion = None
        self.wanted: list[str] = []
        if job.fusion is not None:
            fusion = self._fusion(job.fusion)
            heads = fusion.header.config.heads
            self.wanted = list(job.tasks) if job.tasks else list(heads)
            if job.fusion.demo:
                from abaw_rt import defaults

                defaults.check_heads(self.wanted)
            if [t for t in self.wanted if t not in heads]:
                raise AbawRtError(f"--task {' '.join(self.wanted)}: the model predicts {list(heads)} only")
        self.pipeline = Pipeline(spec, job.config, fusion, det)
        self.store = None

    @staticmethod
    def _fusion(f: FusionChoice):
        checkpoint = f.checkpoint
        if f.demo:  # the built-in demo model (README, "Model card")
            from abaw_rt import defaults

            checkpoint = defaults.checkpoint_path()
        return load_fusion(checkpoint, f.model, f.backend, f.precision, f.device, f.threads, engine=f.engine)

    def check(self, sources: list[Source]) -> dict[str, object]:
        """Probe every source and prove the output folder (or store) writable, before any work."""
        infos = self.check_sources(sources)
        self.check_output()
        return infos

    def check_sources(self, sources: list[Source]) -> dict[str, object]:
        """Probe every source (readable, has video, has audio where needed); nothing is written."""
        return self.pipeline.check_sources(sources, skip_missing_audio=self.job.fusion is None)

    def check_output(self) -> None:
        """Create the output folder (or store) if needed and prove it writable."""
        from abaw_rt.pipeline.outputs import check_out_dir

        self._open_output(check_out_dir(self.job.out_dir))

    def _open_output(self, folder: Path) -> None:
        if self.job.fusion is None:
            from abaw_rt.store import FeatureStore

            self.store = FeatureStore(folder)
            self.store.index()  # an existing folder must be a feature store (or empty)

    def __enter__(self) -> "JobRunner":
        if self.job.fusion is None and self.store is None:
            self._open_output(Path(self.job.out_dir))
        self.pipeline.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.pipeline.__exit__()

    @property
    def load_seconds(self) -> float | None:
        return self.pipeline.load_seconds

    def run(self, source: Source, progress: Progress | None = None, expected: int | None = None) -> dict:
        """Process one source and write its outputs whole; returns its report."""
        if self.job.fusion is None:
            return self.pipeline.extract(source, self.store, progress, expected)
        return self.pipeline.infer_folder(source, self.job.out_dir, self.wanted, progress=progress, expected=expected)
