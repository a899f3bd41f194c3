"""The OpenAPI 3.1 document of the whole API, generated: the route table (routes.ROUTES) gives the
operations, the catalog gives the models, and the pydantic models (schemas.py) and each model's
card (through its task, maas_runtime.tasks) give the schemas. Nothing in it is written by hand.

Why not Powertools' own generator (`get_openapi_json_schema`, there when the handler routed with
Powertools' resolver): it documents routes as registered, so every model shares one
`/models/{name}/invoke` path with one request schema (`inputs: list[Any]`), while each model takes
its own inputs (strings of bounded length for a text model, 8x8 pixel values from 0 to 16 for
digits) in batches of its own size. Here each model has its own paths with the schemas its card
defines, written beside the checks that enforce them (the task's `input_schema`,
`parameters_schema`, `output_schema`); every operation lists its success answer and every error
status it can return with the error envelope; the API key is an `apiKey` security scheme where the
API requires one (and then 403 is documented).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from .constants import API_KEY_HEADER, JSON
from .routes import EMBEDDING_TASK, ERRORS, ROUTES, SHARED, VERSION, RouteSpec
from .schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorResponse,
    ExplainRequest,
    ExplainResponse,
    Health,
    InvokeRequest,
    InvokeResponse,
    ModelList,
)

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "apiKey"
FORBIDDEN = 403
INTERNAL_ERROR = 500
_REF = "#/components/schemas/{model}"


def document(catalog, answering_model: str, *, api_key_required: bool, title: str, version: str,
             description: str = "") -> dict:
    """The document for an API serving `catalog`'s models.

    `answering_model` is the model whose function answers the shared routes (this function): the
    shared POST /v1/embeddings serves that model only, other embedding models have their own
    /models/<name>/v1/embeddings.
    """
    shared_models = [ErrorResponse, Health, ModelList]
    refs, defs = models_json_schema([(m, "serialization") for m in shared_models], ref_template=_REF)
    components = {"schemas": dict(defs.get("$defs", {}))}
    if api_key_required:
        components["securitySchemes"] = {SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}}
    shared_refs = {model: refs[(model, "serialization")] for model in shared_models}
    error_ref = shared_refs[ErrorResponse]

    entries = {name: catalog.entry(name) for name in catalog.names()}
    paths: dict[str, dict] = {}
    for spec in ROUTES:
        if not spec.documented:
            continue
        if spec.scope == SHARED:
            entry = entries.get(answering_model)
            paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(
                spec, spec.operation, entry, shared_refs, error_ref, api_key_required)
            continue
        for name, entry in entries.items():
            if spec.scope == VERSION:
                for version in catalog.versions(name):
                    pinned = catalog.version_entry(name, version)
                    if spec.serves(pinned.card.task):
                        operation_id = f"{spec.operation}_{_identifier(name)}_{_identifier(version)}"
                        paths.setdefault(spec.render(name=name, version=version), {})[spec.method.lower()] = _operation(
                            spec, operation_id, pinned, shared_refs, error_ref, api_key_required)
            elif spec.serves(entry.card.task):
                operation_id = f"{spec.operation}_{_identifier(name)}"
                paths.setdefault(spec.render(name=name), {})[spec.method.lower()] = _operation(
                    spec, operation_id, entry, shared_refs, error_ref, api_key_required)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": components,
    }
    if api_key_required:
        doc["security"] = [{SECURITY_SCHEME: []}]
    return doc


def _identifier(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text)


def _operation(spec: RouteSpec, operation_id: str, entry, shared_refs: dict, error_ref: dict,
               api_key_required: bool) -> dict:
    request, answer = _schemas(spec, entry, shared_refs)
    statuses = sorted({*spec.errors, INTERNAL_ERROR, *([FORBIDDEN] if api_key_required else [])})
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": spec.summary,
        "responses": {
            "200": {"description": "Success", "content": {JSON: {"schema": answer}}},
            **{str(s): {"description": ERRORS[s], "content": {JSON: {"schema": error_ref}}} for s in statuses},
        },
    }
    if request is not None:
        body = {"schema": request}
        if entry is not None and spec.request is InvokeRequest:
            body["example"] = {"inputs": entry.task_class.example_inputs(entry.card)}
        elif entry is not None and spec.request is ExplainRequest and entry.card.explain is not None:
            example = entry.task_class.example_inputs(entry.card)[:1]
            body["example"] = {"inputs": example, "parameters": {name: example[0] for name in entry.task_class.explain_required}}
        operation["requestBody"] = {"required": True, "content": {JSON: body}}
    return operation


def _schemas(spec: RouteSpec, entry, shared_refs: dict) -> tuple[dict | None, dict]:
    """(request schema or None, success schema) of one operation, for one model where it has one."""
    if spec.response in shared_refs:
        return None, shared_refs[spec.response]
    if spec.request is InvokeRequest:
        return _invoke_request(entry), _invoke_response(entry)
    if spec.request is EmbeddingsRequest:
        if entry is None or entry.card.task != EMBEDDING_TASK:
            return _plain(EmbeddingsRequest, "validation"), _plain(EmbeddingsResponse, "serialization")
        return _embeddings_request(entry), _embeddings_response(entry)
    if spec.request is ExplainRequest:
        if entry is None or entry.card.explain is None:
            return _plain(ExplainRequest, "validation"), _plain(ExplainResponse, "serialization")
        return _explain_request(entry), _explain_response(entry)
    if spec.response is dict and entry is not None:
        return None, _card(entry, pinned=spec.scope == VERSION)
    raise ValueError(f"{spec.operation}: no schema for its request {spec.request} or answer {spec.response}")


def _plain(model, mode: str) -> dict:
    """A pydantic model's JSON Schema with its nested models inlined (one self-contained schema)."""
    schema = model.model_json_schema(mode=mode)
    return _inline_defs(schema, schema.pop("$defs", {}))


