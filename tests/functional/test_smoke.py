"""`maas smoke` against the local API (`maas serve --api-key`, in-process on 127.0.0.1).

GIVEN the demo models served with an API key, WHEN `maas smoke --url --api-key` runs, THEN every
check passes; and each check fails where the API is wrong: a catalog that differs from the
manifest, an API that lets a request without a key through, an unreachable URL. The smoke input
it derives from a card is the same as the runtime task's own.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from maas.cli import main
from maas.local_api import LocalApi, configure_local_environment, manifest_stack, warm_up
from maas.manifest import load_manifest
from maas.smoke import run_smoke, smoke_inputs, version_checks

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "smoke-test-key-7d2e"


@pytest.fixture(scope="module")
def manifest(artifacts_built):
    return load_manifest(ROOT / "models.toml")


@pytest.fixture(scope="module")
def artifacts_built():
    manifest = load_manifest(ROOT / "models.toml")
    from maas.paths import artifact_dir

    missing = [s.name for s in manifest.models if not (artifact_dir(ROOT, s.name, s.version) / "card.json").is_file()]
    if missing or not (ROOT / "build" / "catalog.json").is_file():
        pytest.skip(f"build/ lacks {missing or 'catalog.json'}: run `maas build` first")
    return True


@pytest.fixture(scope="module")
def stack(manifest):
    stack = manifest_stack(manifest)
    warm_up(stack)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def server(stack):
    """What `maas serve --api-key KEY` runs."""
    api = LocalApi(stack.routes, api_key=API_KEY)
    api.start("127.0.0.1", 0)
    yield api
    api.stop()


def test_smoke_passes_on_the_local_api(server, manifest):
    # WHEN maas smoke runs against the API the demo models are served by
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--manifest", str(ROOT / "models.toml"), "smoke", "--url", server.url + "/", "--api-key", API_KEY])
    lines = out.getvalue().splitlines()
    print("\n".join(lines))
    # THEN every check passes: the catalog, every model's answer, the key, the malformed bodies, an unknown route
    assert code == 0, lines
    assert not [line for line in lines if line.startswith(("FAIL", "skip"))]
    for spec in manifest.models:
        assert any(line.startswith(f"ok   {spec.name} answers its smoke input") for line in lines)
    assert any(line.startswith("ok   a request without an API key is refused") for line in lines)


def test_a_catalog_that_differs_from_the_manifest_fails(server, manifest, tmp_path):
    # GIVEN a manifest with a model the deployed API does not have
    text = (ROOT / "models.toml").read_text().replace("[models.digits", "[models.digits-v2")  # its version tables too
    (tmp_path / "models.toml").write_text(text)
    other = load_manifest(tmp_path / "models.toml")
    report = run_smoke(server.url, API_KEY, other)
    (catalog,) = [c for c in report.checks if c.name == "the catalog matches the manifest"]
    assert catalog.passed is False and "digits-v2" in catalog.detail
    skipped = [c for c in report.checks if c.passed is None]
    assert [c.name for c in skipped] == ["digits-v2 answers its smoke input"]
    assert not report.passed


def test_an_api_that_lets_requests_without_a_key_through_fails(stack, manifest):
    # GIVEN the same models served WITHOUT an API key, WHEN smoke expects one
    api = LocalApi(stack.routes)
    api.start("127.0.0.1", 0)
    try:
        report = run_smoke(api.url, "some-key", manifest)
    finally:
        api.stop()
    failed = {c.name: c.detail for c in report.checks if c.passed is False}
    assert set(failed) == {"a request without an API key is refused", "a request with a wrong API key is refused"}
    assert "HTTP 200" in failed["a request without an API key is refused"]


def test_an_unreachable_api_fails_every_check_it_runs(manifest):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = run_smoke(f"http://127.0.0.1:{port}", API_KEY, manifest)
    assert not report.passed
    assert all(c.passed is not True for c in report.checks)
    assert "cannot reach" in report.checks[0].detail


def test_the_smoke_input_from_a_card_is_the_runtime_tasks_own(stack, manifest):
    # The deploy-time checks derive the input from the card alone; a loaded model runs the same one.
    for spec in manifest.models:
        backend = stack.instances[spec.name].function.backend
        if not hasattr(backend, "model"):
            continue  # the SageMaker proxy loads no model here
        model = backend.model()
        assert smoke_inputs(model.card) == model.task.smoke_input(), spec.name
        assert len(model.predict(smoke_inputs(model.card)).outputs) == len(smoke_inputs(model.card))
        checks = version_checks(spec.name, model.card)
        assert checks[1]["body"] == {"inputs": model.task.smoke_input()}
