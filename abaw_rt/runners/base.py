"""Runner layer: the one interface every backend implements (Polygraphy's pattern).

``infer(feeds)`` checks the feeds against the declared input specs, then calls the backend's
``_infer``. Entering the context allocates (session, model, device buffers); leaving frees them.
Each runner times its own backend call (device synchronised) in ``last_inference_time``, so
comparisons between backends are fair and Python overhead is reported apart.
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from abaw_rt.checkpoint import CheckpointHeader
from abaw_rt.errors import AbawRtError
from abaw_rt.specs import TensorSpec, check_feeds


class Runner:
    """Base class: subclasses set the specs (and, for the fusion model, the header) in ``__init__`` or
    ``_activate`` and implement the hooks.

    ``infer`` resolves the feeds' symbolic axes once (``check_feeds``) and hands them to ``_infer``, so no
    backend re-derives batch or time from tensor names. ``artefact`` is the ``abaw_rt.artefacts.Artefact``
    the runner was opened from (set by ``open_runner``; None for a runner built by hand).
    """

    name = "runner"
    input_specs: tuple[TensorSpec, ...]
    output_specs: tuple[TensorSpec, ...]
    header: CheckpointHeader  # fusion runners: what the model is (config, labels, window, stride)
    precision: str = "fp32"
    artefact = None  # abaw_rt.artefacts.Artefact, set by open_runner

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None  # seconds in the backend call, device synchronised
        self.last_axes: dict[str, int] = {}  # the symbolic axes of the last call, e.g. {"batch": 2, "time": 300}

    # -- lifecycle ----------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- inference ----------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Returns fresh float32 arrays (output buffers are never shared between calls).

        Raises:
            AbawRtError: feeds that do not match ``input_specs``, or a runner used outside its context.
        """
        if not self.is_active:
            raise AbawRtError(f"{self.name} runner is not active: use it as a context manager ('with runner: ...')")
        axes = check_feeds(self.input_specs, feeds)
        self.last_axes = axes
        start = time.perf_counter()
        out = self._infer(feeds, axes)  # backends return host arrays, so the device is synchronised here
        self.last_inference_time = time.perf_counter() - start
        check_outputs(self, out)
        return out

    # -- hooks --------------------------------------------------------------------------------------
    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Run the backend on checked feeds; ``axes`` are their resolved symbolic axes."""
        raise NotImplementedError

    def spec(self, name: str | None, kind: str) -> TensorSpec:
        """The input (kind="input") or output spec called ``name``; None picks the runner's only one."""
        specs = self.input_specs if kind == "input" else self.output_specs
        if not name:
            if len(specs) != 1:
                raise AbawRtError(f"{self._label()}: has {kind}s {[s.name for s in specs]}; name the one to use in the spec")
            return specs[0]
        for s in specs:
            if s.name == name:
                return s
        raise AbawRtError(f"{self._label()}: no {kind} '{name}' (it has {[s.name for s in specs]})")

    def _label(self) -> str:
        """How error messages name what runs (e.g. "extractor 'eff' engine 'eff.plan'")."""
        return f"{self.name} runner"

    def describe(self) -> dict:
        """What runs where, for reports and logs: backend, precision, artefact and backend details."""
        source = self.artefact.path if self.artefact is not None else getattr(self, "path", None)
        return {"backend": self.name, "precision": self.precision, "artefact": str(source) if source else None,
                **self._describe()}  # fmt: skip

    def _describe(self) -> dict:
        return {}

    def example_feeds(
        self, batch: int, time: int, rng: np.random.Generator | None = None, padded: bool = False
    ) -> dict[str, np.ndarray]:
        """Random feeds that fit this runner (see ``abaw_rt.feeds.example_feeds``)."""
        from abaw_rt.feeds import example_feeds

        return example_feeds(self.header, batch, time, rng=rng, padded=padded)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r})"


def check_outputs(runner: Runner, outputs: Mapping[str, np.ndarray]) -> None:
    """Backends must return every declared output; a graph that does not is refused."""
    missing = [s.name for s in runner.output_specs if s.name not in outputs]
    if missing:
        raise AbawRtError(f"{runner.name} runner: backend returned no output(s) {missing}")
