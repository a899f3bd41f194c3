"""`maas serve` as its own process, for the tests that need the real command (the fuzz, the soak)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILT = ("minilm/1.0.0", "digits/1.0.0", "minilm-gpu/1.0.0")


class ServeProcess:
    """`python -m maas.cli serve --port 0` on 127.0.0.1; `url` once it listens, `pid` to measure it."""

    def __init__(self, *args: str, start_timeout_s: float = 180):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "shared")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maas.cli", "--manifest", str(ROOT / "models.toml"), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT),
        )
        self.output: list[str] = []
        deadline = time.monotonic() + start_timeout_s
        self.url = None
        while self.url is None:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("maas serve exited before listening:\n" + "".join(self.output))
            self.output.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
                self.url = found.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError("maas serve did not start in time:\n" + "".join(self.output))
        # Keep reading its output so that a full pipe never blocks the server.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-200]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def built_models() -> Path:
    build = ROOT / "build"
    missing = [n for n in BUILT if not (build / n / "card.json").is_file()]
    if missing or not (build / "catalog.json").is_file():
        pytest.skip(f"build/ lacks {missing or 'catalog.json'}: run `maas build` first")
    return build


@pytest.fixture
def maas_serve(built_models):
    """A context manager: `with maas_serve("--api-key", key) as server: server.url ...`."""

    @contextmanager
    def start(*args: str):
        server = ServeProcess(*args)
        try:
            yield server
        finally:
            server.stop()

    return start
