"""The per-model Lambda function: one deployment per model, which model comes from its environment.

The artifact is either packaged with the function (MAAS_MODEL_DIR) or fetched from S3
(MAAS_MODEL_S3_URI) into /tmp once per cold start, verified against the card's sha256 and kept
while the instance is warm. Routes, validation and errors are maas_api's; this module only
adapts the runtime library (maas_runtime) to them.

Handler: ``app.lambda_handler``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from maas_api.constants import (
    DEFAULT_CATALOG_FILE,
    ENV_CATALOG_PATH,
    ENV_MODEL_DIR,
    ENV_MODEL_NAME,
    ENV_MODEL_S3_URI,
    ENV_TMP_DIR,
    S3_CONNECT_TIMEOUT_S,
    S3_MAX_ATTEMPTS,
    S3_READ_TIMEOUT_S,
)
from maas_runtime import (
    CARD_FILE,
    ENV_SIGNING_PUBLIC_KEYS,
    RuntimeLibraryError,
    TrustedKeys,
    forget_models,
    load_model,
    read_card,
)
from maas_runtime.card import SIG_FILE, check_file_name

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    """Everything this function needs to know, read from the environment in one place."""

    model_name: str
    model_dir: str | None = None
    model_s3_uri: str | None = None
    catalog_path: str | None = None
    tmp_dir: str | None = None
    signing_public_keys: str | None = None
    """The keys card signatures must verify with (MAAS_SIGNING_PUBLIC_KEYS); None: unsigned artifacts load."""

    def trusted_keys(self) -> TrustedKeys | None:
        return TrustedKeys.parse(self.signing_public_keys) if self.signing_public_keys else None

    @classmethod
    def from_env(cls, env=None) -> "Config":
        env = os.environ if env is None else env
        model_dir = env.get(ENV_MODEL_DIR)
        if model_dir and not os.path.isabs(model_dir):
            model_dir = str(HERE / model_dir)
        return cls(
            model_name=env.get(ENV_MODEL_NAME, ""),
            model_dir=model_dir or None,
            model_s3_uri=env.get(ENV_MODEL_S3_URI) or None,
            catalog_path=env.get(ENV_CATALOG_PATH) or str(HERE / DEFAULT_CATALOG_FILE),
            tmp_dir=env.get(ENV_TMP_DIR) or None,
            signing_public_keys=env.get(ENV_SIGNING_PUBLIC_KEYS) or None,
        )


def _preload_packaged_model() -> threading.Thread | None:
    """Lambda's init phase: start loading a packaged model before the heavy imports below.

    Verifying the files (hashlib), building the ONNX Runtime session and its first run (which
    plans and allocates its buffers) are native code that releases the GIL, so they overlap with
    importing Powertools and pydantic (~0.1 s each). The backend's first model() call then finds
    the model loaded and warm, or waits for it.
    """
    config = Config.from_env()
    if not (config.model_name and config.model_dir):
        return None
    # ONNX Runtime's import holds the GIL (~50 ms): here, before the thread starts, rather than in
    # the thread while the imports below contend for it; the thread then goes straight to work.
    import maas_runtime.session  # noqa: F401

    def load() -> None:
        try:
            model = load_model(config.model_dir, config.trusted_keys())
            model.predict(model.task.smoke_input())
        except Exception:  # noqa: BLE001 - the backend loads again and answers the error per request
            pass

    thread = threading.Thread(target=load, name="maas-preload", daemon=True)
    thread.start()
    return thread


_preload = _preload_packaged_model()

from maas_api import ApiFunction, LambdaEntry  # noqa: E402 - after the preload starts, on purpose (see above)
from maas_api.errors import ApiError, BadGateway, GatewayTimeout, Unavailable, from_runtime  # noqa: E402


# --- the artifact from S3 --------------------------------------------------------------------

_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "ExpiredToken", "InvalidObjectState"}
_BUSY = {"SlowDown", "Throttling", "ThrottlingException", "503", "ServiceUnavailable", "RequestTimeout"}


def s3_client():
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        config=BotoConfig(
            connect_timeout=S3_CONNECT_TIMEOUT_S,
            read_timeout=S3_READ_TIMEOUT_S,
            retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        ),
    )


def _s3_error(exc: Exception, location: str) -> ApiError:
    """An S3 failure as the status a client should see; the bucket and key go to the log only.

    "Missing" is only told apart from "denied" because the function may list its own prefix
    (infra ArtifactBucket.grant_read): without s3:ListBucket, S3 answers AccessDenied for both.
    """
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    log = {"artifact": location}
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return GatewayTimeout("timed out fetching the model artifact; retry shortly", code="artifact_timeout", log=log)
    if isinstance(exc, BotoConnectionError):  # refused or reset connections, no route
        return Unavailable("the model artifact store cannot be reached; retry shortly", code="artifact_store_unreachable",
                           log=log)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return Unavailable("the model artifact is missing from its store", code="artifact_missing", log=log)
        if code in _DENIED:
            return BadGateway("the model artifact store refused access", code="artifact_access_denied", log=log)
        if code in _BUSY:
            return Unavailable("the model artifact store is busy; retry shortly", code="artifact_store_busy", log=log)
    return BadGateway("fetching the model artifact failed", code="artifact_fetch_failed", log=log)


class S3Artifact:
    """s3://bucket/prefix/ holding card.json and the files it lists, downloaded into a fresh folder."""

    def __init__(self, uri: str, tmp_dir: str | None = None, client=None, trusted_keys: TrustedKeys | None = None):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise Unavailable("this function's artifact location is misconfigured", code="misconfigured")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.tmp_dir = tmp_dir
        self._client = client
        self.trusted_keys = trusted_keys

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _get(self, name: str, dest: Path) -> None:
        key = self.prefix + name
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            with open(dest, "wb") as fh:
                for chunk in response["Body"].iter_chunks(1 << 20):
                    fh.write(chunk)
        except Exception as exc:
            raise _s3_error(exc, f"s3://{self.bucket}/{key}") from exc

    def _get_signature(self, folder: Path) -> None:
        """card.sig, fetched only where signatures are required; a missing one is left out, and the
        signature check then refuses the artifact (the function may list its prefix, so S3 tells
        "missing" from "denied")."""
        try:
            self._get(SIG_FILE, folder / SIG_FILE)
        except ApiError as exc:
            if exc.code != "artifact_missing":
                raise

    def fetch(self) -> Path:
        """Download into a new folder the card and the files it lists; one that fails is deleted.

        The files are not hashed here: load_model checks each against the card as it loads them
        (the graph as it reads it for the session), and the backend deletes a download that fails
        that check, so none is served, and no file is read and hashed twice.

        Raises ApiError: the S3 failure's status, or 503 artifact_invalid for a card that fails its
        signature check or is not a card.
        """
        folder = Path(tempfile.mkdtemp(prefix="maas-model-", dir=self.tmp_dir))
        try:
            self._get(CARD_FILE, folder / CARD_FILE)
            if self.trusted_keys is not None:
                self._get_signature(folder)
            card = read_card(folder, self.trusted_keys)
            for name in card.files:
                self._get(check_file_name(name), folder / name)
            return folder
        except RuntimeLibraryError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            error = from_runtime(exc)
            error.log["artifact"] = self.uri
            raise error from exc
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


