"""Acceptance: `maas serve`'s minilm-gpu, over HTTP, through the proxy to Triton (or its stand-in).

The vectors are the fp32 export's as the runtime serves it (cosine >= 0.9999), and 8 concurrent
clients x 50 requests get 0 errors and the same answers as one request at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient", reason="tritonclient (Triton's model_config_pb2) is installed by `make setup`")

from maas.local_api import LocalApi, configure_local_environment, manifest_stack, warm_up  # noqa: E402
from maas.manifest import load_manifest  # noqa: E402
from maas.triton.endpoint import ENV_LOCAL_SERVER  # noqa: E402
from maas.triton.server import unavailable_reason  # noqa: E402
from maas_runtime import load_model  # noqa: E402

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
NAME = "minilm-gpu"
ARTIFACT = ROOT / "build" / NAME / "1.0.0"
TRITON_MISSING = unavailable_reason(ROOT)


@pytest.fixture(scope="module", params=["triton", "stand-in"])
def api(request):
    if not (ARTIFACT / "card.json").is_file():
        pytest.skip(f"{ARTIFACT} is not built: run `maas build {NAME}`")
    if request.param == "triton" and TRITON_MISSING:
        pytest.skip(f"the local Triton cannot run here: {TRITON_MISSING}")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(ENV_LOCAL_SERVER, "triton" if request.param == "triton" else "stand-in")
    stack = manifest_stack(load_manifest(ROOT / "models.toml"), models=[NAME])
    try:
        warm_up(stack)
        assert stack.endpoints[NAME].kind == request.param, stack.endpoints[NAME].fallback_reason
        served = LocalApi(stack.routes)
        served.start("127.0.0.1", 0)
        yield served, request.param
        served.stop()
    finally:
        stack.close()
        monkeypatch.undo()


def post(session, url: str, texts: list[str]):
    return session.post(f"{url}/models/{NAME}/invoke", json={"inputs": texts}, timeout=120)


def test_minilm_gpu_answers_the_fp32_exports_vectors(api):
    requests = pytest.importorskip("requests")
    from maas.builder.evalsets import embedding_texts

    server, kind = api
    texts = embedding_texts()[:96]
    reference = np.asarray(load_model(ARTIFACT).predict(texts).outputs)
    with requests.Session() as session:
        answers = [post(session, server.url, texts[i:i + 32]) for i in range(0, len(texts), 32)]
    assert [a.status_code for a in answers] == [200] * 3
    served = np.asarray([v for a in answers for v in a.json()["outputs"]])
    cosines = (served * reference).sum(1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
    print(f"{kind}: min cosine {cosines.min():.8f} over {len(texts)} texts vs the fp32 export through maas_runtime")
    assert cosines.min() >= 0.9999


def test_minilm_gpu_explains_as_the_fp32_export_does(api):
    """The proxy explains over the remote graph: 64 coalitions a run, sent to Triton in batches it
    takes (max_batch_size 32), its pooled answers used as the runtime's own pooling would be."""
    requests = pytest.importorskip("requests")
    server, kind = api
    parameters = {"compare_to": "A fast fox leaps over a sleepy dog."}
    text = "The quick brown fox jumps over the lazy dog."
    reference = load_model(ARTIFACT).explain([text], parameters).outputs[0]
    with requests.Session() as session:
        answer = session.post(f"{server.url}/models/{NAME}/explain", json={"inputs": [text], "parameters": parameters}, timeout=300)
    assert answer.status_code == 200, answer.text
    served = answer.json()["outputs"][0]
    got = np.array([w["attribution"] for w in served["attributions"]])
    want = np.array([w["attribution"] for w in reference["attributions"]])
    print(f"{kind}: largest attribution difference {np.abs(got - want).max():.2e} over {len(want)} words")
    assert [w["word"] for w in served["attributions"]] == [w["word"] for w in reference["attributions"]]
    assert np.allclose(got, want, atol=1e-4) and abs(served["value"] - reference["value"]) < 1e-4


def test_8_concurrent_clients_x_50_requests_0_errors(api):
    requests = pytest.importorskip("requests")
    server, kind = api
    texts = [f"request {i}: the heavy model answers concurrent clients about topic {i % 5}" for i in range(10)]
    with requests.Session() as session:
        expected = {i: post(session, server.url, [texts[i]]).json()["outputs"][0] for i in range(10)}

    def client(worker: int) -> list[str]:
        problems = []
        with requests.Session() as session:
            for n in range(50):
                i = (worker * 7 + n) % 10
                answer = post(session, server.url, [texts[i]])
                if answer.status_code != 200:
                    problems.append(f"{i}: {answer.status_code} {answer.text[:200]}")
                elif not np.allclose(answer.json()["outputs"][0], expected[i], atol=1e-5):
                    problems.append(f"{i}: a different vector")
        return problems

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for result in pool.map(client, range(8)) for p in result]
    print(f"{kind}: 400 requests from 8 clients, {len(problems)} errors")
    assert problems == []
