"""One-process DistributedDataParallel smoke check: a method trains under DDP exactly as without it.

UNTESTED ON A GPU: written on a machine without one; on the CPU it runs with the gloo backend
(tests/perf/test_gpu_script.py). With world size 1 the gradient all-reduce averages over one process, so
three SGD steps of a DDP-wrapped method must give the same losses and parameters as the plain method.
Writes ``ddp-<stamp>.json`` into ``$RESTORE_BENCH_OUT`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from benchmarks import bench_perf as bp
from benchmarks.common import write_record
from restore.clip import build_model, get_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(method, wrapped, images, labels, steps: int) -> list[float]:
    opt = torch.optim.SGD(method.learnable_parameters(), lr=1e-2, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss, _ = method.compute_loss(wrapped(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def check(name: str, arch: str, device: torch.device, steps: int) -> dict:
    torch.manual_seed(0)
    clip = build_model(get_config(arch)).to(device)
    images, labels = (t.to(device) for t in bp.inputs(clip))
    runs = {}
    for mode in ("plain", "ddp"):
        method = bp.ours(clip, name, 10).to(device)
        wrapped = method
        if mode == "ddp":
            ids = [device.index or 0] if device.type == "cuda" else None
            wrapped = DistributedDataParallel(method, device_ids=ids)
        losses = train(method, wrapped, images, labels, steps)
        runs[mode] = (losses, {k: v.detach().cpu() for k, v in method.learnable_state_dict().items()})
    (l1, p1), (l2, p2) = runs["plain"], runs["ddp"]
    loss_diff = max(abs(a - b) for a, b in zip(l1, l2, strict=True))
    param_diff = max(float((p1[k].float() - p2[k].float()).abs().max()) for k in p1)
    moved = any(not torch.equal(p1[k], v) for k, v in bp.ours(clip, name, 10).learnable_state_dict().items())
    ok = loss_diff <= 1e-5 * max(1.0, abs(l1[0])) and param_diff <= 1e-5 and moved
    print(f"  DDP smoke, {name}: losses {[round(x, 4) for x in l2]}, max |Δloss| {loss_diff:.2e}, "
          f"max |Δparam| {param_diff:.2e}: {'ok' if ok else 'MISMATCH'}", flush=True)  # fmt: skip
    return {"losses_plain": l1, "losses_ddp": l2, "max_loss_diff": loss_diff, "max_param_diff": param_diff, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="ViT-B/16")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device: pass --device cpu to run the check with gloo", file=sys.stderr)
            return 2
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", world_size=1, rank=0)
    try:
        record = {"backend": backend, "device": str(device), "arch": args.arch}
        record["methods"] = {name: check(name, args.arch, device, args.steps) for name in ("maple", "restore_m")}
    finally:
        dist.destroy_process_group()
    record["ok"] = all(r["ok"] for r in record["methods"].values())
    print(f"   record: {write_record('ddp', record)}")
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    sys.exit(main())
