"""A bounded soak of `maas serve` (its own process): 8 clients, valid and invalid requests mixed.

Every request has one expected status; any other is a failure. The serving process's memory is
read with psutil: its peak after the soak must stay within 10% of its size after a warm-up that
ran the same mix (every request shape included, so ONNX Runtime's arenas have grown to their
working size). Figures are printed: requests, statuses, RSS before and after.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

WARMUP_S = 20
SOAK_S = 100
CLIENTS = 8
ZERO = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
        [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]

# (method, path, JSON body or raw bytes, headers, expected status)
MIX = [
    ("POST", "/models/minilm/invoke", {"inputs": ["a short sentence"]}, {}, 200),
    ("POST", "/models/minilm/invoke", {"inputs": [f"sentence number {i} about soaking servers" for i in range(32)]}, {}, 200),
    ("POST", "/models/minilm/invoke", {"inputs": ["long " * 600], "parameters": {"truncate": False}}, {}, 413),
    ("POST", "/models/minilm/invoke", {"inputs": ["\ud800 broken"]}, {}, 422),
    ("POST", "/models/minilm/invoke", {"inputs": ["x"] * 33}, {}, 413),
    ("POST", "/models/digits/invoke", {"inputs": [ZERO] * 16, "parameters": {"top_k": 3}}, {}, 200),
    ("POST", "/models/digits/invoke", {"inputs": [[[10**400] * 8] * 8]}, {}, 422),
    ("POST", "/models/digits/invoke", {"inputs": [[1, 2, 3]]}, {}, 422),
    ("POST", "/models/minilm-gpu/invoke", {"inputs": ["through the proxy and the local Triton"] * 4}, {}, 200),
    ("POST", "/v1/embeddings", {"model": "minilm", "input": ["openai style", "two inputs"]}, {}, 200),
    ("POST", "/v1/embeddings", {"model": "gpt-4", "input": "x"}, {}, 404),
    ("POST", "/models/minilm/invoke", b'{"inputs": [', {}, 400),
    ("POST", "/models/minilm/invoke", b'{"inputs": ["x"]}', {"Content-Type": "text/plain"}, 415),
    ("GET", "/models/minilm/invoke", None, {}, 405),
    ("GET", "/health", None, {}, 200),
    ("GET", "/models", None, {}, 200),
    ("GET", "/nope", None, {}, 404),
]


def _client(url: str, until: float, counts: Counter, unexpected: list, lock: threading.Lock, offset: int) -> None:
    import requests

    n = offset
    with requests.Session() as session:
        while time.monotonic() < until:
            method, path, body, headers, expected = MIX[n % len(MIX)]
            n += 1
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            sent = {"Content-Type": "application/json", **headers} if data is not None else headers
            try:
                response = session.request(method, url + path, data=data, headers=sent, timeout=60)
                status, text = response.status_code, response.text
            except requests.RequestException as exc:
                status, text = 0, repr(exc)
            with lock:
                counts[status] += 1
                if status != expected:
                    unexpected.append(f"{method} {path}: {status} (expected {expected}) {text[:200]}")


def _drive(url: str, seconds: float, measure) -> tuple[Counter, list, int]:
    counts, unexpected, lock = Counter(), [], threading.Lock()
    until = time.monotonic() + seconds
    peak = 0
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(_client, url, until, counts, unexpected, lock, i * 3) for i in range(CLIENTS)]
        while not all(f.done() for f in futures):
            peak = max(peak, measure())
            time.sleep(0.5)
        for future in futures:
            future.result()
    return counts, unexpected, max(peak, measure())


@pytest.mark.slow
def test_soak_8_clients_mixed_requests_no_unexpected_status_and_flat_memory(maas_serve):
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("requests")
    with maas_serve() as server:
        process = psutil.Process(server.pid)

        def rss() -> int:
            return process.memory_info().rss

        started = rss()
        # GIVEN the serving process warmed up by the same mix
        warm_counts, warm_unexpected, _ = _drive(server.url, WARMUP_S, rss)
        warm = rss()
        # WHEN 8 clients send the mix for the soak's duration
        counts, unexpected, peak = _drive(server.url, SOAK_S, rss)
        after = rss()
    total = sum(counts.values())
    print(f"\nsoak: {CLIENTS} clients x {SOAK_S} s after a {WARMUP_S} s warm-up: {total} requests "
          f"({total / SOAK_S:.0f}/s), statuses {dict(sorted(counts.items()))}, {len(unexpected)} unexpected")
    print(f"serving process RSS: {started / 2**20:.1f} MiB at start, {warm / 2**20:.1f} MiB after warm-up, "
          f"peak {peak / 2**20:.1f} MiB during the soak, {after / 2**20:.1f} MiB after "
          f"({(peak / warm - 1) * 100:+.1f}% peak vs warm)")
    # THEN every request got its expected status, in the warm-up too ...
    assert not warm_unexpected and not unexpected, (warm_unexpected + unexpected)[:10]
    assert total > 10 * len(MIX) and set(counts) == {s for *_, s in MIX}
    # ... and the process's peak memory stayed within 10% of its size after the warm-up
    assert peak <= warm * 1.10
