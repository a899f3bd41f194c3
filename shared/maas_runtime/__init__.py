"""maas_runtime: the serving side of the kit, shipped as the Lambda layer.

Loads a verified model artifact and answers requests (and explains its answers) with ONNX
Runtime. It imports nothing heavier than onnxruntime, tokenizers and numpy (and PyNaCl, where a
function requires signed artifacts), and knows nothing of HTTP or AWS.
"""

from .artifact import file_entries, read_card, sha256_of, verify_artifact
from .card import CARD_FILE, MODEL_FILE, ModelCard
from .engine import Engine, OnnxEngine
from .errors import ArtifactError, InvalidInput, LimitExceeded, NotSupported, RuntimeLibraryError
from .model import Model, forget_models, load_model
from .signing import ENV_SIGNING_PUBLIC_KEYS, SignatureError, TrustedKeys
from .tasks import Prediction

__all__ = [
    "CARD_FILE",
    "ENV_SIGNING_PUBLIC_KEYS",
    "MODEL_FILE",
    "ArtifactError",
    "Engine",
    "InvalidInput",
    "LimitExceeded",
    "Model",
    "ModelCard",
    "NotSupported",
    "OnnxEngine",
    "Prediction",
    "RuntimeLibraryError",
    "SignatureError",
    "TrustedKeys",
    "file_entries",
    "forget_models",
    "load_model",
    "read_card",
    "sha256_of",
    "verify_artifact",
]
