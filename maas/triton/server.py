"""A real Triton on this machine: the tritonserver binary from NVIDIA's nvidia-pytriton wheel.

`make triton` installs the wheel (without its dependencies; pytriton's own Python API is not
used) into a venv of its own, .cache/tools/triton, with numpy<2 and onnxruntime for the
Python-backend stub. The server is run with only what `maas serve` needs: KServe v2 HTTP on
127.0.0.1, gRPC, metrics and the SageMaker listener off (that listener always binds 0.0.0.0, so
SageMaker's side is played by maas.triton.front instead), the one model loaded explicitly.

What the wheel's layout requires (found by running it, see `_environment`):
- a backend directory holding libtriton_python.so, triton_python_backend_utils.py and the stub
  built for the venv's Python (tritonserver's default is /opt/tritonserver/backends);
- the stub ignores PYTHONPATH (pybind11's isolated interpreter): it takes its prefix, and so the
  venv's site-packages, from the first `python3` on PATH;
- the stub links libpython3.X.so: the venv's Python must be built shared (or the system have
  the same version's library), found through LD_LIBRARY_PATH with the wheel's bundled libraries.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

TOOL_DIR = Path(".cache") / "tools" / "triton"
"""Relative to the project root: the Makefile's TRITON_TOOL."""
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 15


class TritonUnavailable(RuntimeError):
    """This machine cannot run the local tritonserver; the message says why."""


def _package(root: Path) -> Path | None:
    found = sorted((Path(root) / TOOL_DIR).glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    return found[0].parents[1] if found else None


def _tool_python(root: Path) -> tuple[str, str]:
    """(X.Y, LIBDIR) of the tool venv's interpreter."""
    python = Path(root) / TOOL_DIR / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}', sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    return out[0], out[1]


def _environment(root: Path, package: Path, libdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(Path(root).resolve() / TOOL_DIR / "bin"), env.get("PATH", "")])
    libs = package.parents[1] / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(libs), os.environ.get("LD_LIBRARY_PATH")) if p)
    return env


def unavailable_reason(root: Path) -> str | None:
    """Why the local tritonserver cannot run here, or None when it can."""
    system, machine = platform.system(), platform.machine()
    if (system, machine) != ("Linux", "x86_64"):
        return f"NVIDIA's tritonserver wheel (nvidia-pytriton) is built for Linux x86_64 only; this is {system} {machine}"
    package = _package(root)
    if package is None:
        return f"the local Triton is not installed in {TOOL_DIR}: run `make triton`"
    try:
        version, libdir = _tool_python(root)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the Python of {TOOL_DIR} does not run: {exc}"
    stub = package / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        return f"nvidia-pytriton has no Python-backend stub for Python {version}"
    env = _environment(root, package, libdir)
    for binary in (package / "bin" / "tritonserver", stub):
        try:
            result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, env=env)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot check {binary.name}'s libraries with ldd: {exc}"
        missing = [line.strip() for line in (result.stdout + result.stderr).splitlines() if "not found" in line]
        if missing:
            hint = " (this Python is not built with --enable-shared)" if any("libpython" in m for m in missing) else ""
            return f"{binary.name} cannot load its libraries here{hint}: {missing[0]}"
    return None


def _die_with_parent():
    """A preexec_fn: in the child, SIGTERM when the process that started it dies (Linux's
    PR_SET_PDEATHSIG), so a `maas serve` killed without Ctrl-C leaves no tritonserver behind.
    libc is looked up here, in the parent: between fork and exec the child only makes the call.
    The signal follows the starting thread: start servers from a thread that outlives them."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = ctypes.c_int(1), ctypes.c_ulong(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalTriton:
    """tritonserver serving one model of a repository over KServe v2 HTTP on 127.0.0.1."""

    kind = "triton"

    def __init__(self, root: Path, repository: Path, model: str):
        reason = unavailable_reason(root)
        if reason is not None:
            raise TritonUnavailable(reason)
        self.root, self.repository, self.model = Path(root).resolve(), Path(repository).resolve(), model
        self.package = _package(self.root)
        self.python_version, self.libdir = _tool_python(self.root)
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="maas-triton-")
        self.log = Path(self._tmp.name) / "tritonserver.log"

    def _backends(self) -> Path:
        python = Path(self._tmp.name) / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        source = self.package / "backends" / "python"
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            (python / name).symlink_to(source / name)
        stub = self.package / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"
        (python / stub.name).symlink_to(stub)
        return python.parent

    def start(self) -> "LocalTriton":
        backends = self._backends()
        env = _environment(self.root, self.package, self.libdir)
        for attempt in range(3):  # a free port can be taken between choosing it and binding it
            port = free_port()
            command = [
                str(self.package / "bin" / "tritonserver"),
                f"--model-repository={self.repository}",
                f"--backend-directory={backends}",
                "--model-control-mode=explicit", f"--load-model={self.model}",
                "--http-address=127.0.0.1", f"--http-port={port}",
                "--allow-grpc=false", "--allow-metrics=false", "--allow-sagemaker=false",
                "--exit-on-error=true", "--strict-readiness=true", f"--exit-timeout-secs={STOP_TIMEOUT_S // 3}",
                "--log-verbose=0",
            ]
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, preexec_fn=_die_with_parent())
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_ready():
                return self
            if "address already in use" not in self.log.read_text(errors="replace").lower() or attempt == 2:
                break
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        raise TritonUnavailable(f"tritonserver did not become ready:\n{tail}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # drains in-flight requests, then exits
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and its backend stubs
                process.wait()
        self._tmp.cleanup()

    close = stop


if __name__ == "__main__":
    print(unavailable_reason(Path.cwd()) or "the local tritonserver can run here", file=sys.stdout)
