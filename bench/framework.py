"""Framework speed: refq's float, simulated and integer forwards on three standard
models, as ratios against baselines measured in the same run.

    python bench/framework.py [--native-blas] [--quick] [--models NAME ...] [--repeats R]
                              [--min-seconds S]

Models (bench/architectures.py, random weights, non-trivial batch norms): MobileNetV2-1.0 at 224,
ResNet50 at 224, MobileNetV2-0.35 at 96; inputs N(0, 1) float32 from np.random.default_rng(0).
For each model it prints, beside its target:
- float32 forward (`refq.Plan(graph, np.float32).run`, the plan built once, as a framework's
  compiled model is; like a framework's float32 inference, it folds each batch norm into the
  convolution before it, `refq.plan`) at batch 32: images/s, whole-model GFLOP/s (FLOP = 2·MACs of
  refq.summarize) and its share of the GFLOP/s of NumPy's float32 2048x2048x2048 matmul, the two
  timed alternately (same share of this shared machine);
- time per image at batch 128 / time per image at batch 32, the two timed alternately in a
  rotation of their own (target <= 1);
- batch 1: the share of `Plan.run`'s time spent outside the computation of its steps = (run
  time − the sum of the step times) / run time, the steps timed inside the run (`step_times`:
  perf_counter around each step's computation); also `refq.run` at batch 1, which builds the plan
  (validation, parameter copies) on every call;
- a model quantized with refq's QuantSim (BN folded, per-channel W8A8 config 'per_channel', minmax
  calibration on a few random batches) and lowered for profile `tflite`: simulated forward
  (`sim.plan().run`) / float32 forward and integer forward (`IntPlan.run`), each plan built once
  as the float one is, / float32 forward at batch 32, timed alternately (targets <= 1.2 and <= 1.5); the
  float forward is the plan of the model as given (with its batch norms); the ratios against the
  BN-folded float graph are printed beside;
- where `tensorflow` (with Keras 3) and `ai_edge_litert` import (refq never installs them; install
  them in the benchmark's own environment, e.g. `pip install tensorflow ai-edge-litert`), unless
  --no-frameworks: Keras side by side, the same keras.applications model imported into refq
  (refq / Keras at batch 32, target <= 1; `keras_side_by_side`), and LiteRT's reference kernels
  on the architecture converted to a fully integer .tflite (LiteRT time per image / refq integer
  time per image, target >= 10; `litert_side_by_side`); one line says what was skipped and why.
On MobileNetV2-0.35 also calibration (`QuantSim.compute_encodings`, default batch size) on 256
images / one float32 forward over the same images (target <= 2), and the tracemalloc peak of the
calibration on 64 and on 256 images beside that of a float forward at batch 32: bounded by one
batch means the two calibration peaks are about equal.

Times are the minimum over --repeats runs, or more for a fast callable: its runs go on until
they add up to --min-seconds (default 1 s; at most MAX_REPEATS runs), after one warm-up run unless
--quick, each run starting SETTLE seconds after the previous one ends. The ratios against targets
are ratios of those minima; beside the quantized modes and Keras the median of the ratios within
a round is printed too (the two runs back to back: robust to this machine's speed drifting
between rounds). From its second run on, a plan computes half of a large batch in a forked twin
process (`refq.plan`, `refq.twin`): the warm-up run is the first, so the timed runs use the
twin. A full run takes about 5-10 minutes on this 2-CPU machine;
--quick (one repeat, no warm-up, fewer batch-1 runs) about 2.
This machine sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which force slower BLAS kernels;
--native-blas re-executes this script with both removed from its own environment; the header says
which environment was used.
"""
from __future__ import annotations

import os
import sys

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_WAS_SET = "REFQ_BENCH_REMOVED_BLAS_VARS"   # the variable bench/forward.py's header reads

if __name__ == "__main__" and "--native-blas" in sys.argv and \
        any(v in os.environ for v in BLAS_VARS):
    # OpenBLAS reads these when it is loaded, so they must go before NumPy is imported.
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    env[_WAS_SET] = " ".join(f"{k}={os.environ[k]}" for k in BLAS_VARS if k in os.environ)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import refq  # noqa: E402
from architectures import ARCHITECTURES  # noqa: E402
from forward import MM_FLOP, blas_header, matmul  # noqa: E402
from refq.algorithms import fold_batch_norms  # noqa: E402
from refq.fixedpoint.lowering import lower  # noqa: E402
from refq.fixedpoint.run import IntPlan  # noqa: E402
from refq.quant.quantsim import QuantSim  # noqa: E402
from refq.summary import summarize  # noqa: E402

