"""AIMET encodings JSON, versions 0.6.1 and 1.0.0: write a QuantSim's encodings, read them back.

The public entry point; the work is split in three modules:
    `refq.exporters.aimet_export`  the format (layouts, names, exactness), the offset rules
                                   (`exported_offset` and its inverse) and the writer
                                   (`aimet_encodings_dict`, `export_aimet_encodings`);
    `refq.exporters.aimet_parse`   reading and validating a file (version/layout detection,
                                   per-entry checks, grids rebuilt from the offsets);
    `refq.exporters.aimet_load`    `load_aimet_encodings`: the file's entries onto a new QuantSim.
"""
from .aimet_export import (SUPPORTED_VERSIONS, aimet_encodings_dict, export_aimet_encodings,
                           exported_offset)
from .aimet_load import load_aimet_encodings

__all__ = ["export_aimet_encodings", "load_aimet_encodings", "aimet_encodings_dict",
           "exported_offset", "SUPPORTED_VERSIONS"]
