"""Importers: framework model files -> validated `refq.graph.Graph`.

- `import_keras(path, architecture=None)`: Keras legacy HDF5 (`.h5`/`.hdf5`, Keras 2 and 3),
  `.keras` archives, and weights-only files (`.weights.h5`, Keras 2 `save_weights` HDF5) with an
  architecture JSON. See `keras_h5` (file dialects), `keras_config` (config dialects and
  topology), `keras_check` (which layers can be imported), `keras_layers` (layer conversion, with
  `keras_activations` and `keras_fields`) and `keras_graph` (assembly and checks).
"""
from .keras_h5 import import_keras

__all__ = ["import_keras"]
