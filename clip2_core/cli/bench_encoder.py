"""``clip2 bench encoder``: point-encoder throughput on CPU: PyTorch eager, ONNX Runtime, OpenVINO, torch.compile.

Registered on ``clip2 bench`` by :func:`add_encoder_bench` (called from ``clip2_core.cli.bench``).

Protocol: the default encoder with random weights (speed does not depend on the values) and
BatchNorm folded, the identical graph run by both backends; for each point count P the model's
``num_points`` is set to P. Both backends get the same thread count (``torch.set_num_threads`` and
ORT ``intra_op_num_threads``). For each (P, B) PyTorch and ONNX Runtime are measured back to back
with an idle pause between, so both see the same machine conditions while their thread pools
never run at the same time. Each number is the median over ``--repeats`` samples of clusters/s;
a sample runs ``max(1, 64 // B)`` batches.

``--backends`` adds OpenVINO (the same exported ONNX file, compiled for its CPU plugin with the same
thread count; needs the ``openvino`` package) and ``torch.compile`` of the fused eager model
(inductor; the first calls compile, they are not timed). ``torch`` and ``ort`` are always measured:
``ratio`` stays ONNX Runtime over eager; every other backend gets ``<name>_cps`` and
``<name>_ratio`` (over eager) in each row.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 8, 32, 64, 128)
POINT_COUNTS = (256, 512)
HEADLINE = (64, 256)  # (batch, points) of the top-level torch_cps / ort_cps / ratio
EXTRA_BACKENDS = ("openvino", "torch_compile")  # measured when asked for with --backends
PAUSE_S = 0.3  # idle gap between the two backends' measurements


def add_encoder_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Register ``clip2 bench encoder`` on the ``clip2 bench`` subparsers."""
    p = bench_subparsers.add_parser(
        "encoder",
        help="point-encoder clusters/s: PyTorch eager vs ONNX Runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--model", default=None, help="encoder config name (default: the default dense encoder)")
    p.add_argument("--threads", type=int, default=None, help="threads per backend (default: all CPU cores)")
    p.add_argument("--repeats", type=int, default=7, help="timed samples per measurement (median reported)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    p.add_argument("--points", type=int, nargs="+", default=list(POINT_COUNTS))
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (default); cpu: this process's CPU time, which other processes "
                        "on a shared machine do not inflate (meaningful with --threads 1)")
    p.add_argument("--stat", choices=("median", "best"), default="median",
                   help="statistic over the --repeats samples reported as torch_cps / ort_cps (both are in the JSON "
                        "rows); 'best' approximates an idle machine when others load it")
    p.add_argument("--backends", nargs="+", default=[], choices=EXTRA_BACKENDS,
                   help="also measure these backends beside PyTorch eager and ONNX Runtime")
    p.set_defaults(func=run)