def _answer(model, card) -> tuple[dict, dict]:
    """A per-model answer's schema (model and version are constants) and its properties to fill in."""
    schema = _plain(model, "serialization")
    schema["properties"].update(model={"const": card.name}, version={"const": card.version})
    schema["title"] = f"{model.__name__}[{card.name}]"
    return schema, schema["properties"]


def _batch(entry, items: dict) -> dict:
    return {"type": "array", "items": items, "minItems": 1, "maxItems": entry.card.serving.max_batch}


def _invoke_request(entry) -> dict:
    task, card = entry.task_class, entry.card
    schema = _plain(InvokeRequest, "validation")
    props = schema["properties"]
    props["inputs"] = {**_batch(entry, task.input_schema(card)), "description": props["inputs"]["description"]}
    props["parameters"] = {**task.parameters_schema(card), "description": props["parameters"]["description"]}
    schema["title"] = f"InvokeRequest[{card.name}]"
    return schema


def _invoke_response(entry) -> dict:
    task, card = entry.task_class, entry.card
    schema, props = _answer(InvokeResponse, card)
    props["outputs"] = {**_batch(entry, task.output_schema(card)), "description": "One output per input, in order"}
    return schema


def _explain_request(entry) -> dict:
    task, card = entry.task_class, entry.card
    schema = _plain(ExplainRequest, "validation")
    props = schema["properties"]
    inputs = {"type": "array", "items": task.input_schema(card), "minItems": 1, "maxItems": card.explain.max_inputs}
    props["inputs"] = {**inputs, "description": "The inputs to explain"}
    props["parameters"] = {**task.explain_parameters_schema(card), "description": props["parameters"]["description"]}
    if task.explain_required:
        schema["required"] = sorted({*schema.get("required", ()), "parameters"})
    schema["title"] = f"ExplainRequest[{card.name}]"
    return schema


