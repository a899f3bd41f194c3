"""ONNX Runtime sessions: one per model file per process, created once and reused."""

from __future__ import annotations

import os
import threading

import onnxruntime as ort

# Environment variables that tune a session; documented in README.md.
ENV_INTRA_OP_THREADS = "MAAS_INTRA_OP_THREADS"
ENV_PROVIDERS = "MAAS_ORT_PROVIDERS"
ENV_SPINNING = "MAAS_ORT_SPINNING"

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
    """One request at a time per Lambda instance: all cores go to intra-op parallelism, and a
    single inter-op thread avoids oversubscribing the few vCPUs Lambda gives.

    The intra-op threads do not spin while they wait for work. Below 1769 MB a function sees
    more CPUs than its memory buys time on (its share is a fraction of one), and a spinning
    thread burns that share doing nothing while the thread with work waits for it. Measured with
    the process sharing its cores with other work (a stand-in for a fractional share: two threads
    on one core, and two threads on two busy cores), spinning made mixed requests of 32 slower and
    cost more CPU time per request, and single short requests slower too; on an idle machine the
    difference is small (`python -m maas.bench.spinning` measures it). MAAS_ORT_SPINNING=1 turns
    spinning back on, for a machine whose cores are the process's own."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpu_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if os.environ.get(ENV_SPINNING) == "1" else "0")
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
