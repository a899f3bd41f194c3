"""ONNX Runtime sessions: one per model file per process, created once and reused."""

from __future__ import annotations

import os
import threading

import onnxruntime as ort

# Environment variables that tune a session; documented in README.md.
ENV_INTRA_OP_THREADS = "MAAS_INTRA_OP_THREADS"
ENV_PROVIDERS = "MAAS_ORT_PROVIDERS"

_sessions: dict[str, ort.InferenceSession] = {}
_lock = threading.Lock()


def cpu_threads() -> int:
    """CPUs this process may run on. Lambda gives ~1 vCPU per 1769 MB, up to 6."""
    override = os.environ.get(ENV_INTRA_OP_THREADS)
    if override:
        return max(1, int(override))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def providers() -> list[str]:
    """CUDA first where this onnxruntime build has it (the SageMaker GPU image), else CPU."""
    wanted = os.environ.get(ENV_PROVIDERS)
    available = ort.get_available_providers()
    if wanted:
        chosen = [p for p in wanted.split(",") if p in available]
        if chosen:
            return chosen
    order = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or available


def session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # One request at a time per Lambda instance: all cores go to intra-op parallelism,
    # and a single inter-op thread avoids oversubscribing the few vCPUs Lambda gives.
    opts.intra_op_num_threads = cpu_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def get_session(model_path: str | os.PathLike) -> ort.InferenceSession:
    """The session for a model file, created from the file's bytes rather than its path: ONNX
    Runtime then has no folder to resolve external-data references in, so it opens no file but
    the one the card lists and verify_artifact checked."""
    key = os.path.realpath(model_path)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            with open(key, "rb") as fh:
                model_bytes = fh.read()
            session = ort.InferenceSession(model_bytes, session_options(), providers=providers())
            _sessions[key] = session
        return session


def drop_sessions(folder: str | os.PathLike | None = None) -> None:
    """Forget cached sessions: all of them (tests), or those of the model files in one folder
    (an artifact that failed to load, so that retries do not pile sessions up)."""
    with _lock:
        if folder is None:
            _sessions.clear()
            return
        prefix = os.path.join(os.path.realpath(folder), "")
        for key in [k for k in _sessions if k.startswith(prefix)]:
            del _sessions[key]
