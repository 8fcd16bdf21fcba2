"""Where the ONNX Runtime engine's time goes: ONNX Runtime's own profiler on each of the five graphs
(``m2hmx/onnx_forward.py``: encode, level1-3, heads) of the bundled model as the viewer runs it
(``Predictor.predict`` on 240x320 frames of validation room 200000, network at 144x192, 1 thread).

Run: .venv/bin/python -m benchmarks.profile_onnx [--frames 20] [--top 25] [--outputs depth,semseg]
Prints the kernel time per frame by graph, by operator type and by module (the exporter names each node after
its module path, e.g. ``/model/backbone/layer.1/attention/...``), and the numba scans between the graphs.
Kernel times are wall times and the profiler adds a little per node: read shares, on a quiet machine; the load
average is printed.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import m2hmx  # noqa: F401,I001  (first: it sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
import torch

from m2hmx.config import bundled_checkpoint
from m2hmx.onnx_forward import OnnxForward

BUNDLED = str(bundled_checkpoint())
GRAPHS = ("encode", "level1", "level2", "level3", "heads")


class ProfiledForward(OnnxForward):
    """The engine with ONNX Runtime's profiler on in every session, and the scans timed."""

    def __init__(self, model, threads: int, folder: str):
        super().__init__(model, threads)
        self.folder, self.scan_s = folder, []

    def _load(self, data: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(self.folder, "ort")
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def _scan(self, k, c):
        t = time.process_time()
        y = super()._scan(k, c)
        self.scan_s.append(time.process_time() - t)
        return y


def module_of(node: str, op: str) -> str:
    """``/model/backbone/layer.1/attention/Add_2`` -> ``backbone/layer.1/attention``; nodes outside the model's
    modules (the post-processing, the output resizes and the decoder glue) as ``outside modules: <op type>``."""
    parts = node.strip("/").split("/")
    if parts and parts[0] == "model":
        parts = parts[1:]
    return "/".join(parts[:3]) if len(parts) > 3 else "/".join(parts[:-1]) or f"outside modules: {op}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--outputs", default=None, help="e.g. depth,semseg (default: all four)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from m2hmx.data.sources import open_source
    from m2hmx.predictor import Predictor

    source = open_source("synthetic:200000")
    frames = [source[i].rgb for i in range(0, 300, 15)]
    source.close()
    outputs = tuple(args.outputs.split(",")) if args.outputs else None
    predictor = Predictor.from_checkpoint(BUNDLED, tasks=outputs)
    with tempfile.TemporaryDirectory() as folder:
        engine = ProfiledForward(predictor.model, 1, folder)
        predictor._forward = engine
        predictor.predict(frames[0])  # builds (or loads) the graphs
        engine.scan_s.clear()
        t, c = time.perf_counter(), time.process_time()
        for i in range(args.frames):
            predictor.predict(frames[i % len(frames)])
        wall, cpu = (time.perf_counter() - t) / args.frames, (time.process_time() - c) / args.frames
        files = [(name, session.end_profiling()) for sessions in engine._sessions.values()
                 for name, (session, _, _) in zip(GRAPHS, sessions)]
        by_graph, by_type, by_module = collections.Counter(), collections.Counter(), collections.Counter()
        for graph, path in files:
            with open(path) as f:
                events = json.load(f)
            runs = sum(1 for e in events if e.get("name") == "model_run")
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    ms = e["dur"] / 1000 / runs
                    by_graph[graph] += ms
                    by_type[(graph, e["args"]["op_name"])] += ms
                    by_module[(graph, module_of(e["name"][:-len("_kernel_time")], e["args"]["op_name"]))] += ms
    nodes = sum(by_graph.values())
    scans = 1000 * sum(engine.scan_s) / args.frames
    print(f"bundled model, Predictor.predict, {args.frames} frames 240x320 (network 144x192), outputs "
          f"{args.outputs or 'all'}, 1 thread; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"per frame: {1000 * wall:.1f} ms wall, {1000 * cpu:.1f} ms CPU; ONNX Runtime kernels {nodes:.1f} ms "
          f"(wall: on a loaded machine it includes waiting for a core), numba scans {scans:.1f} ms CPU")
    print("\nby graph:")
    for graph in GRAPHS:
        print(f"  {graph:<8} {by_graph[graph]:7.2f} ms {100 * by_graph[graph] / nodes:5.1f} %")
    for title, counter in (("by operator type", by_type), ("by module", by_module)):
        print(f"\n{title} (top {args.top}):")
        for (graph, name), ms in counter.most_common(args.top):
            print(f"  {graph:<8} {name:<52} {ms:7.2f} ms {100 * ms / nodes:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
