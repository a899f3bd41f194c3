"""One measured process: a cold start, or a warm server answering timing commands.

Run as a plain script (``python worker.py '<spec json>'``) so that nothing from the `maas`
tooling package — and never torch, for the ONNX variants — is imported into the process being
measured. The spec says what to serve and how:

    {"mode": "coldstart" | "serve", "kind": "handler" | "runtime" | "torch" | an anchor's kind,
     "model": name, "task": task, "dir": artifact or weights folder, "threads": n,
     "handler_dir": functions/model, "catalog": build/catalog.json, "first_inputs": [...]}

The anchors (sentence-transformers, fastembed, optimum) run in the bench-anchors venv's python
(see the Makefile): this script imports nothing at its top that venv lacks. A case's inputs are
one request, or {"requests": [...]}: a stream of requests, one timed call being a pass over all
of them, reported as seconds per request.

Results go, one JSON object a line, to the original stdout; the served code's own stdout
(Powertools logs and metrics) goes to /dev/null so it cannot corrupt the protocol.
"""

import time

T_START = time.time()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402

_PROTO = os.fdopen(os.dup(1), "w", buffering=1)
_NULL = os.open(os.devnull, os.O_WRONLY)
os.dup2(_NULL, 1)


def send(obj) -> None:
    _PROTO.write(json.dumps(obj) + "\n")


def peak_rss_bytes() -> int:
    """This process's high-water RSS. Not getrusage's ru_maxrss: Linux carries it across fork+exec,
    so a child of a large parent would report the parent's size."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Context:
    """The fields Powertools reads from a Lambda context object."""

    function_name = "maas-bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 1769
    log_group_name = "/aws/lambda/maas-bench"
    log_stream_name = "bench"

    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:maas-bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 15000


def invoke_event(model: str, inputs: list) -> dict:
    """An API Gateway REST proxy event (payload format 1.0) for POST /models/{name}/invoke."""
    path = f"/models/{model}/invoke"
    headers = {"content-type": "application/json", "x-api-key": "bench", "Host": "api.example.com"}
    return {
        "resource": "/models/{name}/invoke",
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"name": model},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/models/{name}/invoke",
            "httpMethod": "POST",
            "path": "/prod" + path,
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "api.example.com",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "maas-bench", "apiKey": "bench"},
        },
        "body": json.dumps({"inputs": inputs}),
        "isBase64Encoded": False,
    }


# --- the served variants: import, load, and the callables each timing path runs --------------


class HandlerServer:
    """The real Lambda handler module (functions/model/app.py), driven as Lambda drives it."""

    def __init__(self, spec):
        self.spec = spec

    def import_(self):
        # Lambda's init phase, as Lambda runs it: the environment is set and app.py is imported,
        # which starts loading the packaged model in a thread while its own imports go on.
        os.environ["MAAS_MODEL_NAME"] = self.spec["model"]
        os.environ["MAAS_MODEL_DIR"] = self.spec["dir"]
        os.environ["MAAS_CATALOG_PATH"] = self.spec["catalog"]
        sys.path.insert(0, self.spec["handler_dir"])
        import app  # noqa: F401

        self.app = app

    def load(self):
        # Whatever of the model load the imports did not already cover (the init's tail).
        self.model = self.app.lambda_handler.function.backend.model()

    def answer(self, inputs):
        response = self.app.lambda_handler(invoke_event(self.spec["model"], inputs), Context())
        if response["statusCode"] != 200:
            raise RuntimeError(f"handler answered {response['statusCode']}: {response['body'][:300]}")
        return response

    def paths(self):
        paths = {"handler": self._handler_path, "predict": self._predict_path, "session": self._session_path}
        if getattr(self.model.task, "batching", None) is not None:
            from maas_runtime.tasks.processing import BATCHING_POLICIES

            paths.update({f"batching:{name}": self._batching_path(name) for name in BATCHING_POLICIES})
        import importlib.util

        if importlib.util.find_spec("maas.local_api") is not None:  # `maas serve`, where installed
            paths["localapi"] = self._local_api_path
        return paths

    def _local_api_path(self, inputs):
        """HTTP through `maas serve`'s LocalApi on 127.0.0.1 (keep-alive), to this process's handler."""
        import http.client

        from maas.local_api import FunctionInstance, LocalApi, Route

        if not hasattr(self, "_api"):
            instance = FunctionInstance(f"maas-{self.spec['model']}", self.app.lambda_handler.function)
            self._api = LocalApi([Route("ANY", f"/models/{self.spec['model']}/invoke", instance)])
            from urllib.parse import urlsplit

            url = urlsplit(self._api.start(port=0))
            self._conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        body = json.dumps({"inputs": inputs}).encode()
        path, conn = f"/models/{self.spec['model']}/invoke", self._conn
        headers = {"content-type": "application/json"}

        def call():
            # The server closes keep-alive connections idle past its deadline, as any server does:
            # reconnect once, as an HTTP client library would.
            for attempt in (1, 2):
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    break
                except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                    conn.close()
                    if attempt == 2:
                        raise
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"local API answered {response.status}: {data[:300]!r}")

        return call

    def _handler_path(self, inputs):
        event, context, handler = invoke_event(self.spec["model"], inputs), Context(), self.app.lambda_handler
        return lambda: handler(event, context)

    def _predict_path(self, inputs):
        model = self.model
        return lambda: model.predict(inputs, {})

    def _batching_path(self, policy):
        """maas_runtime predict with one of the runtime's sub-batch policies in place of its default."""
        from maas_runtime.tasks.processing import BATCHING_POLICIES

        def make(inputs):
            task, model, runs = self.model.task, self.model, BATCHING_POLICIES[policy]

            def call():
                default, task.batching = task.batching, runs
                try:
                    model.predict(inputs, {})
                finally:
                    task.batching = default

            return call

        return make

    def embed(self, texts):
        step = self.model.max_batch
        return [v for i in range(0, len(texts), step) for v in self.model.predict(texts[i : i + step], {}).outputs]

    def breakdown(self, inputs, iters):
        from breakdown import measure_parts  # beside this script

        requests = inputs["requests"] if isinstance(inputs, dict) else [inputs]
        return measure_parts(self.app, self.model, self.spec["model"], requests, iters, invoke_event, Context)

    def _session_path(self, inputs):
        engine, feeds = self.model.engine, self.model.task.prepare(list(inputs), {}).feeds
        return lambda: engine.run(feeds)


