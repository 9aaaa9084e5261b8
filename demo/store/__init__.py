"""Models for the server: each set of weights loaded once, in the background, shared by every
request and tab, with a status the page shows while weights download.

The store in rooms:

- `demo.store.interface`, the interface and the keys: what the app needs of models, as two protocols, a `Store`
  (`get(key)` gives a `ServedModel`, `statuses` what is loading, ready or failed) and a
  `ServedModel` (one set of weights with everything a request reads: classify, batched, Grad-CAM,
  block tables, both wirings' passes, the operation view's pass and weights, the exports), and
  what every store shares (weights keys, candidates, titles, when loading has settled, a
  prediction's top-k, the preprocessing);
- `demo.store.cache`: the translation cache (checked on every read, made once with TensorFlow on
  a miss) and its int8 graph;
- `demo.store.served`: the served model of this process, from the translation (ONNX Runtime and
  NumPy), and its Keras twin for backend 'tf';
- `demo.store.local`: `ModelStore`, the `Store` of this process (background loading, slots);
- `demo.store.compared`: Inception V3 for the Compare view, prepared on first need;
- `demo.store_remote` implements both protocols over Ray Serve replicas.

Page text is the UI's: these modules only report states.
"""

from demo.store.interface import (
    ActivationSource, Prediction, ServedModel, SlotStatus, State, Store, WarmingUp, candidate_sources,
    default_candidates, has_settled, prepared, weights_key, weights_title,
)
from demo.store.cache import IMPORTS, TranslationCache, calibration_paths
from demo.store.served import KERAS_WAIT_S, KerasServedModel, LocalServedModel
from demo.store.local import ModelStore
from demo.store.compared import ComparedModel, ComparedModels

__all__ = [
    "IMPORTS", "KERAS_WAIT_S", "ActivationSource", "ComparedModel", "ComparedModels", "KerasServedModel", "LocalServedModel", "ModelStore", "Prediction",
    "ServedModel", "SlotStatus", "State", "Store", "TranslationCache", "WarmingUp", "calibration_paths",
    "candidate_sources", "default_candidates", "has_settled", "prepared", "weights_key", "weights_title",
]
