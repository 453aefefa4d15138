"""The refq model format: one HDF5 file, `NAME.refq.h5`.

Layout (format version `FORMAT_VERSION`):
- root attribute `refq_format`: the format version string;
- root attribute `graph`: the graph as JSON text (name, inputs with shapes and dtypes, outputs,
  nodes in topological order with name, op, inputs, outputs, attrs, and a free `meta` dict);
- datasets `/params/<node>/<param>`: every parameter array, dtype as stored in the graph, with a
  Fletcher-32 checksum on its chunks. Node names are escaped for HDF5 paths (`escape_name`).
- optional sections: a group `/<section>` whose attribute `json` holds a JSON document, e.g.
  `/encodings` (the quantization simulation: quantizer placement, settings and encodings);
- root attribute `refq_checksums`: JSON text {part: SHA-256 hex digest} over every other part:
  `refq_format` and `graph` (the attribute's UTF-8 bytes), `/<section>` (its JSON text's UTF-8
  bytes) and `/params/<node>/<param>` (the bytes "<dtype.str> <shape as a JSON list>\\n" followed
  by the array's C-order bytes). Fletcher-32 misses damage to attributes, dtypes and shapes; the
  digests do not.

Loading checks, in order: the version (a file of another major version, or of 1.0, which has no
digests, is refused: a damaged version number must not switch the checks off); that the parts in
the file are exactly the parts the digests list, and every digest; UTF-8 text; strict JSON (no
NaN/Infinity, numbers within float64/int64 range, nesting at most `MAX_JSON_DEPTH` levels); the
type of every graph JSON field (`Graph.from_json`); parameters of real numeric dtypes in datasets
under groups (no links); then `Graph.validate`. Every failure is one line naming the file, the part
and what to do. Loading never executes or unpickles anything.

Saving validates the graph, checks that its JSON reads back under the rules above, and writes a
temporary file that it renames over the target (`atomic_path`); dataset timestamps are off, so the
same graph and sections give byte-identical files.

Modules: `layout` (version, part names, digests), `strict_json` (the JSON rules), `reader`
(loading and `compute_checksums`), `writer` (saving).
"""
from __future__ import annotations

from .layout import CHECKSUMS, FORMAT_VERSION, escape_name
from .reader import compute_checksums, load, load_section, read_graph_json
from .strict_json import MAX_JSON_DEPTH
from .writer import save

__all__ = ["save", "load", "load_section", "FORMAT_VERSION", "read_graph_json", "escape_name",
           "compute_checksums", "CHECKSUMS", "MAX_JSON_DEPTH"]