def _cps_samples(fn: Callable[[], Any], batch: int, repeats: int, clock: Callable[[], float] = time.perf_counter) -> List[float]:
    inner = max(1, 64 // batch)
    fn()
    fn()  # warm-up (allocator, ORT arena, lazy init)
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        samples.append(batch * inner / max(clock() - t0, 1e-9))
    return samples


def run_encoder_bench(model_name: str, threads: int, repeats: int = 7, batch_sizes: Sequence[int] = BATCH_SIZES,
                      point_counts: Sequence[int] = POINT_COUNTS, clock: str = "wall", stat: str = "median",
                      extra_backends: Sequence[str] = ()) -> Dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from clip2_core.encoders import build_point_encoder, load_model_config
    from clip2_core.encoders.config import PointEncoderConfig
    from clip2_core.runtime.export import INPUT_NAME, OUTPUT_NAME, export_onnx, inference_copy, random_batch

    timer = time.perf_counter if clock == "wall" else time.process_time
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    base = load_model_config(model_name)
    rows: List[Dict[str, Any]] = []
    flops: Dict[int, int] = {}
    params = None
    with tempfile.TemporaryDirectory(prefix="clip2-bench-") as tmp:
        for p in point_counts:
            d = base.to_dict()
            d["normalization"]["num_points"] = int(p)
            cfg = PointEncoderConfig.from_dict(d)
            torch.manual_seed(0)
            model = build_point_encoder(cfg).eval()
            params = sum(x.numel() for x in model.parameters())
            flops[p] = int(model.flops_per_cluster())
            fused = inference_copy(model)
            batches = {b: random_batch(b, cfg, seed=b) for b in batch_sizes}
            onnx_path = export_onnx(model, cfg, Path(tmp) / f"enc{p}.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            extra = {name: _extra_backend(name, fused, onnx_path, threads) for name in extra_backends}
            for b in batch_sizes:
                xb = batches[b]
                xt = torch.from_numpy(xb)

                def f_torch(xt=xt):
                    with torch.inference_mode():
                        fused(xt)

                t_s = _cps_samples(f_torch, b, repeats, timer)
                time.sleep(PAUSE_S)  # let the torch/OpenMP workers go idle before ORT's pool starts
                o_s = _cps_samples(lambda xb=xb: sess.run([OUTPUT_NAME], {INPUT_NAME: xb}), b, repeats, timer)
                time.sleep(PAUSE_S)
                measured = [("torch", t_s), ("ort", o_s)]
                for name, make_fn in extra.items():
                    measured.append((name, _cps_samples(make_fn(xb), b, repeats, timer)))
                    time.sleep(PAUSE_S)
                row = {"points": p, "batch": b}
                for name, samples in measured:
                    row[f"{name}_median_cps"] = round(statistics.median(samples), 1)
                    row[f"{name}_best_cps"] = round(max(samples), 1)
                row["torch_cps"] = row[f"torch_{stat}_cps"]
                row["ort_cps"] = row[f"ort_{stat}_cps"]
                row["ratio"] = round(row["ort_cps"] / row["torch_cps"], 3)
                for name in extra:
                    row[f"{name}_cps"] = row[f"{name}_{stat}_cps"]
                    row[f"{name}_ratio"] = round(row[f"{name}_cps"] / row["torch_cps"], 3)
                log.info("P=%d B=%d: torch %.0f, onnxruntime %.0f clusters/s (%s)", p, b, row["torch_cps"],
                         row["ort_cps"], stat)
                rows.append(row)
            del sess, extra
    head = next((r for r in rows if (r["batch"], r["points"]) == HEADLINE), rows[0])
    return {
        "benchmark": "encoder",
        "model": model_name,
        "threads": threads,
        "clock": clock,
        "stat": stat,
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "extra_backends": list(extra_backends),
        "versions": _backend_versions(extra_backends),
        "params": params,
        "flops_per_cluster": {str(k): v for k, v in flops.items()},
        "headline": {"batch": head["batch"], "points": head["points"]},
        "torch_cps": head["torch_cps"],
        "ort_cps": head["ort_cps"],
        "ratio": head["ratio"],
        "results": rows,
        "numpy_version": np.__version__,
        # 1-minute load average before / after: other processes on the machine distort timings
        "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def _extra_backend(name: str, fused: Any, onnx_path: Path, threads: int) -> Callable[[Any], Callable[[], Any]]:
    """For one extra backend, a factory: numpy batch -> a no-argument call that runs the encoder on it."""
    import torch

    if name == "openvino":
        try:
            import openvino as ov
        except ImportError as e:
            raise SystemExit("--backends openvino needs the 'openvino' package (pip install openvino)") from e
        core = ov.Core()
        compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return lambda xb: (lambda: request.infer({0: xb}))
    if name == "torch_compile":
        compiled = torch.compile(fused, dynamic=False)

        def make(xb: Any) -> Callable[[], Any]:
            xt = torch.from_numpy(xb)

            def call() -> None:
                with torch.inference_mode():
                    compiled(xt)
            return call
        return make
    raise ValueError(f"unknown backend {name!r}; choose from {EXTRA_BACKENDS}")


def _backend_versions(names: Sequence[str]) -> Dict[str, str]:
    out = {}
    if "openvino" in names:
        import openvino as ov
        out["openvino"] = ov.__version__
    return out


def run(args: argparse.Namespace) -> int:
    from clip2_core.encoders import DEFAULT_ENCODER

    threads = args.threads or os.cpu_count() or 1
    if threads < 1 or args.repeats < 1 or min(args.batch_sizes) < 1 or min(args.points) < 1:
        raise ValueError("threads, repeats, batch sizes and point counts must be >= 1")
    res = run_encoder_bench(args.model or DEFAULT_ENCODER, threads, args.repeats, args.batch_sizes, args.points,
                            clock=args.clock, stat=args.stat, extra_backends=args.backends)
    print(f"encoder {res['model']}: {res['params']:,} parameters; threads {threads} (cpu_count {res['cpu_count']}), "
          f"{args.clock} clock, {args.stat} of {args.repeats} samples")
    for p, f in res["flops_per_cluster"].items():
        print(f"  {int(f) / 1e6:.1f} MFLOP per cluster at {p} points")
    extra = res["extra_backends"]
    print(f"{'points':>6} {'batch':>5} {'torch c/s':>10} {'ort c/s':>10} {'ort/torch':>9}"
          + "".join(f" {n + ' c/s':>18} {'/torch':>6}" for n in extra))
    for r in res["results"]:
        print(f"{r['points']:>6} {r['batch']:>5} {r['torch_cps']:>10.0f} {r['ort_cps']:>10.0f} {r['ratio']:>9.2f}"
              + "".join(f" {r[n + '_cps']:>18.0f} {r[n + '_ratio']:>6.2f}" for n in extra))
    print(f"load average (1 min) before/after: {res['load_average_1min']}")
    print(f"headline (batch {res['headline']['batch']}, {res['headline']['points']} points): "
          f"torch {res['torch_cps']:.0f} c/s, onnxruntime {res['ort_cps']:.0f} c/s, ratio {res['ratio']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    return 0
