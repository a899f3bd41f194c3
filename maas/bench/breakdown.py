"""Where a request's time goes, through the served model: run inside a bench worker (beside
worker.py, with the worker's imports only), so every piece is timed in the serving process.

Per request, each piece is timed alternately in the same pass: the whole handler, maas_runtime's
predict, then predict's pieces as it runs them (tokenizing, cutting the request into length-aware
sub-batches, the session runs, pooling and normalizing, rounding to JSON values, encoding the
body), and, for comparison, the session run of the same request as one padded batch. A second
session on the same file with ONNX Runtime's profiler on splits the graph's own time by operator
type (MatMul kernels, attention, layer norms...). Figures are medians per request, summed over the
requests of a pass."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time


def measure_parts(app, model, name: str, requests: list, iters: int, invoke_event, context) -> dict:
    import numpy as np
    import orjson

    task, engine = model.task, model.engine
    samples: list[dict[str, list[float]]] = [{} for _ in requests]
    tokens = {"real": 0, "padded_one_batch": 0, "padded_length_aware": 0, "runs_length_aware": 0}

    def timed(store, key, fn):
        t0 = time.perf_counter()
        out = fn()
        store.setdefault(key, []).append(time.perf_counter() - t0)
        return out

    for i in range(iters + 1):  # the first pass warms the shapes and is dropped
        for request, store in zip(requests, samples):
            store = store if i else {}
            event = invoke_event(name, request)
            timed(store, "handler (whole request)", lambda: app.lambda_handler(event, context()))
            timed(store, "predict (maas_runtime)", lambda: model.predict(request, {}))
            feeds, _ = timed(store, "tokenize", lambda: task.encoder.encode(request))
            prepared = timed(store, "prepare: check, tokenize, plan sub-batches", lambda: task.prepare(request, {}))
            parts = prepared.parts or [(np.arange(len(request)), prepared)]
            outputs = [timed(store, "session runs (length-aware)", lambda: engine.run(p.feeds)) for _, p in parts]
            if len(outputs) > 1:  # sum the runs of this call into one sample
                store["session runs (length-aware)"][-len(outputs):] = [sum(store["session runs (length-aware)"][-len(outputs):])]
            timed(store, "session run (one padded batch)", lambda: engine.run(feeds))
            answers = timed(store, "pool, normalize, JSON values", lambda: [task.finish(p, o) for (_, p), o in zip(parts, outputs)])
            body = {"model": name, "outputs": [v for a in answers for v in a.outputs], "usage": prepared.usage}
            timed(store, "encode response body (orjson)", lambda: orjson.dumps(body))
            if i == 1:
                lengths = feeds["attention_mask"].sum(axis=1)
                tokens["real"] += int(lengths.sum())
                tokens["padded_one_batch"] += int(lengths.max()) * len(request)
                tokens["padded_length_aware"] += sum(int(p.feeds["attention_mask"].shape[1]) * len(rows) for rows, p in parts)
                tokens["runs_length_aware"] += len(parts)
    seconds = {key: sum(statistics.median(store[key]) for store in samples) for key in samples[0]}
    return {"seconds_per_pass": seconds, "requests": len(requests), "tokens": tokens,
            "operators": profile_operators(model, requests)}


def profile_operators(model, requests: list) -> dict:
    """Seconds per ONNX operator type over one length-aware pass of `requests`, from ONNX
    Runtime's own profiler on a second session of the same model file."""
    import onnxruntime as ort
    from maas_runtime.session import providers, session_options

    options = session_options()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        with open(model.folder / model.card.model_file, "rb") as fh:
            session = ort.InferenceSession(fh.read(), options, providers=providers())
        names = [i.name for i in session.get_inputs()]
        for request in requests:
            prepared = model.task.prepare(request, {})
            for part in [p for _, p in prepared.parts] or [prepared]:
                session.run(None, {k: v for k, v in part.feeds.items() if k in names})
        path = session.end_profiling()
        with open(path) as fh:
            events = json.load(fh)
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e6
    return dict(sorted(by_op.items(), key=lambda kv: -kv[1]))
