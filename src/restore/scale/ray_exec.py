"""The Ray executor: each run a Ray task on a cluster (``--ray-address auto`` or ``host:port``), or on a Ray
instance this process started or joined already (``ray.init`` before the sweep; ``local`` starts one).

A task asks for one GPU where the cluster has GPUs, else for its thread budget in CPUs: the CPUs of the
smallest node divided by ``workers`` (default 1: one run per node at a time). Each task runs in a fresh
worker process (``max_calls=1``: the GPU memory and threads of one run never leak into the next) and Ray
does not retry it (``max_retries=0``): the sweep retries failed runs itself, and records every attempt.

Where results go: the task returns its outcome to the driver, and the driver writes the database row. The
results database therefore only needs to be on the driver's disk; SQLite over a network filesystem (its
WAL mode needs shared memory that NFS cannot give) is never involved. The run directories are written by
the tasks under ``--out``: on a multi-node cluster make it a path every node mounts (a shared filesystem),
or each run directory stays on the node that ran it (the database row names the host). The code (this
package) and the data root must be installed and visible at the same paths on every node.
"""

from __future__ import annotations

import contextlib
from typing import Any

from restore.errors import ConfigError
from restore.scale.jobs import Job, failed
from restore.scale.worker import run_cell


def _ray() -> Any:
    try:
        import ray  # optional: pip install restore[ray]
    except ImportError:
        raise ConfigError(
            "--ray-address needs Ray, which is not installed", hint="pip install 'restore[ray]' (ray[default])"
        ) from None
    return ray


class RayExecutor:
    """Ray tasks on a cluster: one GPU per run where there are GPUs, else ``threads`` CPUs per run."""

    def __init__(self, address: str | None = None, *, workers: int | None = None) -> None:
        ray = self.ray = _ray()
        self._started = False
        if not ray.is_initialized():
            try:
                if address in (None, "local"):
                    ray.init(include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(
                    f"cannot connect to the Ray cluster at {address!r}: {str(e).splitlines()[0][:300]}",
                    hint="start it (ray start --head) or pass its address (auto, or host:port of the head)",
                ) from None
            self._started = True
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        gpus = sum(int(n["Resources"].get("GPU", 0)) for n in nodes)
        node_cpus = [int(n["Resources"].get("CPU", 0)) for n in nodes if n["Resources"].get("CPU", 0) >= 1]
        if not node_cpus:
            raise ConfigError("the Ray cluster has no CPUs to run on", hint="check `ray status`")
        self.device_type = "cuda" if gpus else "cpu"
        if gpus:
            self.threads = max(1, min(node_cpus) // max(1, max(int(n["Resources"].get("GPU", 0)) for n in nodes)))
            self.capacity = gpus
            resources = {"num_gpus": 1, "num_cpus": 1}
        else:
            self.threads = max(1, min(node_cpus) // (workers or 1))
            self.capacity = sum(c // self.threads for c in node_cpus)
            resources = {"num_cpus": self.threads}

        self._remote = ray.remote(max_calls=1, max_retries=0)(run_cell)
        self._resources = resources
        self._nodes, self._gpus, self._cpus = len(nodes), gpus, sum(node_cpus)
        self._pending: dict[Any, Job] = {}

    def describe(self) -> str:
        if self.device_type == "cuda":
            return f"ray: {self._nodes} node(s), {self._gpus} GPU(s), one run per GPU"
        return f"ray: {self._nodes} node(s), {self._cpus} CPUs, {self.threads} per run ({self.capacity} run(s) at once)"

    def submit(self, job: Job) -> None:
        spec = {**job.spec, "threads": self.threads, "device": self.device_type}
        name = f"restore {job.cell.label} #{job.attempt}"
        ref = self._remote.options(name=name, **self._resources).remote(spec)
        self._pending[ref] = job

    def wait(self, timeout: float) -> list[tuple[Job, dict[str, Any]]]:
        if not self._pending:
            return []
        ready, _ = self.ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if ready:  # and whatever else has finished meanwhile
            ready, _ = self.ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        done = []
        for ref in ready:
            job = self._pending.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:  # the task's process died, its node left, ...
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                outcome = failed(f"Ray lost the run ({type(e).__name__}): {first[:300]}")
            done.append((job, outcome))
        return done

    def close(self) -> None:
        for ref in list(self._pending):
            with contextlib.suppress(Exception):  # already finished or gone: nothing left to stop
                self.ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started:
            self.ray.shutdown()
