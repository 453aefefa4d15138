"""Float32 forward throughput, and each convolution's speed as a fraction of NumPy matmul speed.

    python bench/forward.py [--native-blas] [--batch 32] [--repeats 3] [--no-models] [--formulations]

Graphs: every Keras model file under tests/models/*/ and refq/data/*/, a synthetic 224x224
MobileNetV1 (conv 3x3/2 32ch, 13 depthwise 3x3 + pointwise 1x1 blocks up to 1024 channels, global
average pool, dense 1000) and the eight 3x3 convolutions of a ResNet-18 body (56x56x64 in), all with
random weights from np.random.default_rng(0). For each it prints images/s of
`refq.run(..., dtype=np.float32)` at the given batch, then times every conv2d node's forward on its
traced input (time.perf_counter, min over repeats) and reports GFLOP/s (FLOP = 2·MACs) as a fraction
of the GFLOP/s of a float32 2048x2048x2048 matmul measured in the same run: for layers of
>= 10 MFLOP per image the matmul is timed alternately with the layer, so that both see the same
share of this shared 2-CPU machine; the summary also counts against the best matmul of the run.
Target: those layers reach >= 50 % of matmul throughput. Depthwise convolutions are memory bound
(2 FLOP per weight and pixel read); they are listed with their GB/s and marked, not hidden.
--formulations compares the general conv formulations (row-fold, im2col, kh·kw tap matmuls) instead.

This machine sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which force slower BLAS kernels.
--native-blas re-executes this script with both removed from its own environment; the header says
which environment was used.
"""
from __future__ import annotations

import os
import sys

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_WAS_SET = "REFQ_BENCH_REMOVED_BLAS_VARS"

if __name__ == "__main__" and "--native-blas" in sys.argv and any(v in os.environ for v in BLAS_VARS):
    # OpenBLAS reads these when it is loaded, so they must go before NumPy is imported.
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    env[_WAS_SET] = " ".join(f"{k}={os.environ[k]}" for k in BLAS_VARS if k in os.environ)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import glob  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import refq  # noqa: E402
from refq.graph import Graph, Node, TensorSpec  # noqa: E402
from refq.layers import conv as conv_mod  # noqa: E402
from refq.layers import get_op  # noqa: E402

MIN_MFLOP = 10.0   # conv layers below this many MFLOP per image are listed but not counted
TARGET = 0.5       # fraction of matmul GFLOP/s a counted layer should reach


def best_time(fn, repeats, min_total=0.25, max_runs=25):
    """Min of at least `repeats` timed runs, more (up to max_runs) until min_total s were spent."""
    fn()  # warm-up
    best, total, runs = float("inf"), 0.0, 0
    while runs < repeats or (total < min_total and runs < max_runs):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    return best


_A = None


def matmul(_=None):
    """The baseline: a float32 2048x2048 @ 2048x2048 matmul."""
    global _A
    if _A is None:
        _A = np.random.default_rng(1).standard_normal((2048, 2048)).astype(np.float32)
    return _A @ _A


MM_FLOP = 2 * 2048 ** 3


def matmul_gflops(repeats):
    return MM_FLOP / best_time(matmul, max(repeats, 8)) / 1e9


def best_pair(fn, repeats, min_total=1.0, max_runs=12):
    """(min time of fn, matmul GFLOP/s) with fn and the baseline run alternately, so that both see
    the same share of this shared machine."""
    fn()
    best, best_mm, total, runs = float("inf"), float("inf"), 0.0, 0
    while runs < max(repeats, 4) or (total < min_total and runs < max_runs):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        matmul()
        t2 = time.perf_counter()
        best, best_mm = min(best, t1 - t0), min(best_mm, t2 - t1)
        total, runs = total + (t1 - t0), runs + 1
    return best, MM_FLOP / best_mm / 1e9


def blas_header(native: bool) -> str:
    removed = os.environ.get(_WAS_SET)
    present = {k: os.environ[k] for k in BLAS_VARS if k in os.environ}
    if removed:
        state = f"native: --native-blas removed {removed} for this process"
    elif present:
        state = ("machine settings in force: " + " ".join(f"{k}={v}" for k, v in present.items())
                 + " (slower kernels; try --native-blas)")
    else:
        state = "neither OPENBLAS_CORETYPE nor OPENBLAS_L2_SIZE is set" + \
                (" (nothing to remove for --native-blas)" if native else "")
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        lib = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy without mode="dicts"
        lib = "unknown"
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return (f"BLAS: {lib}; {state}; OPENBLAS_NUM_THREADS={threads}; {os.cpu_count()} CPUs; "
            f"NumPy {np.__version__}")


