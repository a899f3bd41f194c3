"""Spawning worker processes (maas/bench/worker.py) and talking to them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .variants import WORKER, BenchError, Variant


def python(variant: Variant) -> str:
    return variant.python or sys.executable


def coldstart_once(variant: Variant, root: Path, first_inputs: list, timeout: float = 300) -> dict:
    """One fresh process from spawn to the first answer; the phases as seconds."""
    spec = json.dumps(variant.spec("coldstart", root, first_inputs))
    t_spawn = time.time()
    proc = subprocess.run(
        [python(variant), str(WORKER), spec], env=variant.env(), cwd=root, capture_output=True, text=True, timeout=timeout
    )
    t_exit = time.time()
    result = _last_json(proc.stdout)
    if proc.returncode != 0 or result is None or "error" in result:
        detail = (result or {}).get("traceback") or proc.stderr[-2000:]
        raise BenchError(f"cold start of {variant.key} failed: {detail}")
    return {
        "process_start_s": result["t_start"] - t_spawn,
        "import_s": result["t_imported"] - result["t_start"],
        "load_s": result["t_loaded"] - result["t_imported"],
        "first_inference_s": result["t_answered"] - result["t_loaded"],
        "total_s": result["t_answered"] - t_spawn,
        "exit_s": t_exit - result["t_answered"],
        "peak_rss_bytes": result["peak_rss_bytes"],
        "torch_imported": result["torch_imported"],
    }


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


class Worker:
    """A warm serving process that times calls on request (JSON lines over stdin/stdout)."""

    def __init__(self, variant: Variant, root: Path, first_inputs: list):
        self.variant = variant
        spec = json.dumps(variant.spec("serve", root, first_inputs))
        self.proc = subprocess.Popen(
            [python(variant), str(WORKER), spec],
            env=variant.env(),
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        self.paths = hello["paths"]
        self.torch_imported = hello["torch_imported"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()[-3000:]
            raise BenchError(f"worker {self.variant.key} exited: {err}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"worker {self.variant.key}: {reply.get('traceback') or reply['error']}")
        return reply

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def set_inputs(self, key: str, items: list) -> None:
        self.ask(op="inputs", key=key, items=items)

    def time(self, path: str, key: str, iters: int) -> list[float]:
        return self.ask(op="time", path=path, key=key, iters=iters)["times"]

    def paired(self, paths: list[str], key: str, iters: int) -> dict[str, list[float]]:
        return self.ask(op="paired", paths=paths, key=key, iters=iters)["times"]

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.ask(op="embed", texts=texts)["vectors"]

    def breakdown(self, key: str, iters: int) -> dict:
        return self.ask(op="breakdown", key=key, iters=iters)["parts"]

    def rss(self) -> dict:
        return self.ask(op="rss")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(op="exit")
                self.proc.wait(timeout=10)
            except (BenchError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
