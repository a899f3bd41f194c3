"""The heavy model's servers: the served graph, the SageMaker archive, and Triton / its stand-in over KServe v2.

The real Triton (NVIDIA's tritonserver from the nvidia-pytriton wheel, installed by `make triton`)
runs where it can: Linux x86_64 with a shared libpython, which is what CI runs on. Elsewhere its
tests skip, saying why, and the stand-in's run.
"""

from __future__ import annotations

import json
import tarfile
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient", reason="tritonclient (Triton's model_config_pb2) is installed by `make setup`")

from maas.manifest import load_manifest  # noqa: E402
from maas.triton import config as triton_config  # noqa: E402
from maas.triton.client import KServeHttpError, KServeHttpTransport, post_infer  # noqa: E402
from maas.triton.endpoint import LocalEndpoint, stage_local_model  # noqa: E402
from maas.triton.graph import POOLED_OUTPUT  # noqa: E402
from maas.triton.repository import served_model, write_archive, write_proxy_artifact  # noqa: E402
from maas.triton.server import unavailable_reason  # noqa: E402
from maas_runtime import ArtifactError, Model, load_model  # noqa: E402
from maas_runtime.kserve import METADATA_FILE, RemoteEngine, decode_response, encode_request, read_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAME = "minilm-gpu"
ARTIFACT = ROOT / "build" / NAME / "1.0.0"
TEXTS = ["Heavy models run on a GPU endpoint.", "Triton batches concurrent requests.", "x"]
TRITON_MISSING = unavailable_reason(ROOT)


@pytest.fixture(scope="module")
def spec():
    if not (ARTIFACT / "card.json").is_file():
        pytest.skip(f"{ARTIFACT} is not built: run `maas build {NAME}`")
    return load_manifest(ROOT / "models.toml").get(NAME)


@pytest.fixture(scope="module")
def served(spec):
    return served_model(ARTIFACT, spec.sagemaker)


@pytest.fixture(scope="module")
def staged(spec):
    return stage_local_model(ROOT, spec, ARTIFACT)


@pytest.fixture(scope="module")
def local_model():
    return load_model(ARTIFACT)


@pytest.fixture(scope="module", params=["triton", "stand-in"])
def endpoint(request, staged):
    if request.param == "triton" and TRITON_MISSING:
        pytest.skip(f"the local Triton cannot run here: {TRITON_MISSING}")
    repository, _ = staged
    started = LocalEndpoint(ROOT, repository, NAME, f"maas-{NAME}", use_triton=request.param == "triton")
    assert started.kind == request.param, started.fallback_reason
    yield started
    started.close()


def feeds_for(model, texts):
    return model.task.prepare(texts, {}).feeds


# --- the served graph and what is staged ------------------------------------------------------------


def test_the_pooled_graph_answers_what_the_runtime_pools_from_the_artifacts_graph(served, local_model):
    import onnx
    import onnxruntime as ort

    from maas.builder.evalsets import embedding_texts
    from maas_runtime.tasks import mean_pool

    # GIVEN the served graph with the artifact graph's token vectors kept as a second output (one
    # encoder run gives both), and the 240 evaluation texts tokenized by the runtime, shortest first
    graph = onnx.load_from_string(served.graph)
    graph.graph.output.append(onnx.helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    texts = sorted(embedding_texts(), key=lambda t: len(local_model.task.encoder.tokenizer.encode(t).ids))
    worst = 1.0
    for start in range(0, len(texts), 32):
        feeds = feeds_for(local_model, texts[start:start + 32])
        # WHEN the graph pools, and the runtime pools the same token vectors
        graph_pooled, hidden = session.run([POOLED_OUTPUT, "last_hidden_state"], feeds)
        runtime_pooled = mean_pool(hidden, feeds["attention_mask"])
        cosine = (graph_pooled * runtime_pooled).sum(1) / (
            np.linalg.norm(graph_pooled, axis=1) * np.linalg.norm(runtime_pooled, axis=1))
        worst = min(worst, float(cosine.min()))
        assert graph_pooled.shape == (len(feeds["input_ids"]), 384)
    # THEN they agree
    print(f"pooled graph vs runtime pooling: min cosine {worst:.8f} over {len(texts)} texts")
    assert worst >= 0.9999


def test_the_served_metadata_is_the_pooled_graphs(served):
    assert served.metadata["outputs"] == [{"name": POOLED_OUTPUT, "datatype": "FP32", "shape": [-1, 384]}]
    assert [i["name"] for i in served.metadata["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["datatype"] == "INT64" and i["shape"] == [-1, -1] for i in served.metadata["inputs"])


def test_the_sagemaker_archive_is_a_reproducible_triton_repository(tmp_path):
    # digits: a small graph is enough to see the layout and the reproducibility
    from maas.manifest import SageMakerSettings

    artifact = ROOT / "build" / "digits" / "1.0.0"
    if not (artifact / "card.json").is_file():
        pytest.skip("build/digits is not built: run `maas build digits`")
    model = served_model(artifact, SageMakerSettings())
    first = write_archive(model, tmp_path / "a" / "model.tar.gz")
    second = write_archive(model, tmp_path / "b" / "model.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(n for n, m in members.items() if m.isfile()) == ["digits/1/model.onnx", "digits/config.pbtxt"]
        assert {m.mtime for m in members.values()} == {0} and {m.uid for m in members.values()} == {0}
        config = triton_config.parse(tar.extractfile("digits/config.pbtxt").read().decode())
        graph = tar.extractfile("digits/1/model.onnx").read()
    assert config.name == "digits" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 256
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]  # a classifier's graph is served as it is
    assert graph == model.graph == (artifact / "model.onnx").read_bytes()


def test_the_proxys_copy_has_no_graph_and_verifies_what_it_opens(served, tmp_path):
    folder = write_proxy_artifact(served, ARTIFACT, tmp_path / "proxy")
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", METADATA_FILE, "tokenizer.json"]
    assert read_metadata(folder) == served.metadata
    # a tampered tokenizer is refused, as in any model function
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b'"[PAD]"', b'"[PAX]"', 1))
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        Model(folder, engine=RemoteEngine(served.metadata, KServeHttpTransport("http://127.0.0.1:9", NAME)))


# --- Triton and the stand-in over KServe v2 ----------------------------------------------------------


def test_metadata_over_http_is_what_the_proxy_is_given(endpoint, staged):
    _, proxy = staged
    served_here = KServeHttpTransport(endpoint.kserve_url, NAME).metadata()
    staged_metadata = read_metadata(proxy)
    assert served_here["platform"] == "python"  # locally the Python backend runs it; on SageMaker ONNX Runtime
    assert {k: served_here[k] for k in ("name", "inputs", "outputs")} == {k: staged_metadata[k] for k in ("name", "inputs", "outputs")}


@pytest.mark.parametrize("binary", [True, False])
def test_inference_in_json_and_binary_matches_the_runtime(endpoint, local_model, binary):
    from maas_runtime.tasks import mean_pool

    feeds = feeds_for(local_model, TEXTS)
    body, header_length = encode_request(feeds, [POOLED_OUTPUT], binary=binary)
    status, answer, answer_header_length = post_infer(endpoint.kserve_url, NAME, body, header_length)
    assert status == 200, answer[:300]
    assert (answer_header_length is not None) == binary
    header, arrays = decode_response(answer, answer_header_length)
    assert header["model_name"] == NAME
    expected = mean_pool(local_model.engine.run(feeds)[0], feeds["attention_mask"])
    np.testing.assert_allclose(arrays[POOLED_OUTPUT], expected, atol=2e-5)


@pytest.mark.parametrize(
    ("drop", "batch", "cast", "message"),
    [
        ("token_type_ids", 1, None, "expected 3 inputs but got 2"),
        (None, 257, None, "batch-size must be <= 256"),
        (None, 1, np.int32, "data-type"),
    ],
)
def test_bad_tensors_are_tritons_400(endpoint, local_model, drop, batch, cast, message):
    feeds = {k: v for k, v in feeds_for(local_model, ["x"] * batch).items() if k != drop}
    if cast is not None:
        feeds = {k: v.astype(cast) for k, v in feeds.items()}
    body, header_length = encode_request(feeds, [POOLED_OUTPUT])
    with pytest.raises(KServeHttpError) as caught:
        KServeHttpTransport(endpoint.kserve_url, NAME).infer(body, header_length)
    assert caught.value.status == 400 and message in caught.value.message


@pytest.mark.skipif(bool(TRITON_MISSING), reason=f"the local Triton cannot run here: {TRITON_MISSING}")
def test_triton_batches_concurrent_requests(staged, local_model):
    # GIVEN the real Triton, with the manifest's dynamic batching
    repository, _ = staged
    endpoint = LocalEndpoint(ROOT, repository, NAME, f"maas-{NAME}", use_triton=True)
    try:
        assert endpoint.kind == "triton"
        body, header_length = encode_request(feeds_for(local_model, ["one short text"]), [POOLED_OUTPUT])
        barrier = threading.Barrier(32)

        def one(_):
            barrier.wait(timeout=30)
            return post_infer(endpoint.kserve_url, NAME, body, header_length)[0]

        # WHEN 32 single-text requests arrive at once
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(one, range(32)))
        with urllib.request.urlopen(f"{endpoint.kserve_url}/v2/models/{NAME}/stats", timeout=10) as answer:
            stats = json.loads(answer.read())["model_stats"][0]
    finally:
        endpoint.close()
    # THEN all are answered, in fewer model executions than requests
    assert statuses == [200] * 32
    print(f"dynamic batching: {stats['inference_count']} inferences in {stats['execution_count']} executions")
    assert stats["inference_count"] == 32 and stats["execution_count"] < 32


# --- SageMaker's contract in front ---------------------------------------------------------------------


def test_the_front_speaks_sagemakers_contract(endpoint, local_model):
    import boto3

    with urllib.request.urlopen(f"{endpoint.url}/ping", timeout=10) as answer:
        assert answer.status == 200
    feeds = feeds_for(local_model, TEXTS)
    body, header_length = encode_request(feeds, [POOLED_OUTPUT])
    client = boto3.client("sagemaker-runtime", endpoint_url=endpoint.url, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
    # the container's /invocations and InvokeEndpoint answer alike, in SageMaker's binary content type
    request = urllib.request.Request(f"{endpoint.url}/invocations", data=body, method="POST", headers={
        "Content-Type": f"application/vnd.sagemaker-triton.binary+json;json-header-size={header_length}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        direct, direct_type = answer.read(), answer.headers["Content-Type"]
    response = client.invoke_endpoint(
        EndpointName=f"maas-{NAME}", Body=body,
        ContentType=f"application/vnd.sagemaker-triton.binary+json;json-header-size={header_length}")
    assert response["ContentType"] == direct_type and direct_type.startswith("application/vnd.sagemaker-triton.binary+json;json-header-size=")
    assert response["Body"].read() == direct
    # an unknown endpoint is the front door's ValidationError
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint nope not found"):
        client.invoke_endpoint(EndpointName="nope", Body=body, ContentType="application/json")


def test_the_archive_becomes_the_same_local_repository(served, tmp_path, local_model):
    """`maas serve --template`: the synthesized model.tar.gz, served the same way."""
    from maas.triton.repository import local_repository_from_archive

    archive = write_archive(served, tmp_path / "model.tar.gz")
    repository, name = local_repository_from_archive(archive, tmp_path / "local")
    endpoint = LocalEndpoint(ROOT, repository, name, "local-endpoint", use_triton=False)
    try:
        feeds = feeds_for(local_model, TEXTS)
        body, header_length = encode_request(feeds, [POOLED_OUTPUT])
        answer, answer_header_length = KServeHttpTransport(endpoint.kserve_url, name).infer(body, header_length)
    finally:
        endpoint.close()
    config = triton_config.parse((repository / name / "config.pbtxt").read_text())
    assert name == NAME and config.backend == "python" and (repository / name / "1" / "model.py").is_file()
    _, arrays = decode_response(answer, answer_header_length)
    assert arrays[POOLED_OUTPUT].shape == (3, 384)