def mobilenet_v1(rng) -> Graph:
    """224x224 MobileNetV1 with folded batch norm (conv + bias + relu), random He weights."""
    nodes, t = [], "image"

    def add(op, attrs=None, params=None, name=None):
        nonlocal t
        name = name or f"{op}_{len(nodes)}"
        nodes.append(Node(name, op, [t], [name], dict(attrs or {}), dict(params or {})))
        t = name

    def conv(name, cin, cout, k, stride, depthwise=False):
        shape = (cin, k, k, 1) if depthwise else (cout, k, k, cin)
        fan_in = k * k * (1 if depthwise else cin)
        w = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        attrs = {"strides": [stride, stride], "padding": "same"}
        if depthwise:
            attrs["groups"] = cin
        add("conv2d", attrs, {"weight": w, "bias": np.zeros(shape[0], np.float32)}, name)
        add("relu")

    conv("conv1", 3, 32, 3, 2)
    cin = 32
    blocks = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + \
             [(2, 1024), (1, 1024)]
    for i, (stride, cout) in enumerate(blocks, 1):
        conv(f"dw{i}", cin, cin, 3, stride, depthwise=True)
        conv(f"pw{i}", cin, cout, 1, 1)
        cin = cout
    add("global_avg_pool2d", name="pool")
    w = (rng.standard_normal((1000, 1024)) * np.sqrt(1.0 / 1024)).astype(np.float32)
    add("dense", {}, {"weight": w, "bias": np.zeros(1000, np.float32)}, "fc")
    add("softmax", name="probs")
    g = Graph([TensorSpec("image", (None, 224, 224, 3), "float32")], [t], nodes,
              name="mobilenet_v1_224 (synthetic)")
    return g.validate()


