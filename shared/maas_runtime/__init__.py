"""maas_runtime: the serving side of the kit, shipped as the Lambda layer.

Loads a verified model artifact and answers requests with ONNX Runtime. It imports
nothing heavier than onnxruntime, tokenizers and numpy, and knows nothing of HTTP or AWS.
"""

from .artifact import file_entries, read_card, sha256_of, verify_artifact
from .card import CARD_FILE, MODEL_FILE, ModelCard
from .engine import Engine, OnnxEngine
from .errors import ArtifactError, InvalidInput, LimitExceeded, RuntimeLibraryError
from .model import Model, forget_models, load_model
from .tasks import Prediction

__all__ = [
    "CARD_FILE",
    "MODEL_FILE",
    "ArtifactError",
    "Engine",
    "InvalidInput",
    "LimitExceeded",
    "Model",
    "ModelCard",
    "OnnxEngine",
    "Prediction",
    "RuntimeLibraryError",
    "file_entries",
    "forget_models",
    "load_model",
    "read_card",
    "sha256_of",
    "verify_artifact",
]
