"""`maas serve --template`: the synthesized assembly served locally answers like `maas serve`."""

from __future__ import annotations

import json
import urllib.request

import pytest

from maas.local_api import LocalApi, Route, configure_local_environment, manifest_stack
from maas.template_api import TemplateError, TemplateStack, keyed_api, load_assembly, template_stack

DIGIT = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
         [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]
REQUESTS = [
    ("POST", "/models/minilm/invoke", {"inputs": ["A man is playing a guitar.", "hello world"]}),
    ("POST", "/models/digits/invoke", {"inputs": [DIGIT], "parameters": {"top_k": 3}}),
    ("POST", "/models/minilm-gpu/invoke", {"inputs": ["A man is playing a guitar."]}),
    ("POST", "/v1/embeddings", {"model": "minilm", "input": "hello world"}),
    ("POST", "/models/digits/invoke", {"inputs": "not a list"}),
    ("GET", "/models/minilm", None),
]


@pytest.fixture(scope="module")
def apis(synth, manifest, repo_root):
    configure_local_environment()
    from_template = template_stack(synth.outdir, repo_root)
    from_manifest = manifest_stack(manifest)
    a, b = LocalApi(from_template.routes), LocalApi(from_manifest.routes)
    url = a.start("127.0.0.1", 0)
    yield a, b, url, from_template
    a.stop()
    from_template.close()
    from_manifest.close()


def _call(api, method, path, body):
    data = json.dumps(body).encode() if body is not None else b""
    status, _, raw = api.handle(method, path, [("Content-Type", "application/json")], data)
    return status, json.loads(raw)


@pytest.mark.parametrize("method,path,body", REQUESTS)
def test_template_api_answers_like_the_manifest_api(apis, method, path, body):
    template_api, manifest_api, _, _ = apis
    status, answer = _call(template_api, method, path, body)
    want_status, want = _call(manifest_api, method, path, body)
    assert status == want_status
    if status == 200 and method == "POST" and "outputs" in want:
        assert answer["model"] == want["model"] and answer["outputs"] == want["outputs"]
    elif status == 200 and "data" in want:
        assert answer["data"] == want["data"]
    elif status == 200:
        assert answer == want
    else:
        assert answer["error"]["code"] == want["error"]["code"]


def test_template_api_over_http_runs_each_function_from_its_asset(apis, synth):
    _, _, url, stack = apis
    request = urllib.request.Request(f"{url}/models/digits/invoke", data=json.dumps({"inputs": [DIGIT]}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert json.loads(response.read())["outputs"][0][0]["label"] == "0"
    for function in stack.functions.values():
        files = function.module_files(["app", "maas_api"])
        assert files["app"].startswith(str(synth.outdir.resolve()))
        assert not any("site-packages" in p for p in function.sys_path)


def test_template_api_refuses_a_folder_without_an_assembly(tmp_path, repo_root):
    with pytest.raises(TemplateError, match="cdk synth"):
        template_stack(tmp_path, repo_root)


class _Echo:
    def invoke(self, event, context):
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}


def test_template_api_enforces_the_templates_api_keys(synth):
    # GIVEN the synthesized template's methods, which all require an API key (ApiKeyRequired)
    methods = load_assembly(synth.outdir).methods
    assert methods and all(m.api_key_required for m in methods)
    routes = [Route(m.http_method, m.path, _Echo(), api_key_required=m.api_key_required) for m in methods]
    built = TemplateStack(routes=routes, instances={}, api_key_required=True)
    # WHEN it is served without a key given
    api, generated = keyed_api(built, None)
    # THEN a key was made, and requests need it
    assert generated and api.api_key == generated
    headers = [("Content-Type", "application/json")]
    status, _, raw = api.handle("POST", "/models/digits/invoke", headers, b"{}")
    assert status == 403 and json.loads(raw)["error"]["code"] == "forbidden"
    status, _, raw = api.handle("POST", "/models/digits/invoke", [*headers, ("x-api-key", generated)], b"{}")
    assert status == 200 and json.loads(raw) == {"ok": True}
    # AND a key given is the one required
    api, generated = keyed_api(built, "chosen-key")
    assert generated is None and api.api_key == "chosen-key"