BATCH, BIG_BATCH = 32, 128
TARGETS = {"b128": 1.0, "outside": 0.05, "int": 1.5, "sim": 1.2, "keras": 1.0, "litert": 10.0,
           "calib_time": 2.0}
CALIB_MODEL, CALIB_IMAGES, CALIB_SMALL = "mobilenet_v2_0.35_96", 256, 64
#: Seconds between timed calls: OpenBLAS's idle threads spin about 0.1 s after a call (measured:
#: 0.10 s of CPU in a 0.5 s sleep after a 2048^3 matmul), which would take a core from the next
#: figure timed, whichever it is.
SETTLE = 0.2
#: Timed calls of a callable go on past --repeats until they add up to this many seconds
#: (--min-seconds; 0 with --quick), up to MAX_REPEATS calls (`alternate`).
MIN_SECONDS, MAX_REPEATS = 1.0, 25


class Timings(dict):
    """{name: min wall time} of `alternate`, with `samples` {name: every time, in round order}."""

    def paired(self, a: str, b: str) -> float:
        """The median over the rounds that ran both of time(a) / time(b) in that round: each round
        runs them back to back, so a drift of this machine's speed between rounds cancels."""
        n = min(len(self.samples[a]), len(self.samples[b]))
        return float(np.median([u / v for u, v in zip(self.samples[a][:n], self.samples[b][:n])]))


def alternate(fns: dict, repeats: dict, warmup: bool) -> Timings:
    """`Timings` of the callables in `fns`, run in rotation (one call of each per round, while its
    calls are not done), so that all see the same load on this machine. A callable's calls are
    done after its `repeats[name]` calls once they add up to MIN_SECONDS or reach MAX_REPEATS: a
    fast one is timed more often, so that its minimum is as stable as a slow one's."""
    if warmup:
        for fn in fns.values():
            fn()
    need, samples = dict(repeats), {k: [] for k in fns}
    if "mm" in fns:  # the baseline is cheap: always warm and at least 3 samples
        fns["mm"]()
        need["mm"] = max(3, need["mm"])

    def left(k):
        n = len(samples[k])
        return n < need[k] or (sum(samples[k]) < MIN_SECONDS and n < MAX_REPEATS)
    while any(left(k) for k in fns):
        for k, fn in fns.items():
            if left(k):
                time.sleep(SETTLE)
                t = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t)
    best = Timings({k: min(v) for k, v in samples.items()})
    best.samples = samples
    return best


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def images(rng, n, res):
    return rng.standard_normal((n, res, res, 3)).astype(np.float32)


def float_throughput(graph, macs, res, repeats, warmup, rng):
    """Batch-32 float32 forward timed alternately with the matmul baseline; then batch 128 timed
    alternately with batch 32 (a separate rotation: a batch-128 run changes what the allocator
    holds, and so the next batch-32 run's time)."""
    x32, x128 = images(rng, BATCH, res), images(rng, BIG_BATCH, res)
    plan = refq.Plan(graph, np.float32)
    run32 = lambda: plan.run(x32)  # noqa: E731
    t = alternate({"b32": run32, "mm": matmul}, {"b32": repeats, "mm": repeats}, warmup)
    big = max(1, repeats - 1)
    tb = alternate({"b128": lambda: plan.run(x128), "b32": run32},
                   {"b128": big, "b32": big}, warmup)
    gflops, mm = 2 * macs * BATCH / t["b32"] / 1e9, MM_FLOP / t["mm"] / 1e9
    return {"t32": t["b32"], "t128": tb["b128"], "gflops": gflops, "mm": mm, "share": gflops / mm,
            "b128": (tb["b128"] / BIG_BATCH) / (tb["b32"] / BATCH)}


