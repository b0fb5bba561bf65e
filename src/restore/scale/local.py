"""The local executor: each run in a child process of its own, so that a crash (a segfault, the OOM
killer) ends that run only. A child dies with the driver (``prctl(PR_SET_PDEATHSIG)``): a sweep killed with
``kill -9`` leaves no run behind that still writes its run directory.

With GPUs, one run per GPU at a time: each child sees only its own (``CUDA_VISIBLE_DEVICES``) and gets an
equal share of the CPU cores for its torch threads. On the CPU, ``workers`` runs at a time (default 1),
the cores split evenly between them (``OMP_NUM_THREADS`` and ``torch.set_num_threads``). A child's stdout
and stderr go to ``<log_dir>/<job>.log``; the run's own log is in its run directory as always.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import restore
from restore.errors import ConfigError
from restore.scale.jobs import Job, failed
from restore.scale.worker import PARENT_ENV


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES`` entries, else 0..count-1)."""
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


class LocalExecutor:
    """Child processes on this machine: one per GPU, or ``workers`` on the CPU."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        gpus: list[str] | None = None,
        cores: int | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        self.cores = cores or available_cores()
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if self.gpus:
            if workers is not None and workers > len(self.gpus):
                raise ConfigError(
                    f"--workers {workers} asks for more runs at once than the {len(self.gpus)} GPU(s) here",
                    hint="runs take one GPU each; leave --workers out to use every GPU",
                )
            self.device_type = "cuda"
            self.slots = self.gpus[: workers or len(self.gpus)]
        else:
            self.device_type = "cpu"
            self.slots = [f"cpu{i}" for i in range(workers or 1)]
        self.capacity = len(self.slots)
        self.threads = max(1, self.cores // self.capacity)
        self._tmp = tempfile.TemporaryDirectory(prefix="restore-sweep-")
        self.log_dir = Path(log_dir) if log_dir is not None else Path(self._tmp.name) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._free = list(self.slots)
        self._running: dict[str, tuple[Job, subprocess.Popen, Path, Any]] = {}

    def describe(self) -> str:
        if self.device_type == "cuda":
            gpus = ", ".join(self.slots)
            return f"local: {self.capacity} run(s) at once, one per GPU ({gpus}), {self.threads} threads each"
        return f"local: {self.capacity} run(s) at once on the CPU, {self.threads} thread(s) each of {self.cores} cores"

    def submit(self, job: Job) -> None:
        slot = self._free.pop(0)
        tmp = Path(self._tmp.name)
        spec_path, outcome_path = tmp / f"{job.name}-{job.attempt}.json", tmp / f"{job.name}-{job.attempt}.out.json"
        spec = {**job.spec, "threads": self.threads, "device": self.device_type}
        spec_path.write_text(json.dumps(spec))
        log_path = self.log_dir / f"{job.name}.log"
        log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed when the child ends)
        log.write(f"=== {job.cell.label}, attempt {job.attempt}, {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        log.flush()
        src = str(Path(restore.__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            PARENT_ENV: str(os.getpid()),  # the child dies with this process (restore.scale.worker)
        }
        if self.device_type == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = slot
        proc = subprocess.Popen(
            [sys.executable, "-m", "restore.scale.worker", str(spec_path), str(outcome_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches the driver, which stops the children
        )
        self._running[slot] = (job, proc, outcome_path, log)

    def wait(self, timeout: float) -> list[tuple[Job, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for slot, (job, proc, outcome_path, log) in list(self._running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del self._running[slot]
                self._free.append(slot)
                done.append((job, self._outcome(job, code, outcome_path, Path(log.name))))
            if done or time.monotonic() >= deadline or not self._running:
                return done
            time.sleep(0.1)

    def _outcome(self, job: Job, code: int, outcome_path: Path, log_path: Path) -> dict[str, Any]:
        try:
            outcome = json.loads(outcome_path.read_text())
        except (OSError, ValueError):
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = _tail(log_path)
            return failed(f"the run's process {how} before reporting" + (f": {tail}" if tail else ""),
                          log=str(log_path))  # fmt: skip
        outcome["log"] = str(log_path)
        return outcome

    def close(self) -> None:
        for _, proc, _, _ in self._running.values():
            if proc.poll() is None:  # as Ctrl-C: the run marks itself interrupted (resumable) and stops
                proc.send_signal(signal.SIGINT)
        for _, proc, _, log in self._running.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        self._running.clear()
        self._tmp.cleanup()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-500:]