def resnet_body(rng) -> Graph:
    """The 3x3 convolutions of a ResNet-18 body (56x56x64 input; folded BN, relu; no shortcuts):
    the general (rowfold / im2col) conv paths on the brief's realistic shapes."""
    nodes, t, cin = [], "x", 64
    for i, (cout, stride) in enumerate([(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                                        (512, 2), (512, 1)], 1):
        w = (rng.standard_normal((cout, 3, 3, cin)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
        nodes.append(Node(f"conv{i}", "conv2d", [t], [f"conv{i}"],
                          {"strides": [stride, stride], "padding": "same"},
                          {"weight": w, "bias": np.zeros(cout, np.float32)}))
        nodes.append(Node(f"relu{i}", "relu", [f"conv{i}"], [f"relu{i}"]))
        t, cin = f"relu{i}", cout
    g = Graph([TensorSpec("x", (None, 56, 56, 64), "float32")], [t], nodes,
              name="resnet18_body_3x3 (synthetic)")
    return g.validate()


def conv_kind(node, in_shape, out_shape) -> str:
    o, kh, kw, cg = node.params["weight"].shape
    s = "x".join(map(str, node.attrs["strides"]))
    g = node.attrs["groups"]
    if cg == 1 and g == in_shape[3]:
        return f"depthwise {kh}x{kw}/{s}"
    if kh == kw == 1 and g == 1:
        return f"1x1/{s} matmul"
    path = "rowfold" if g == 1 and conv_mod._use_rowfold((o, kh, kw, cg), out_shape[1], node.attrs["strides"],
                                                             node.attrs["dilations"]) else "im2col"
    return f"{kh}x{kw}/{s} g{g} " + path


def bench_graph(graph, batch, repeats, rng):
    """Images/s of the whole forward and one record per conv2d node (timed on its traced input)."""
    mm_before = matmul_gflops(repeats)
    shapes = graph.infer_shapes()
    feeds = {s.name: rng.standard_normal((batch,) + tuple(s.shape[1:])).astype(np.float32)
             for s in graph.inputs}
    t_run = best_time(lambda: refq.run(graph, feeds, dtype=np.float32), repeats)
    trace = refq.run(graph, feeds, dtype=np.float32, trace=True)
    op = get_op("conv2d")
    layers = []
    for node in graph.topological_order():
        if node.op != "conv2d":
            continue
        x = trace[node.inputs[0]]
        params = {k: v.astype(np.float32) for k, v in node.params.items()}
        in_shape, out_shape = shapes[node.inputs[0]], shapes[node.outputs[0]]
        mflop = 2 * op.macs([in_shape], out_shape, node.attrs, node.params) / 1e6
        run_layer = lambda: op.forward([x], params, node.attrs)  # noqa: E731
        if mflop >= MIN_MFLOP:  # timed alternately with the baseline: the ratio compares like with like
            t, mm = best_pair(run_layer, repeats)
        else:
            t, mm = best_time(run_layer, repeats), mm_before
        layers.append({"graph": graph.name, "name": node.name, "mm": mm,
                       "kind": conv_kind(node, in_shape, out_shape),
                       "io": f"{tuple(in_shape[1:])}->{tuple(out_shape[1:])}".replace(" ", ""),
                       "mflop": mflop, "ms": t * 1e3, "gflops": mflop * batch / 1e3 / t,
                       "gbs": (x.nbytes + trace[node.outputs[0]].nbytes) / t / 1e9,
                       "counted": mflop >= MIN_MFLOP})
    return {"name": graph.name, "nodes": len(graph.nodes), "t_run": t_run, "layers": layers,
            "mm": mm_before}


def print_graph(res, batch, mm_best):
    t_run = res["t_run"]
    print(f"\n== {res['name']}: {res['nodes']} nodes, batch {batch}: {batch / t_run:.1f} images/s "
          f"({t_run * 1e3:.0f} ms per batch)")
    print(f"   {'conv layer':<24}{'kind':<24}{'in -> out':<30}{'MFLOP/img':>10}{'ms':>9}"
          f"{'GFLOP/s':>9}{'of mm':>7}{'GB/s':>7}  note")
    for r in res["layers"]:
        r["ratio"], r["ratio_best"] = r["gflops"] / r["mm"], r["gflops"] / mm_best
        note = "" if not r["counted"] else ("" if r["ratio"] >= TARGET else "below 50%")
        if not r["counted"]:
            note = f"< {MIN_MFLOP:g} MFLOP, not counted"
        if r["kind"].startswith("depthwise"):
            note = "memory bound (depthwise)" + (f"; {note}" if note else "")
        print(f"   {r['name'][:23]:<24}{r['kind']:<24}{r['io']:<30}{r['mflop']:>10.1f}{r['ms']:>9.2f}"
              f"{r['gflops']:>9.1f}{r['ratio']:>7.0%}{r['gbs']:>7.1f}  {note}")
    t_conv = sum(r["ms"] for r in res["layers"])
    print(f"   conv layers, timed one by one: {t_conv:.0f} ms of the {t_run * 1e3:.0f} ms forward")


def tap_matmuls(x, w, strides, pads):
    """The third formulation: kh·kw matmuls, one per tap on a (copied) shifted view, accumulated."""
    xp = conv_mod.pad_hw(x, pads)
    (sh, sw), (o, kh, kw, c) = strides, w.shape
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    y, tmp = np.zeros((x.shape[0] * oh * ow, o), x.dtype), np.empty((x.shape[0] * oh * ow, o), x.dtype)
    for u in range(kh):
        for v in range(kw):
            tap = np.ascontiguousarray(xp[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw])
            y += np.matmul(tap.reshape(-1, c), w[:, u, v].T, out=tmp)
    return y.reshape(x.shape[0], oh, ow, o)


def formulations(batch, repeats):
    """General (group-1, 3x3) conv: refq's choice vs row-fold, im2col and tap matmuls, forced."""
    rng = np.random.default_rng(0)
    op = get_op("conv2d")
    print(f"\n== conv2d formulations, float32, batch {batch}, 3x3 'same' (fraction of matmul timed "
          "alternately)")
    print(f"   {'in -> out':<30}{'refq':>8}{'rowfold':>9}{'im2col':>8}{'taps':>8}")
    default = conv_mod._use_rowfold
    for (h, c, o, s) in [(56, 64, 64, 1), (56, 64, 128, 2), (28, 128, 128, 1), (28, 128, 256, 2),
                         (14, 256, 256, 1), (7, 512, 512, 1)]:
        x = rng.standard_normal((batch, h, h, c)).astype(np.float32)
        w = (rng.standard_normal((o, 3, 3, c)) / np.sqrt(9 * c)).astype(np.float32)
        attrs = op.normalise_attrs({"strides": [s, s], "padding": "same"}, "bench")
        pads, (oh, ow) = conv_mod.window_geometry((h, h), (3, 3), (s, s), (1, 1), "same", None)
        flop = 2 * batch * oh * ow * o * 9 * c
        cells = []
        try:
            for force in (None, True, False, "taps"):
                if force == "taps":
                    fn = lambda: tap_matmuls(x, w, (s, s), pads)  # noqa: E731
                else:
                    conv_mod._use_rowfold = default if force is None else (lambda *a, f=force: f)
                    fn = lambda: op.forward([x], {"weight": w}, attrs)  # noqa: E731
                t, mm = best_pair(fn, repeats, min_total=0.5)
                cells.append(flop / t / 1e9 / mm)
        finally:
            conv_mod._use_rowfold = default
        io = f"({h},{h},{c})->({oh},{ow},{o}) s{s}"
        print(f"   {io:<30}" + "".join(f"{v:>{k}.0%}" for v, k in zip(cells, (8, 9, 8, 8))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native-blas", action="store_true",
                    help="re-execute with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-models", action="store_true", help="only the synthetic graphs")
    ap.add_argument("--formulations", action="store_true",
                    help="only compare the general conv formulations (row-fold, im2col, tap matmuls)")
    args = ap.parse_args(argv)

    print(blas_header(args.native_blas))
    if args.formulations:
        formulations(args.batch, args.repeats)
        return
    rng = np.random.default_rng(0)
    graphs = []
    if not args.no_models:
        paths = sorted(glob.glob(os.path.join(ROOT, "tests", "models", "*", "*")) +
                       glob.glob(os.path.join(ROOT, "refq", "data", "*", "*")))
        for p in paths:
            if p.endswith((".h5", ".hdf5", ".keras")):
                try:
                    g = refq.import_keras(p)
                except refq.RefqError as e:
                    print(f"skipped {os.path.relpath(p, ROOT)}: {type(e).__name__}: {e}")
                    continue
                g.name = os.path.relpath(p, ROOT)
                graphs.append(g)
    graphs.append(mobilenet_v1(np.random.default_rng(0)))
    graphs.append(resnet_body(np.random.default_rng(0)))

    results = [bench_graph(g, args.batch, args.repeats, rng) for g in graphs]
    samples = [res["mm"] for res in results] + [r["mm"] for res in results for r in res["layers"]]
    mm = max(samples)
    print(f"float32 matmul 2048^3: best {mm:.1f} GFLOP/s, median {np.median(samples):.1f} over "
          f"{len(samples)} samples taken through the run.\n'of mm' = layer GFLOP/s / matmul GFLOP/s "
          f"timed alternately with the layer (layers >= {MIN_MFLOP:g} MFLOP/image) or just before the "
          f"graph (the others).")
    for res in results:
        print_graph(res, args.batch, mm)

    print()
    for res in results:
        c = [r for r in res["layers"] if r["counted"]]
        if c:
            print(f"   {res['name']}: {sum(r['ratio'] >= TARGET for r in c)}/{len(c)} counted conv "
                  f"layers reach {TARGET:.0%}")
    rows = [r for res in results for r in res["layers"]]
    counted = [r for r in rows if r["counted"]]
    ok = [r for r in counted if r["ratio"] >= TARGET]
    dw = [r for r in rows if r["kind"].startswith("depthwise")]
    if counted:
        worst = min(counted, key=lambda r: r["ratio"])
        print(f"SUMMARY: {len(ok)}/{len(counted)} conv layers of >= {MIN_MFLOP:g} MFLOP/image reach "
              f">= {TARGET:.0%} of matmul GFLOP/s ({len(ok) / len(counted):.0%}); median "
              f"{np.median([r['ratio'] for r in counted]):.0%}, min {worst['ratio']:.0%} ({worst['name']}); "
              f"against the best matmul sample of the run instead: "
              f"{sum(r['ratio_best'] >= TARGET for r in counted)}/{len(counted)}")
    for r in counted:
        if r["ratio"] < TARGET:
            print(f"   below target: {r['graph']} / {r['name']} ({r['kind']}, {r['mflop']:.1f} "
                  f"MFLOP/img): {r['ratio']:.0%}")
    if dw:
        print(f"   depthwise convs ({len(dw)}, {sum(r['counted'] for r in dw)} of them >= "
              f"{MIN_MFLOP:g} MFLOP/image) are memory bound: {min(r['ratio'] for r in dw):.0%} to "
              f"{max(r['ratio'] for r in dw):.0%} of matmul, {min(r['gbs'] for r in dw):.1f} to "
              f"{max(r['gbs'] for r in dw):.1f} GB/s of activations in+out")


if __name__ == "__main__":
    main()
