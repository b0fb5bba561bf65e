"""One cell of a sweep, run where an executor put it (a child process, a Ray task): plan, execute, and
hand back an outcome for the driver to record.

A run directory that already holds this config's run is resumed (`execute(resume=True)`): a cell killed
mid-run continues from its last epoch, and one that finished but was never recorded (the driver died) is
reported again without training. The run itself writes no database row (``db: none``): the driver records
every outcome, so the database needs to be reachable from the driver only.

``python -m restore.scale.worker SPEC.json OUTCOME.json`` is how the local executor starts a cell.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from restore.engine.ownership import RunBusy
from restore.engine.progress import PROGRESS_ENV
from restore.errors import RestoreError

PARENT_ENV = "RESTORE_SWEEP_DRIVER"  # the driver's pid: the local executor's children die with it


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the cell ``spec`` describes (``config``: the nested run-config mapping; ``threads``: torch's
    intra-op threads; ``device``: cpu or cuda). Never raises for a failed run: the outcome says why."""
    import torch  # slow: main() sets the parent-death signal before torch and the engine load

    threads = spec.get("threads")
    if threads:
        torch.set_num_threads(int(threads))

    if spec.get("progress_file"):  # the driver shows how far the cell is from the steps the run writes here
        os.environ[PROGRESS_ENV] = str(spec["progress_file"])
    else:
        os.environ.pop(PROGRESS_ENV, None)
    t0 = time.perf_counter()
    outcome: dict[str, Any] = {"status": "failed", "host": socket.gethostname(), "pid": os.getpid()}
    plan = None
    try:
        from restore.engine.plan import plan_run  # slow: as torch above; the driver imports this module
        from restore.engine.recorder import plan_record  # slow: as above
        from restore.engine.runs import execute  # slow: as above

        # The driver owns the database (one writer for every worker, local or on a Ray node): the run writes
        # no row and returns the one `Recorder` writes, built by the engine's `plan_record`.
        data = {**spec["config"], "device": spec.get("device", "auto"), "quiet": True, "db": "none"}
        plan = plan_run(data)
        outcome.update(run_dir=str(plan.run_dir.resolve()))
        result = execute(plan, resume=True, progress=False)
        outcome.update(status="finished", run_id=result.run_id, metrics=result.metrics, timings=result.timings)
    except RunBusy as e:  # another live process works in this run directory: the driver waits for it
        outcome.update(status="busy", error=e.message)
        plan = None
    except RestoreError as e:
        outcome.update(error=e.message + (f" (hint: {e.hint})" if e.hint else ""))
    except Exception as e:  # a bug, or the machine (out of memory): keep the traceback in the cell's log
        traceback.print_exc()
        outcome.update(error=f"{type(e).__name__}: {e}")
    if outcome["status"] == "failed" and plan is not None:
        outcome["run_id"] = _run_id(plan.run_dir)
    if plan is not None:  # the row of the planned run; without a run id the driver gives it the cell's own
        outcome["record"] = plan_record(plan, outcome.get("run_id")).to_dict()
    outcome["seconds"] = round(time.perf_counter() - t0, 3)
    return _plain(outcome)


def _run_id(run_dir: Path) -> str | None:
    """The id `execute` gave the run before it failed (None if it failed before writing run.json)."""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """JSON-able data (paths to strings)."""
    return json.loads(json.dumps(value, default=str))


def die_with_parent(parent: int) -> None:
    """End this process (SIGKILL) when the process ``parent`` is gone, however it went (kill -9 included):
    a sweep's runs must not outlive their driver and write run directories that a new sweep resumes.

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread checks every second."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before the request: nobody would send the signal
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="restore-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    spec_path, outcome_path = argv if argv is not None else sys.argv[1:]
    parent = os.environ.get(PARENT_ENV)
    if parent:
        die_with_parent(int(parent))
    spec = json.loads(Path(spec_path).read_text())
    outcome = run_cell(spec)
    tmp = Path(f"{outcome_path}.tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.replace(outcome_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