class RuntimeServer(HandlerServer):
    """The runtime library alone (maas_runtime.load_model), no handler."""

    def import_(self):
        import maas_runtime

        self.maas_runtime = maas_runtime

    def load(self):
        self.model = self.maas_runtime.load_model(self.spec["dir"])

    def answer(self, inputs):
        return self.model.predict(inputs, {})

    def paths(self):
        return {"predict": self._predict_path, "session": self._session_path}


class TorchServer:
    """The baseline a user would otherwise deploy: PyTorch eager with the original weights."""

    def __init__(self, spec):
        self.spec = spec

    def import_(self):
        import torch

        torch.set_num_threads(int(self.spec["threads"]))
        self.torch = torch
        if self.spec["task"] == "embedding":
            import transformers  # noqa: F401
            from transformers import AutoModel, AutoTokenizer

            self.auto = (AutoModel, AutoTokenizer)

    def load(self):
        torch = self.torch
        if self.spec["task"] == "embedding":
            auto_model, auto_tokenizer = self.auto
            self.tokenizer = auto_tokenizer.from_pretrained(self.spec["dir"])
            self.model = auto_model.from_pretrained(self.spec["dir"]).eval()
            self.max_length = int(self.spec.get("max_sequence_length", 256))
        else:
            saved = torch.load(self.spec["dir"], map_location="cpu", weights_only=True)
            layers, widths = [torch.nn.Flatten()], saved["widths"]
            for i, (a, b) in enumerate(zip(widths, widths[1:])):
                layers.append(torch.nn.Linear(a, b))
                if i < len(widths) - 2:
                    layers.append(torch.nn.ReLU())
            self.model = torch.nn.Sequential(*layers)
            self.model.load_state_dict(saved["state_dict"])
            self.model.eval()
            self.scale = float(saved["scale"])

    def answer(self, inputs):
        torch = self.torch
        with torch.inference_mode():
            if self.spec["task"] == "embedding":
                batch = self.tokenizer(
                    inputs, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1).tolist()
            pixels = torch.tensor(inputs, dtype=torch.float32).reshape(len(inputs), 8, 8) * self.scale
            return torch.softmax(self.model(pixels), dim=-1).tolist()

    def paths(self):
        return {"torch": lambda inputs: (lambda: self.answer(inputs))}

    def embed(self, texts):
        return [v for i in range(0, len(texts), 32) for v in self.answer(texts[i : i + 32])]


