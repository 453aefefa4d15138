"""Exporters: AIMET encodings JSON (0.6.1, 1.0.0) and its reader."""
from .aimet_encodings import (SUPPORTED_VERSIONS, aimet_encodings_dict, export_aimet_encodings,
                              exported_offset, load_aimet_encodings)

__all__ = ["export_aimet_encodings", "load_aimet_encodings", "aimet_encodings_dict",
           "exported_offset", "SUPPORTED_VERSIONS"]