def batch1_overhead(graph, res, runs, rng):
    """(run time, step time, refq.run time) of the batch-1 float32 Plan.run with the least total
    time; step time is the sum of the times `Plan.run(step_times=...)` reports."""
    x = images(rng, 1, res)
    plan = refq.Plan(graph, np.float32)
    best = (float("inf"), 0.0)
    plan.run(x)  # warm-up
    for _ in range(runs):
        steps = []
        t = time.perf_counter()
        plan.run(x, step_times=steps)
        best = min(best, (time.perf_counter() - t, sum(s for _, s in steps)))
    t_run = min(_timed(lambda: refq.run(graph, x, dtype=np.float32)) for _ in range(runs))
    return best[0], best[1], t_run


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def quantize(graph, res, calib_batches, calib_size, rng):
    """(QuantSim, integer graph, seconds per step): BN folded, per-channel W8A8, minmax calibration
    on `calib_batches` random batches of `calib_size` images, lowered for `tflite`."""
    steps = {}
    t = time.perf_counter()
    folded, _ = fold_batch_norms(graph)
    steps["fold"] = time.perf_counter() - t
    t = time.perf_counter()
    sim = QuantSim(folded, "per_channel", scheme="minmax")
    sim.compute_encodings([images(rng, calib_size, res) for _ in range(calib_batches)])
    steps["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    int_graph = lower(sim, "tflite")
    steps["lower"] = time.perf_counter() - t
    return sim, int_graph, steps


def quantized_modes(graph, sim, int_plan, res, repeats, warmup, rng):
    """Batch-32 times of the float32 forward of the model as given and of its BN-folded graph (the
    one the simulation runs), the simulated and the integer forwards, timed alternately."""
    x = images(rng, BATCH, res)
    plan, folded = refq.Plan(graph, np.float32), refq.Plan(sim.graph, np.float32)
    sim_plan = sim.plan()
    fns = {"float": lambda: plan.run(x),
           "folded": lambda: folded.run(x),
           "sim": lambda: sim_plan.run(x),
           "int": lambda: int_plan.run(x)}
    return alternate(fns, {k: repeats for k in fns}, warmup)


def traced_peak(fn) -> float:
    """Peak bytes allocated (tracemalloc, which sees NumPy's buffers) while fn() runs."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def calibration(graph, sim, res, repeats, warmup, rng):
    """Calibration time on CALIB_IMAGES images / one float forward over them (default batch size
    for both), and tracemalloc peaks of calibration at two set sizes and of a batch-32 forward."""
    x = images(rng, CALIB_IMAGES, res)
    plan = refq.Plan(graph, np.float32)
    t = alternate({"float": lambda: plan.run(x),
                   "calib": lambda: sim.compute_encodings(x)},
                  {"float": repeats, "calib": repeats}, warmup)
    mib = 1 / 2 ** 20
    return {"t_float": t["float"], "t_calib": t["calib"], "ratio": t["calib"] / t["float"],
            "peak_small": traced_peak(lambda: sim.compute_encodings(x[:CALIB_SMALL])) * mib,
            "peak_large": traced_peak(lambda: sim.compute_encodings(x)) * mib,
            "peak_float32": traced_peak(lambda: plan.run(x[:BATCH])) * mib}


@contextlib.contextmanager
def _quiet_fds():
    """stdout and stderr (the file descriptors: TensorFlow's C++ logs and its converter's prints)
    sent to /dev/null for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _keras_model(keras, arch, graph, **kwargs):
    """`keras.applications.<arch>` with the weights of `graph` (the benchmark's own model, whose
    nodes carry the Keras layer names): Keras' default initialisation makes the activations of
    these deep models vanish, so that every output would be the same."""
    cls, extra = arch.keras
    res = arch.resolution
    model = getattr(keras.applications, cls)(weights=None, input_shape=(res, res, 3),
                                             **extra, **kwargs)
    nodes = {n.name: n for n in graph.nodes}
    for layer in model.layers:
        if not layer.weights:
            continue
        p = nodes[layer.name].params
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            values = [p["gamma"], p["beta"], p["mean"], p["variance"]]
        elif kind == "DepthwiseConv2D":  # [C, kh, kw, 1] -> [kh, kw, C, 1]
            values = [p["weight"].transpose(1, 2, 0, 3)]
        elif kind == "Conv2D":  # OHWI -> HWIO
            values = [p["weight"].transpose(1, 2, 3, 0)]
        elif kind == "Dense":
            values = [p["weight"].T]
        else:
            raise ValueError(f"layer '{layer.name}': no weight mapping for {kind}")
        if "bias" in p:
            values.append(p["bias"])
        layer.set_weights([np.asarray(v, np.float32) for v in values])
    return model


def keras_side_by_side(arch, graph, macs, repeats, warmup, rng):
    """refq / Keras at batch 32 on the same model, or None with a line saying why not.

    The Keras model is `keras.applications.<arch>` with the weights of the benchmark's model
    (`_keras_model`), saved as a .keras file and imported with `refq.import_keras`, so that both
    run the same function (their outputs are compared); Keras is timed eagerly and as a
    tf.function (the faster counts), refq as a Plan of the imported graph built once, alternately
    with the matmul baseline."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet_fds():
            import tensorflow as tf  # never a refq dependency
            import keras
    except ImportError as e:
        print(f"   Keras:  skipped: tensorflow/keras is not importable here ({e}); refq never "
              "installs it")
        return None
    x = images(rng, BATCH, arch.resolution)
    try:
        with _quiet_fds():
            model = _keras_model(keras, arch, graph)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"{arch.keras[0]}.keras")
                model.save(path)
                imported = refq.import_keras(path)
        compiled = tf.function(lambda v: model(v, training=False))
        plan = refq.Plan(imported, np.float32)
        ref = plan.run(x)[imported.outputs[0]]
        got = np.asarray(compiled(x))
        diff = float(np.max(np.abs(ref - got)))
        t = alternate({"eager": lambda: model(x, training=False), "function": lambda: compiled(x),
                       "refq": lambda: plan.run(x), "mm": matmul},
                      {"eager": repeats, "function": repeats, "refq": repeats, "mm": repeats},
                      warmup)
    except Exception as e:  # an optional comparison must not end the benchmark
        print(f"   Keras:  skipped: {_first_line(e)}")
        return None
    keras_t = min(t["eager"], t["function"])
    share = 2 * macs * BATCH / keras_t / 1e9 / (MM_FLOP / t["mm"] / 1e9)
    ratio = t["refq"] / keras_t
    print(f"   Keras {keras.__version__} (TensorFlow {tf.__version__}), the same model imported into "
          f"refq (outputs differ by at most {diff:.1e}; top-1 agrees on "
          f"{np.mean(ref.argmax(-1) == got.argmax(-1)):.0%}): eager {t['eager'] * 1e3:.0f} ms, "
          f"tf.function {t['function'] * 1e3:.0f} ms, {share:.0%} of matmul GFLOP/s; refq "
          f"{t['refq'] * 1e3:.0f} ms; refq / Keras = {ratio:.2f} (target <= {TARGETS['keras']:g}) "
          f"{mark(ratio <= TARGETS['keras'])}; median of refq / tf.function within a round "
          f"({len(t.samples['refq'])} rounds): {t.paired('refq', 'function'):.2f}", flush=True)
    return {"keras": ratio, "keras_ms": keras_t * 1e3, "keras_share": share}


def litert_side_by_side(arch, graph, int_plan, rng):
    """LiteRT's reference kernels (BUILTIN_REF) / refq's integer forward, per image at batch 32,
    on the same model (`_keras_model`) converted to a fully integer .tflite by TFLite's converter
    (calibrated on 8 random images); or None
    with a line saying why not. The Keras model ends at its logits (classifier_activation=None):
    LiteRT's reference int8 SOFTMAX aborts the process on 1000 classes (ai-edge-litert 2.3.0).
    One timed LiteRT call after one untimed call (a reference-kernel call takes seconds to
    minutes); refq's integer time is the least of three calls or more (`alternate`) of the
    integer plan the quantized modes ran (`int_plan`, whose twin process has started,
    `refq.plan`), as a compiled model is run."""
    try:
        with _quiet_fds():
            import tensorflow as tf
            import keras
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:
        print(f"   LiteRT: skipped: ai_edge_litert or tensorflow is not importable here ({e}); "
              "refq never installs them")
        return None
    res = arch.resolution
    x = images(rng, BATCH, res)
    try:
        with _quiet_fds():
            model = _keras_model(keras, arch, graph, classifier_activation=None)
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([images(rng, 1, res)] for _ in range(8))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int8
            blob = conv.convert()
        interp = Interpreter(model_content=blob,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], [BATCH, res, res, 3])
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], np.zeros((BATCH, res, res, 3), np.int8))
        t = alternate({"litert": interp.invoke, "int": lambda: int_plan.run(x)},
                      {"litert": 1, "int": 3}, True)
    except Exception as e:
        print(f"   LiteRT: skipped: {_first_line(e)}")
        return None
    ratio = t["litert"] / t["int"]
    print(f"   LiteRT reference kernels: {t['litert']:.1f} s at batch {BATCH}, refq integer "
          f"{t['int'] * 1e3:.0f} ms; LiteRT / refq time per image = {ratio:.1f} (target >= "
          f"{TARGETS['litert']:g}) {mark(ratio >= TARGETS['litert'])}", flush=True)
    return {"litert": ratio}


def bench_model(name, args, rng):
    arch = ARCHITECTURES[name]
    res = arch.resolution
    graph = arch.build(resolution=res)
    macs = sum(r["macs"] for r in summarize(graph))
    print(f"\n== {name}: {len(graph.nodes)} nodes, {macs / 1e6:.1f} M MACs per image, "
          f"{res}x{res}", flush=True)
    r = {"name": name, "target_share": arch.target_share}
    f = float_throughput(graph, macs, res, args.repeats, args.warmup, rng)
    r.update(f)
    print(f"   float32 batch {BATCH}: {BATCH / f['t32']:.1f} images/s ({f['t32'] * 1e3:.0f} ms), "
          f"{f['gflops']:.1f} GFLOP/s = {f['share']:.1%} of matmul {f['mm']:.0f} GFLOP/s "
          f"(target >= {arch.target_share:.0%}) {mark(f['share'] >= arch.target_share)}")
    print(f"   batch {BIG_BATCH}: {f['t128'] * 1e3:.0f} ms; time per image at {BIG_BATCH} / at "
          f"{BATCH} = {f['b128']:.2f} (target <= {TARGETS['b128']:g}) "
          f"{mark(f['b128'] <= TARGETS['b128'])}", flush=True)
    t_run, t_steps, t_once = batch1_overhead(graph, res, args.batch1_runs, rng)
    r["outside"] = (t_run - t_steps) / t_run
    print(f"   batch 1: Plan.run {t_run * 1e3:.1f} ms, its steps {t_steps * 1e3:.1f} ms, outside "
          f"them {r['outside']:.1%} (target <= {TARGETS['outside']:.0%}) "
          f"{mark(r['outside'] <= TARGETS['outside'])}; refq.run (builds the plan each call) "
          f"{t_once * 1e3:.1f} ms", flush=True)
    sim, int_graph, steps = quantize(graph, res, args.calib_batches, args.calib_size, rng)
    print("   quantized: BN fold {fold:.2f} s, QuantSim per_channel minmax calibration "
          "{calibrate:.2f} s".format(**steps) + f" ({args.calib_batches} x {args.calib_size} "
          f"images), lower tflite {steps['lower']:.2f} s", flush=True)
    int_plan = IntPlan(int_graph)
    q = quantized_modes(graph, sim, int_plan, res, args.repeats, args.warmup, rng)
    r["sim"], r["int"] = q["sim"] / q["float"], q["int"] / q["float"]
    print(f"   batch {BATCH}: float32 {q['float'] * 1e3:.0f} ms (BN-folded graph "
          f"{q['folded'] * 1e3:.0f} ms), sim {q['sim'] * 1e3:.0f} ms, int {q['int'] * 1e3:.0f} ms")
    print(f"   sim / float = {r['sim']:.2f} (target <= {TARGETS['sim']:g}) "
          f"{mark(r['sim'] <= TARGETS['sim'])}; int / float = {r['int']:.2f} (target <= "
          f"{TARGETS['int']:g}) {mark(r['int'] <= TARGETS['int'])}; against the BN-folded float "
          f"graph: sim {q['sim'] / q['folded']:.2f}, int {q['int'] / q['folded']:.2f}; medians "
          f"of the ratios within a round ({len(q.samples['int'])} rounds): sim "
          f"{q.paired('sim', 'float'):.2f}, int {q.paired('int', 'float'):.2f}", flush=True)
    if not args.no_frameworks:
        r.update(keras_side_by_side(arch, graph, macs, args.repeats, args.warmup, rng) or {})
        r.update(litert_side_by_side(arch, graph, int_plan, rng) or {})
    if name == CALIB_MODEL:
        c = calibration(graph, sim, res, args.repeats, args.warmup, rng)
        r["calib"] = c
        print(f"   calibration on {CALIB_IMAGES} images (default batch size): "
              f"{c['t_calib']:.2f} s, one float32 forward over them {c['t_float']:.2f} s, ratio "
              f"{c['ratio']:.2f} (target <= {TARGETS['calib_time']:g}) "
              f"{mark(c['ratio'] <= TARGETS['calib_time'])}")
        grows = c["peak_large"] / c["peak_small"]
        print(f"   calibration peak memory (tracemalloc): {c['peak_small']:.0f} MiB for "
              f"{CALIB_SMALL} images, {c['peak_large']:.0f} MiB for {CALIB_IMAGES} (x{grows:.2f}; "
              f"bounded by one batch: ~x1) {mark(grows <= 1.25)}; float32 forward at batch "
              f"{BATCH}: {c['peak_float32']:.0f} MiB", flush=True)
    return r


def print_summary(results):
    print("\nSUMMARY (ratios measured in this run; targets in brackets)")
    head = (f"   {'model':<22}{'% of mm':>9}{'(target)':>9}{'b128/b32':>10}{'(<=1)':>6}"
            f"{'outside b1':>12}{'(<=5%)':>7}{'sim/float':>11}{'(<=1.2)':>8}{'int/float':>11}"
            f"{'(<=1.5)':>8}")
    print(head)
    for r in results:
        print(f"   {r['name']:<22}{r['share']:>9.1%}{'>=' + format(r['target_share'], '.0%'):>9}"
              f"{r['b128']:>10.2f}{mark(r['b128'] <= 1):>6}{r['outside']:>12.1%}"
              f"{mark(r['outside'] <= TARGETS['outside']):>7}{r['sim']:>11.2f}"
              f"{mark(r['sim'] <= TARGETS['sim']):>8}{r['int']:>11.2f}"
              f"{mark(r['int'] <= TARGETS['int']):>8}")
    for r in results:
        if "calib" in r:
            c = r["calib"]
            grows = c["peak_large"] / c["peak_small"]
            print(f"   calibration ({r['name']}, {CALIB_IMAGES} images): time / float forward "
                  f"{c['ratio']:.2f} (<= 2) {mark(c['ratio'] <= 2)}; peak memory {CALIB_SMALL} -> "
                  f"{CALIB_IMAGES} images x{grows:.2f} (~1 when bounded by one batch) "
                  f"{mark(grows <= 1.25)}")
    for r in results:
        if "keras" in r or "litert" in r:
            parts = []
            if "keras" in r:
                parts.append(f"refq / Keras {r['keras']:.2f} (<= 1) {mark(r['keras'] <= 1)}")
            if "litert" in r:
                parts.append(f"LiteRT reference / refq integer {r['litert']:.1f} (>= 10) "
                             f"{mark(r['litert'] >= TARGETS['litert'])}")
            print(f"   {r['name']}: " + "; ".join(parts))
    met = sum(r["share"] >= r["target_share"] for r in results)
    print(f"   float32 share target met on {met}/{len(results)} models")


def main(argv=None):
    global MIN_SECONDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native-blas", action="store_true",
                    help="re-execute with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    ap.add_argument("--quick", action="store_true",
                    help="one repeat, no warm-up, fewer batch-1 runs and calibration images")
    ap.add_argument("--models", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES),
                    metavar="NAME", help=f"any of {', '.join(ARCHITECTURES)} (default: all)")
    ap.add_argument("--no-frameworks", action="store_true",
                    help="skip the Keras and LiteRT comparisons even where they are installed")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 3, "
                    "--quick 1)")
    ap.add_argument("--min-seconds", type=float, default=None,
                    help=f"timed seconds per figure and callable, beyond --repeats (default "
                    f"{MIN_SECONDS:g}, --quick 0; at most {MAX_REPEATS} runs)")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    MIN_SECONDS = args.min_seconds if args.min_seconds is not None else \
        (0.0 if args.quick else MIN_SECONDS)
    args.warmup = not args.quick
    args.batch1_runs = 5 if args.quick else 20
    args.calib_batches, args.calib_size = (1, 8) if args.quick else (2, 16)

    print(blas_header(args.native_blas))
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; repeats "
          f"{args.repeats} (and up to {MAX_REPEATS} within {MIN_SECONDS:g} s), "
          f"{'no warm-up' if not args.warmup else 'one warm-up run'} per figure")
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    results = [bench_model(name, args, rng) for name in args.models]
    print_summary(results)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"benchmark took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