# --- the backend: the runtime library, loaded once per instance --------------------------------


class LocalModelBackend:
    def __init__(self, config: Config, s3=None):
        self.config = config
        self.name = config.model_name
        self._s3 = s3
        self._model = None
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """Where the artifact comes from, for the log."""
        return self.config.model_dir or self.config.model_s3_uri or "(none)"

    def _folder(self) -> tuple[Path, bool]:
        """The artifact's folder, and whether it is a download of this instance's (deleted on failure)."""
        if self.config.model_dir:
            return Path(self.config.model_dir), False
        if self.config.model_s3_uri:
            source = S3Artifact(self.config.model_s3_uri, self.config.tmp_dir, client=self._s3,
                                trusted_keys=self._trusted_keys())
            return source.fetch(), True
        raise Unavailable("this function has no model configured", code="misconfigured")

    def _trusted_keys(self) -> TrustedKeys | None:
        try:
            return self.config.trusted_keys()
        except RuntimeLibraryError:
            raise Unavailable(
                f"this function's {ENV_SIGNING_PUBLIC_KEYS} is not a list of base64 Ed25519 public keys",
                code="misconfigured",
            ) from None

    def model(self):
        """The loaded model; the first call fetches, verifies and loads it (a failure is retried next time)."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                if not self.name:
                    raise Unavailable("this function has no model configured", code="misconfigured")
                try:
                    self._model = self._load()
                    self._error = None
                except ApiError as exc:
                    self._error = exc.code
                    raise
        return self._model

    def _load(self):
        if _preload is not None:
            # The preload's own first run may still be going: wait for it rather than load beside it
            # (it finishes in well under the preload's head start; a process that exits while it
            # runs aborts in ONNX Runtime).
            _preload.join()
        trusted_keys = self._trusted_keys()
        folder, downloaded = self._folder()
        try:
            model = load_model(folder, trusted_keys)
            if model.name != self.name:
                raise Unavailable(f"the artifact is for model {model.name!r}, not {self.name!r}", code="artifact_invalid")
            return model
        except BaseException as exc:
            # Nothing of a failed load stays: not its session or model (memory), nor a downloaded
            # folder (/tmp), so that retries neither grow the instance nor answer from a stale copy.
            # The traceback's frames would hold the half-built model (and its session) until the
            # cycle collector ran: their locals go now, the traceback itself stays for the log.
            traceback.clear_frames(exc.__traceback__)
            forget_models(folder)
            if downloaded:
                shutil.rmtree(folder, ignore_errors=True)
            log = {"artifact": self.location}
            if isinstance(exc, ApiError):
                exc.log.update(log)
                raise
            if isinstance(exc, RuntimeLibraryError):
                error = from_runtime(exc)
            elif isinstance(exc, Exception):
                # Verified files that onnxruntime or tokenizers cannot read (a build bug, a wrong
                # library version): the type names the problem, the message (with paths) is logged.
                error = Unavailable(f"the model could not be loaded ({type(exc).__name__})", code="model_load_failed")
            else:
                raise
            error.log.update(log)
            raise error from exc

    def task(self) -> str:
        return self.model().card.task

    def predict(self, inputs: list, parameters: dict) -> dict:
        return self._answer("predict", inputs, parameters)

    def explain(self, inputs: list, parameters: dict) -> dict:
        return self._answer("explain", inputs, parameters)

    def _answer(self, method: str, inputs: list, parameters: dict) -> dict:
        model = self.model()
        try:
            prediction = getattr(model, method)(inputs, parameters)
        except RuntimeLibraryError as exc:
            raise from_runtime(exc) from exc
        except Exception as exc:
            # The checks passed and the model itself failed (onnxruntime raising): a server error.
            raise ApiError("the model failed to answer this request", code="model_error",
                           log={"artifact": self.location}) from exc
        return {"model": model.name, "version": model.version, "outputs": prediction.outputs, "usage": prediction.usage}

    def check(self) -> dict:
        model = self.model()
        self.predict(model.task.smoke_input(), {})
        return {"version": model.version}

    def status(self) -> dict:
        model = self._model
        return {"loaded": model is not None, "version": model.version if model else None, "error": self._error}


def create_function(config: Config, s3=None, tenants=None) -> ApiFunction:
    """`tenants` (maas_api.tenants.TenantPolicy): `maas serve` passes the manifest's; None reads the environment."""
    return ApiFunction(LocalModelBackend(config, s3=s3), config.catalog_path, tenants)


# --- the Lambda entry point ------------------------------------------------------------------

# In Lambda's init phase: fetch, verify and load the model before the first request.
lambda_handler = LambdaEntry(lambda: create_function(Config.from_env()), prepare=lambda backend: backend.model())

if os.environ.get(ENV_MODEL_NAME):
    lambda_handler.init_phase()
