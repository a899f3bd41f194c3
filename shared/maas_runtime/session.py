"""ONNX Runtime sessions: one per model file per process, created once and reused."""

from __future__ import annotations

import os
import threading

import onnxruntime as ort

# Environment variables that tune a session; documented in README.md.
ENV_INTRA_OP_THREADS = "MAAS_INTRA_OP_THREADS"
ENV_PROVIDERS = "MAAS_ORT_PROVIDERS"
ENV_SPINNING = "MAAS_ORT_SPINNING"
ENV_LAMBDA_MEMORY = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
"""Set by the Lambda runtime: the function's memory in MB."""
LAMBDA_MB_PER_VCPU = 1769
"""Lambda gives a function one vCPU's worth of CPU time per 1,769 MB of memory."""

SPIN_DURATION_US = 1000
"""How long an idle spinning intra-op thread spins before it sleeps (ONNX Runtime's default is a
fixed count of pause instructions: ~16 ms on AMD Zen, ~47 ms on Skylake). The gaps a spinning
thread bridges within a run are microseconds; but each time building a session hands its threads
work they spin the whole default out, beside the cold start's imports: building the MiniLM
session burnt 111-114 ms of CPU in 72-75 ms with the default, 72-73 ms with 1 ms. Warm latency,
interleaved (1x12, 1x128, 32x16, 32x64 tokens), did not change (2.04 vs 2.04 ms p50 at 1x12)."""

_sessions: dict[str, ort.InferenceSession] = {}
_lock = threading.Lock()


def cpu_threads() -> int:
    """CPUs this process may run on. Lambda gives ~1 vCPU per LAMBDA_MB_PER_VCPU, up to 6."""
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


def spinning(threads: int, env=None) -> bool:
    """Whether the intra-op threads spin while they wait for work: where each has a whole CPU to
    itself. MAAS_ORT_SPINNING=1 or 0 decides where set.

    A spinning thread takes the next operator's work at once instead of being woken for it, which
    is most of a short text's time at batch 1. But where the threads share less CPU than there are
    of them (a Lambda function below 1,769 MB per thread sees more CPUs than its memory buys time
    on; two threads pinned to one core stand in for it), the spinning thread burns the share the
    working one needs, and requests run about half as fast. `python -m maas.bench.spinning`
    measures both (BENCHMARKS.md, "spinning threads"). So: off Lambda, where the process's cores
    are its own, they spin (ONNX Runtime's default); in Lambda, only where the memory buys a vCPU
    per thread (AWS_LAMBDA_FUNCTION_MEMORY_SIZE >= LAMBDA_MB_PER_VCPU x threads).
    """
    env = os.environ if env is None else env
    forced = env.get(ENV_SPINNING)
    if forced in ("0", "1"):
        return forced == "1"
    memory = env.get(ENV_LAMBDA_MEMORY)
    if memory is None:
        return True
    try:
        return int(memory) >= LAMBDA_MB_PER_VCPU * threads
    except ValueError:
        return False


def session_options() -> ort.SessionOptions:
    """One request at a time per Lambda instance: all cores go to intra-op parallelism, and a
    single inter-op thread avoids oversubscribing the few vCPUs Lambda gives. Whether the
    intra-op threads spin: `spinning`."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpu_threads()
    opts.inter_op_num_threads = 1
    spins = spinning(opts.intra_op_num_threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spins else "0")
    if spins:
        # Spin between a run's operators only: when the run returns the threads stop, so the
        # handler's own Python (tokenizing, JSON, the request log), an init's imports beside the
        # preload's first run, and the gap between requests keep both CPUs. Interleaved in process
        # (minilm, short b1, 4 alternations on a loaded 2-core machine), the handler's p50 was
        # 4.9 ms on average with it, 5.3 ms spinning without it, 6.1 ms not spinning.
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_DURATION_US))
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def get_session(model_path: str | os.PathLike, model_bytes: bytes | None = None) -> ort.InferenceSession:
    """The session for a model file, created from the file's bytes rather than its path: ONNX
    Runtime then has no folder to resolve external-data references in, so it opens no file but
    the one the card lists. `model_bytes`: the file's bytes as verified (artifact.read_verified),
    so that the graph built is the one checked; by default the file is read here."""
    key = os.path.realpath(model_path)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            if model_bytes is None:
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
