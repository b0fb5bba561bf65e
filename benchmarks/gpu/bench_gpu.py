"""The issue 8 benchmarks on one CUDA device with AMP: ``bash benchmarks/gpu/run_gpu.sh``.

UNTESTED ON A GPU: written on a machine without one. Its logic runs in CI on the CPU (``--device cpu
--arch tiny --precision fp32``, tests/perf/test_gpu_script.py); the CUDA-only lines are the device synchronisation
and the CUDA memory counters.

Same figures as ``benchmarks/bench_perf.py`` (ratios from interleaved rounds, medians), measured with
``torch.autocast`` under model.precision's names (``bf16`` by default; ``amp``: fp16 with a GradScaler; ``fp32``:
none): MaPLe ours vs the reference at 50 and 100
classes; restore_m vs our MaPLe and vs the reference RESTORE; the 1,000-class step's peak device memory
(plain, chunked + checkpointed, per-block checkpointed); evaluation images/s vs plain CLIP; step time vs
classes (the reference included up to 1,000 classes, which fits a large GPU). JSON into
``$RESTORE_BENCH_OUT`` (default benchmarks/results/) as ``gpu-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_perf as bp
from benchmarks.common import ratio_line, write_record
from restore.clip import build_model, get_config

AMP_DTYPES = {"bf16": torch.bfloat16, "amp": torch.float16}  # as restore.engine.device.autocast


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str):
    if amp == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def train_step(forward_loss: Callable[[], torch.Tensor], params, device, amp: str) -> Callable[[], None]:
    """One optimiser step under autocast; amp (fp16) scales the loss (bf16 needs no scaler)."""
    opt = torch.optim.SGD(list(params), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "amp")

    def fn() -> None:
        with autocast(device, amp):
            loss = forward_loss()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync(device)

    return fn


def ours_step(method, images, labels, device, amp):
    def loss() -> torch.Tensor:
        return method.compute_loss(method(images), labels)[0]

    return train_step(loss, method.learnable_parameters(), device, amp)


def reference_step(ref, images, labels, device, amp):
    def loss() -> torch.Tensor:
        out = ref(images, labels)
        return out[0] if isinstance(out, tuple) else out

    return train_step(loss, [p for p in ref.parameters() if p.requires_grad], device, amp)


def timed(cases: dict[str, Callable[[], None]], reps: int) -> dict[str, list[float]]:
    for fn in cases.values():  # warm-up (kernel selection, allocator)
        fn()
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


class Bench:
    def __init__(self, arch: str, device: torch.device, amp: str, reps: int) -> None:
        torch.manual_seed(0)
        self.device, self.amp, self.reps = device, amp, reps
        self.clip = build_model(get_config(arch)).to(device)
        images, labels = bp.inputs(self.clip)
        self.images, self.labels = images.to(device), labels.to(device)

    def method(self, name: str, n: int, values: dict | None = None):
        return bp.ours(self.clip, name, n, values).to(self.device)

    def reference(self, method, n: int):
        """The reference model of ``method`` (built on the CPU from its weights, then moved)."""
        return bp.reference(method, n).to(self.device)

    def step(self, model, reference: bool = False):
        make = reference_step if reference else ours_step
        return make(model, self.images, self.labels, self.device, self.amp)

    def maple_vs_reference(self, counts=(50, 100)) -> dict:
        cases = {}
        for n in counts:
            m = self.method("maple", n)
            cases[f"ours, {n}"], cases[f"reference, {n}"] = self.step(m), self.step(self.reference(m, n), True)
        t = timed(cases, self.reps)
        out = {"times": t, "speedup": {}}
        for n, target in zip(counts, (2.0, 3.5), strict=False):
            r = med(t[f"reference, {n}"]) / med(t[f"ours, {n}"])
            out["speedup"][n] = r
            print(ratio_line(f"MaPLe step, {n} classes: reference / ours", r, f">= {target}", r >= target), flush=True)
        return out

    def restore(self) -> dict:
        cases = {"maple": self.step(self.method("maple", 50))}
        methods = {k: self.method("restore_m", 50, v) for k, (v, _) in bp.RESTORE_VARIANTS.items()}
        ref = self.reference(methods["activation shift, all tokens"], 50)
        for label, m in methods.items():
            cases[label] = self.step(m)
        cases["reference RESTORE"] = self.step(ref, True)
        t = timed(cases, self.reps)
        out: dict[str, Any] = {"times": t, "ratio_to_maple": {}}
        for label, (_, target) in bp.RESTORE_VARIANTS.items():
            r = med(t[label]) / med(t["maple"])
            out["ratio_to_maple"][label] = r
            print(ratio_line(f"restore_m / our MaPLe, {label}", r, f"<= {target}", r <= target), flush=True)
        r = med(t["reference RESTORE"]) / med(t["activation shift, all tokens"])
        out["speedup_vs_reference"] = r
        print(ratio_line("reference RESTORE / restore_m (all tokens)", r, ">= 2.5", r >= 2.5), flush=True)
        return out

    def memory(self) -> dict:
        out = {}
        for label, settings in bp.MEMORY_OPTIONS.items():
            self.clip.text_chunk = settings.get("text_chunk", 0)
            self.clip.transformer.grad_checkpointing = settings.get("grad_checkpointing", False)
            step = self.step(self.method("maple", 1000))
            step()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            t0 = time.perf_counter()
            step()
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
            out[label] = {"step_seconds": seconds, "peak_bytes": peak, "settings": settings}
            gib = f"{peak / 2**30:.2f} GiB" if peak is not None else "n/a on CPU"
            print(f"  1,000 classes, {label}: peak device memory {gib}, step {seconds:.2f}s", flush=True)
        self.clip.text_chunk, self.clip.transformer.grad_checkpointing = 0, False
        return out

    def evaluation(self, batch: int = 64) -> dict:
        m = self.method("restore_m", 50)
        self.step(m)()
        m.eval()
        size = self.clip.cfg.vision.image_size
        images = torch.randn(batch, 3, size, size, device=self.device)
        with torch.no_grad(), autocast(self.device, self.amp):
            feats = m.class_features()

        def restore_eval() -> None:
            with torch.no_grad(), autocast(self.device, self.amp):
                m.predict(images, feats)
            sync(self.device)

        def clip_eval() -> None:
            with torch.no_grad(), autocast(self.device, self.amp):
                self.clip.encode_image(images)
            sync(self.device)

        t = timed({"restore_m": restore_eval, "clip": clip_eval}, max(3, self.reps))
        rate = {k: batch / med(v) for k, v in t.items()}
        slowdown = rate["clip"] / rate["restore_m"]
        print(ratio_line("evaluation: CLIP images/s / restore_m images/s", slowdown, "<= 1.10", slowdown <= 1.1))
        return {"images_per_s": rate, "slowdown": slowdown, "batch": batch}

    def scaling(self, counts=bp.CLASS_COUNTS) -> dict:
        steps: dict[str, dict[str, float]] = {"ours": {}, "reference": {}}
        for n in counts:
            m = self.method("maple", n)
            ref = self.reference(m, n)
            t = timed({"ours": self.step(m), "reference": self.step(ref, True)}, 1)
            for who in steps:
                steps[who][str(n)] = med(t[who])
            print(f"  {n} classes: ours {steps['ours'][str(n)]:.3f}s, reference {steps['reference'][str(n)]:.3f}s")
            del ref, m
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return {"step_seconds": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="ViT-B/16")
    # The autocast precisions of model.precision (fp16, the authors' half weights, is not benchmarked here).
    parser.add_argument("--precision", choices=["bf16", "amp", "fp32"], default="bf16")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 repetitions, no scaling beyond 200 classes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: pass --device cpu to exercise the script on the CPU", file=sys.stderr)
        return 2
    bp.ARCH = args.arch
    bench = Bench(args.arch, device, args.precision, 2 if args.quick else args.reps)
    print(f"== gpu: {args.arch}, {device}, precision {args.precision}, batch {bp.BATCH}", flush=True)
    start = time.perf_counter()
    record: dict[str, Any] = {"device": str(device), "arch": args.arch, "precision": args.precision}
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    record["maple_vs_reference"] = bench.maple_vs_reference()
    record["restore"] = bench.restore()
    record["memory_1000_classes"] = bench.memory()
    record["evaluation"] = bench.evaluation(8 if args.quick else 64)
    counts = tuple(n for n in bp.CLASS_COUNTS if not args.quick or n <= 200)
    record["scaling"] = bench.scaling(counts)
    folder = Path(os.environ.get("RESTORE_BENCH_OUT", bp.RESULTS))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record["plot"] = str(bp.plot(record["scaling"], folder / f"gpu-scaling-{stamp}.png"))
    record["seconds"] = time.perf_counter() - start
    print(f"   record: {write_record('gpu', record)}  ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
