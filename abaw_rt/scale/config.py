"""Scale-out layer: how a run spreads over a Ray cluster (typed, frozen; the CLI fills it in). Ray-free."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Callable

from abaw_rt.errors import AbawRtError

LOCAL = "local"  # start a cluster on this machine for the run (or use the one this process already started)
AUTO = "auto"  # join the cluster running on this machine (``ray start --head``)
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class ScaleConfig:
    """A Ray run of ``infer`` / ``extract``.

    Args:
        address: local, auto, ray://host:port (Ray Client) or host:port (a head node's GCS).
        workers: worker actors; each loads the models once and takes one video at a time.
        gpus_per_worker: GPUs each worker reserves (fractions share one GPU).
        cpus_per_worker: CPUs each worker reserves (Ray schedules on them; threads stay the job's --threads).
        max_retries: further tries for a video whose worker died (or failed on something not the input's fault).
        connect_timeout_s: how long to wait for a remote address before calling it unreachable.
        num_cpus: CPUs of a local cluster (default: enough for the workers).
        fault_hook: for tests: called in the worker as ``hook(video, frames_done)`` on each progress step
            (it may kill its own process, to test retries). Must pickle (a module-level function).
    """

    address: str = LOCAL
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_retries: int = 2
    connect_timeout_s: float = 5.0
    num_cpus: int | None = None
    fault_hook: Callable[[str, int], None] | None = None

    def __post_init__(self):
        if self.workers < 1:
            raise AbawRtError(f"--workers {self.workers}: expected at least 1")
        if self.gpus_per_worker < 0:
            raise AbawRtError(f"--gpus-per-worker {self.gpus_per_worker}: expected 0 or more")
        if self.max_retries < 0:
            raise AbawRtError(f"--max-retries {self.max_retries}: expected 0 or more")
        if self.address not in (LOCAL, AUTO) and not _HOST_PORT.match(self.address):
            raise AbawRtError(f"--ray '{self.address}': expected local, auto, ray://host:port or host:port")

    @property
    def remote(self) -> tuple[str, int] | None:
        """(host, port) of a remote address; None for local and auto."""
        m = _HOST_PORT.match(self.address)
        return (m["host"].strip("[]"), int(m["port"])) if m else None


def check_reachable(cfg: ScaleConfig) -> None:
    """A remote address must accept a TCP connection within ``connect_timeout_s`` (Ray itself retries for a minute)."""
    where = cfg.remote
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=cfg.connect_timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AbawRtError(f"--ray '{cfg.address}': unreachable ({reason}); is a Ray head running there?") from None
