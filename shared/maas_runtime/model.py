"""A verified, loaded model: the one object handlers and the SageMaker proxy call."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from .artifact import read_card, read_verified, verify_artifact
from .engine import Engine, OnnxEngine
from .errors import InvalidInput, LimitExceeded
from .signing import TrustedKeys
from .tasks import Prediction, task_for


class Model:
    """``engine``: None runs the artifact's graph here (ONNX Runtime); a given engine runs it
    elsewhere, and then the graph file is neither opened nor verified (nor needed) here. With
    ``trusted_keys``, the card must carry a signature by one of them (card.sig), checked before the
    card is read."""

    def __init__(self, folder: str | os.PathLike, engine: Engine | None = None, trusted_keys: TrustedKeys | None = None):
        started = time.perf_counter()
        self.folder = Path(folder)
        card = read_card(self.folder, trusted_keys)
        # The graph file is checked where it is read, by the thread that builds its session (local),
        # or not at all (a remote engine runs it); the other files here.
        self.card = verify_artifact(self.folder, card, [n for n in card.files if n != card.model_file])
        task = task_for(self.card.task)
        if engine is None:
            building = _Building(self.folder, self.card)
            try:
                self.task = task(self.card, self.folder, building)
            finally:
                building.join()  # a failed load leaves no thread behind (and its session cached, to be dropped)
            self.task.engine = building.engine()
        else:
            self.task = task(self.card, self.folder, engine)
        self.max_batch = self.card.serving.max_batch
        self.load_seconds = time.perf_counter() - started

    @property
    def engine(self) -> Engine:
        """What runs the graph: the task's own (one reference, so a replaced engine is the one used)."""
        return self.task.engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self.task.engine = engine

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def predict(self, inputs, parameters=None) -> Prediction:
        """Validate a batch against the serving limits, run it, return outputs and usage."""
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be an object")
        if not isinstance(inputs, list):
            raise InvalidInput("inputs must be a list")
        if not inputs:
            raise InvalidInput("inputs must not be empty")
        if len(inputs) > self.max_batch:
            raise LimitExceeded(f"{len(inputs)} inputs; model {self.name!r} takes at most {self.max_batch} per request")
        prepared = self.task.prepare(inputs, parameters)
        return self.task.run(prepared)

    def explain(self, inputs, parameters=None) -> Prediction:
        """Per-input attributions of the model's answer (Kernel SHAP, within the card's explain limits)."""
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be an object")
        from . import explain as kernel_shap  # imported by the first explanation, not by every cold start (~3 ms)

        outputs, usage = kernel_shap.explain(self.task, self.card.explain, inputs, parameters)
        return Prediction(outputs=outputs, usage=usage)


_models: dict[tuple, Model] = {}
_lock = threading.Lock()


class _Building:
    """The engine while ONNX Runtime builds its session in a thread.

    The thread reads the graph file once, checks it against the card (artifact.read_verified) and
    builds the session from those bytes. Hashing and building a session hold no GIL, and loading
    the task's tokenizer holds it: side by side, a cold start waits for the longer of the two, not
    for both (about 35 ms less for the MiniLM on 2 cores). A task that reads the engine while it is
    made (an image task reads its input names) waits for the session there. Model then gives the
    task the built engine itself; a graph that fails its check raises ArtifactError there.
    """

    local = True  # OnnxEngine's: the task batches as for a graph run in this process

    def __init__(self, folder: Path, card):
        self._built: dict = {}
        self._thread = threading.Thread(target=self._build, args=(folder, card), name="maas-session", daemon=True)
        self._thread.start()

    def _build(self, folder: Path, card) -> None:
        try:
            model_bytes = read_verified(folder, card, card.model_file)
            from .session import get_session  # onnxruntime: imported only where a graph runs here

            self._built["engine"] = OnnxEngine(get_session(folder / card.model_file, model_bytes))
        except BaseException as exc:  # noqa: BLE001 - raised again by engine(), in the loading thread
            self._built["error"] = exc

    def join(self) -> None:
        self._thread.join()

    def engine(self) -> OnnxEngine:
        self._thread.join()
        if "error" in self._built:
            raise self._built["error"]
        return self._built["engine"]

    def __getattr__(self, name: str):
        return getattr(self.engine(), name)


def load_model(folder: str | os.PathLike, trusted_keys: TrustedKeys | None = None) -> Model:
    """The model in ``folder``, verified and loaded once per process (per set of trusted keys), then reused."""
    key = (os.path.realpath(folder), trusted_keys.ids if trusted_keys is not None else None)
    with _lock:
        model = _models.get(key)
        if model is None:
            model = Model(key[0], trusted_keys=trusted_keys)
            _models[key] = model
        return model


def forget_models(folder: str | os.PathLike | None = None) -> None:
    """Forget loaded models (all, or the one in `folder`) and their sessions: a folder that failed
    to load or was deleted must not keep its memory, nor answer for a later download."""
    with _lock:
        if folder is None:
            _models.clear()
        else:
            path = os.path.realpath(folder)
            for key in [k for k in _models if k[0] == path]:
                del _models[key]
    session = sys.modules.get(f"{__package__}.session")  # never imported: no session to drop
    if session is not None:
        session.drop_sessions(folder)