class AnchorServer:
    """A CPU embedding stack a user could pick instead, with the same weights, answering
    L2-normalized mean-pooled vectors (sentence-transformers' definition of this model)."""

    def __init__(self, spec):
        self.spec = spec
        self.threads = int(spec["threads"])
        self.max_length = int(spec.get("max_sequence_length", 256))

    def import_(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def paths(self):
        return {"encode": lambda inputs: (lambda: self.answer(inputs))}

    def embed(self, texts):
        return [list(map(float, v)) for v in self.answer(texts)]


class SentenceTransformersServer(AnchorServer):
    """sentence-transformers' `encode` (it sorts a call's inputs by length before batching)."""

    def import_(self):
        super().import_()
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self.threads)
        self.cls = SentenceTransformer

    def load(self):
        self.model = self.cls(self.spec["dir"], device="cpu", local_files_only=True)
        self.model.max_seq_length = self.max_length

    def answer(self, inputs):
        return self.model.encode(inputs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


class FastembedServer(AnchorServer):
    """fastembed's TextEmbedding on the kit's own fp32 ONNX export, registered as a custom model
    (mean pooling, normalized) and loaded from a local folder: nothing is downloaded."""

    NAME = "maas-bench/fp32-onnx"

    def import_(self):
        super().import_()
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        if not any(d["model"] == self.NAME for d in TextEmbedding.list_supported_models()):
            TextEmbedding.add_custom_model(model=self.NAME, pooling=PoolingType.MEAN, normalization=True,
                                           sources=ModelSource(hf=self.NAME), dim=int(self.spec["dimensions"]),
                                           model_file="model.onnx")
        self.cls = TextEmbedding

    def load(self):
        self.model = self.cls(self.NAME, specific_model_path=self.spec["dir"], threads=self.threads,
                              local_files_only=True, providers=["CPUExecutionProvider"])

    def answer(self, inputs):
        return list(self.model.embed(inputs, batch_size=32))


class OptimumServer(AnchorServer):
    """Hugging Face Optimum's ORTModelForFeatureExtraction on the kit's fp32 export, pooled and
    normalized as sentence-transformers does."""

    def import_(self):
        super().import_()
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        self.ort, self.cls, self.tokenizer_cls = ort, ORTModelForFeatureExtraction, AutoTokenizer

    def load(self):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.model = self.cls.from_pretrained(self.spec["dir"], file_name="model.onnx", session_options=options,
                                              provider="CPUExecutionProvider", local_files_only=True)
        self.tokenizer = self.tokenizer_cls.from_pretrained(self.spec["dir"])

    def answer(self, inputs):
        import numpy as np

        batch = self.tokenizer(inputs, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        hidden = np.asarray(self.model(**batch).last_hidden_state)
        mask = batch["attention_mask"][..., None].astype(hidden.dtype)
        pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


SERVERS = {
    "handler": HandlerServer,
    "runtime": RuntimeServer,
    "torch": TorchServer,
    "sentence-transformers": SentenceTransformersServer,
    "fastembed": FastembedServer,
    "optimum": OptimumServer,
}


def first_request(inputs):
    return {"requests": inputs["requests"][:1]} if isinstance(inputs, dict) else inputs


def timed_call(make, inputs):
    """The callable one timed call runs: one request, or a pass over a stream of them."""
    if isinstance(inputs, dict):
        calls = [make(request) for request in inputs["requests"]]

        def stream():
            for call in calls:
                call()

        return stream, len(calls)
    return make(inputs), 1


def coldstart(server, spec) -> None:
    server.import_()
    t_imported = time.time()
    server.load()
    t_loaded = time.time()
    server.answer(spec["first_inputs"])
    t_answered = time.time()
    send(
        {
            "t_start": T_START,
            "t_imported": t_imported,
            "t_loaded": t_loaded,
            "t_answered": t_answered,
            "peak_rss_bytes": peak_rss_bytes(),
            "torch_imported": "torch" in sys.modules,
        }
    )


def serve(server, spec) -> None:
    server.import_()
    server.load()
    server.answer(spec["first_inputs"])
    paths, inputs, warmed = server.paths(), {}, set()
    send({"ready": True, "paths": sorted(paths), "torch_imported": "torch" in sys.modules})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "inputs":
            inputs[cmd["key"]] = cmd["items"]
            send({"ok": True})
        elif op == "time":
            call, per = timed_call(paths[cmd["path"]], inputs[cmd["key"]])
            if (cmd["path"], cmd["key"]) not in warmed:  # the first call on new shapes is not a warm request
                warm, _ = timed_call(paths[cmd["path"]], first_request(inputs[cmd["key"]]))
                warm()  # (a stream's first request only: a whole pass is seconds)
                warmed.add((cmd["path"], cmd["key"]))
            times = []
            for _ in range(int(cmd["iters"])):
                t0 = time.perf_counter()
                call()
                times.append((time.perf_counter() - t0) / per)
            send({"times": times})
        elif op == "paired":
            # Paths called alternately, call by call, so drift hits each pair alike.
            names = cmd["paths"]
            calls = {name: timed_call(paths[name], inputs[cmd["key"]]) for name in names}
            for call, _ in calls.values():
                call()
            times = {name: [] for name in names}
            for i in range(int(cmd["iters"])):
                for name in names[i % len(names):] + names[: i % len(names)]:
                    call, per = calls[name]
                    t0 = time.perf_counter()
                    call()
                    times[name].append((time.perf_counter() - t0) / per)
            send({"times": times})
        elif op == "embed":
            send({"vectors": server.embed(cmd["texts"])})
        elif op == "breakdown":
            send({"parts": server.breakdown(inputs[cmd["key"]], int(cmd["iters"]))})
        elif op == "rss":
            send({"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": current_rss_bytes()})
        elif op == "exit":
            send({"ok": True})
            return
        else:
            send({"error": f"unknown op {op!r}"})


def main() -> None:
    spec = json.loads(sys.argv[1])
    server = SERVERS[spec["kind"]](spec)
    try:
        (coldstart if spec["mode"] == "coldstart" else serve)(server, spec)
    except Exception as exc:  # reported to the parent, which raises it with the variant's name
        import traceback

        send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        sys.exit(1)


if __name__ == "__main__":
    main()