def _explain_response(entry) -> dict:
    task, card = entry.task_class, entry.card
    schema, props = _answer(ExplainResponse, card)
    item = props["outputs"]["items"]
    item["properties"]["attributions"] = task.attributions_schema(card)
    if card.outputs.labels:
        item["properties"].update({
            "label": {"enum": list(card.outputs.labels), "description": "The class explained"},
            "logit": {"type": "number"},
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
        })
        item["required"] = sorted({*item.get("required", ()), "label", "logit", "probability"})
    item["additionalProperties"] = False
    props["outputs"] = {**props["outputs"], "minItems": 1, "maxItems": card.explain.max_inputs,
                        "description": "One explanation per input, in order"}
    return schema


def _embeddings_request(entry) -> dict:
    task, card = entry.task_class, entry.card
    text = task.input_schema(card)
    schema = _plain(EmbeddingsRequest, "validation")
    props = schema["properties"]
    props["model"] = {"const": card.name, "description": "The model's name"}
    props["input"] = {"anyOf": [text, _batch(entry, text)], "description": props["input"]["description"]}
    props["dimensions"] = {"anyOf": [{"const": card.outputs.dimensions}, {"type": "null"}], "default": None,
                           "description": "Only the model's own dimensions are available"}
    schema["title"] = f"EmbeddingsRequest[{card.name}]"
    return schema


def _embeddings_response(entry) -> dict:
    task, card = entry.task_class, entry.card
    schema = _plain(EmbeddingsResponse, "serialization")
    props = schema["properties"]
    props["model"] = {"const": card.name}
    props["data"] = {**props["data"], **_batch(entry, props["data"]["items"])}
    item = props["data"]["items"]["properties"]
    base64_bytes = 4 * card.outputs.dimensions
    item["embedding"] = {"anyOf": [
        task.output_schema(card),
        {"type": "string", "contentEncoding": "base64", "minLength": 4 * -(-base64_bytes // 3),
         "maxLength": 4 * -(-base64_bytes // 3), "description": "encoding_format base64: little-endian float32s"},
    ]}
    schema["title"] = f"EmbeddingsResponse[{card.name}]"
    return schema


_VERSION_SUMMARY = {
    "type": "object",
    "description": "A kept version: whether it is live, its parity figures against its fp32 original, its sizes",
    "properties": {
        "version": {"type": "string"}, "live": {"type": "boolean"}, "parity": {"type": "object"},
        "sizes": {"type": "object"}, "pruning_sparsity": {"type": ["number", "null"]},
        "quantization": {"type": ["string", "null"]}, "invoke_path": {"type": "string"},
    },
    "required": ["version", "live", "parity", "sizes", "invoke_path"],
}


def _card(entry, pinned: bool = False) -> dict:
    """GET /models/<name>: the live card as ModelCard.public() gives it, plus the deployment's facts
    and every kept version; GET /models/<name>/versions/<version>: that version's card and whether
    it is live."""
    schema = TypeAdapter(type(entry.card)).json_schema(mode="serialization")
    schema = _inline_defs(schema, schema.pop("$defs", {}))
    props = schema["properties"]
    props.pop("build", None)
    props["name"] = {"const": entry.card.name}
    props["version"] = {"const": entry.card.version}
    props["target"] = {"type": "string", "description": "lambda or sagemaker"}
    props["description"] = {"type": "string"}
    if pinned:
        props["live"] = {"type": "boolean"}
        extra = "live"
    else:
        props["versions"] = {"type": "array", "items": _VERSION_SUMMARY}
        extra = "versions"
    schema["required"] = sorted({*schema.get("required", ()), "target", "description", extra} - {"build"})
    schema["title"] = f"ModelCard[{entry.card.name}]"
    return schema


def _inline_defs(node, defs: dict):
    """`node` with every "#/$defs/<name>" reference replaced by a copy of what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_defs(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]), defs)
        return {k: _inline_defs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_defs(v, defs) for v in node]
    return node
