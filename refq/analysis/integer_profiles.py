"""The measurement behind the integer-model section (`refq.analysis.integer`): for each numerics
profile, `refq.fixedpoint.compare.compare(sim, profile, data)` on the same data, or why it did
not run.

    outcomes, batches = compare_profiles(sim, data, profiles=["tflite", "onnx"])

Each outcome is {"name", "status", "error", "report"}: status "ok" with compare's report (error
""); "refused" when the profile refuses the model (an op or attribute its target does not define,
e.g. TFLite pools with ceil_mode; a batch norm left unfolded), with its one-line error and no
report; "failed" when its integer run fails on the data (an accumulator overflow under the "error"
policy), likewise. Bad data (empty, NaN, wrong shape) raises the refq error, naming the input.

Data: an array, a dict of arrays or a re-iterable of feed batches (`refq.analysis.build.Batches`),
as `refq.data_io.iterate_batches` takes them; it is read once per profile, batch by batch (a
one-shot iterator, such as a generator, is read into memory once, since every profile needs a
pass). `max_samples` limits the comparison to the first samples: the cost is about three forward
passes per sample and profile (the traced profile run, the traced faithful run, the QuantSim run).
`batches` (a CheckedBatches) counts the batches and samples of the last pass.
"""
from __future__ import annotations

import numpy as np

from ..data_io import check_batched, check_data, iterate_batches
from ..errors import FixedPointError, InputError, UnsupportedLayerError, one_line
from ..fixedpoint.compare import compare
from ..fixedpoint.lowering import lower
from ..fixedpoint.profiles import PROFILES, get_profile
from ..progress import progress, stage

__all__ = ["compare_profiles", "CheckedBatches", "profile_records", "run_profile"]


class CheckedBatches:
    """The data as a re-iterable of checked feed batches: each pass checks every array (numeric,
    batched, non-empty, finite: `refq.data_io.check_data`) and counts the batches and samples."""

    def __init__(self, sim, data, batch_size, max_samples=None):
        if max_samples is not None and (isinstance(max_samples, bool) or
                                        not isinstance(max_samples, (int, np.integer)) or
                                        max_samples < 1):
            raise InputError(f"integer section: max_samples must be a positive integer or None, "
                             f"got {max_samples!r}")
        self.graph, self.batch_size, self.max_samples = sim.graph, batch_size, max_samples
        if isinstance(data, (np.ndarray, dict)):
            feeds = data if isinstance(data, dict) else {sim.graph.inputs[0].name: data}
            if not feeds:
                raise InputError("integer section: the data holds no arrays; give at least one "
                                 "non-empty batch")
            for name, x in feeds.items():
                check_batched(np.asarray(x), "integer section data", name)
        elif iter(data) is data:          # one-shot: every profile needs a pass
            data = list(data)
        self.data = data
        self.batches = self.samples = 0

    def __iter__(self):
        self.batches = self.samples = 0
        for feeds in iterate_batches(self.data, self.graph, self.batch_size):
            if self.max_samples is not None:
                if self.samples >= self.max_samples:
                    return
                feeds = {k: v[:self.max_samples - self.samples] for k, v in feeds.items()}
            for name, x in feeds.items():
                check_data(np.asarray(x), "integer section data", name)
            self.batches += 1
            self.samples += int(np.shape(next(iter(feeds.values())))[0]) if feeds else 0
            yield feeds


def profile_records(profiles) -> list:
    """The Profile records to compare, in the given order without repeats (default: all shipped);
    an unknown name raises FixedPointError listing the known ones."""
    if profiles is None:
        profiles = list(PROFILES)
    elif isinstance(profiles, str) or not hasattr(profiles, "__iter__"):
        profiles = [profiles]
    out = {}
    for p in profiles:
        p = get_profile(p)
        out.setdefault(p.name, p)
    if not out:
        raise InputError("integer section: no profile given; name at least one (`refq profiles` "
                         "lists them)")
    return list(out.values())


def run_profile(sim, profile, batches, quiet) -> dict:
    """{"name", "status": ok|refused|failed, "error", "report"}: compare() of one profile."""
    name = profile.name
    with stage(f"integer {name}", quiet) as st:
        try:
            graph = lower(sim, profile)
        except (FixedPointError, UnsupportedLayerError) as e:
            st.detail = "refused"
            return {"name": name, "status": "refused", "error": one_line(e), "report": None}
        try:
            report = compare(sim, profile, batches, quiet=quiet, graph=graph)
        except FixedPointError as e:
            if batches.batches == 0:
                raise InputError("integer section: the data holds no batch; give at least one "
                                 "sample") from None
            st.detail = "failed on the data"
            return {"name": name, "status": "failed", "error": one_line(e), "report": None}
        st.detail = f"{report['summary']['local_differ_elements']:,} values differ"
    return {"name": name, "status": "ok", "error": "", "report": report}


def compare_profiles(sim, data, *, profiles=None, batch_size=None, quiet=True,
                     max_samples: int | None = None) -> tuple:
    """(outcomes, batches): `run_profile` of calibrated QuantSim `sim` on `data` for each of
    `profiles` (names or Profile records; default: every shipped profile), in order (module
    docstring). InputError for a model that is not a QuantSim, empty or non-finite data, a bad
    max_samples; FixedPointError for an unknown profile name."""
    from ..quant.quantsim import QuantSim

    if not isinstance(sim, QuantSim):
        raise InputError(f"integer section: needs a calibrated QuantSim, got "
                         f"{type(sim).__name__}; quantize the model first (`refq quantize`)")
    profs = profile_records(profiles)
    batches = CheckedBatches(sim, data, batch_size, max_samples)
    outcomes = [run_profile(sim, p, batches, quiet)
                for p in progress(profs, total=len(profs), desc="integer profiles", quiet=quiet,
                                  unit="profile")]
    return outcomes, batches
