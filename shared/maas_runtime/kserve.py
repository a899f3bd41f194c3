"""The KServe v2 inference protocol (Triton's HTTP protocol), and an Engine that runs a graph through it.

`RemoteEngine` is the `Engine` of a model whose graph runs on a server elsewhere: Triton on a GPU
SageMaker endpoint, or a Triton (or its stand-in) on this machine. A task's feeds go out as one
KServe v2 inference request and the answer's tensors come back as the graph's outputs, so a task's
pre- and post-processing run unchanged whichever engine it has. How the bytes travel is injected
(a `Transport`): sagemaker-runtime InvokeEndpoint in the proxy Lambda, plain HTTP locally.

Requests use Triton's binary tensor data extension: a UTF-8 JSON header, then each tensor's raw
little-endian bytes in the order of the header's entries that carry ``parameters.binary_data_size``.
The header's length travels in the ``Inference-Header-Content-Length`` header (plain HTTP) or in
the Content-Type ``application/vnd.sagemaker-triton.binary+json;json-header-size=N`` (SageMaker's
Triton). Answers may be binary or plain JSON (``data`` as a flat row-major list); both decode.

The codec is ours, not tritonclient's: tritonclient's (the tests' byte-for-byte reference) comes
with its [http] extra, about 70 MB of gevent, aiohttp and rapidjson that a Lambda layer would carry
for nothing, and what is needed here is a table of datatypes and some slicing.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ArtifactError, LimitExceeded

# KServe v2 datatype -> little-endian numpy dtype. BYTES (length-prefixed strings) is separate.
DATATYPES = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
BYTES = "BYTES"
_BY_KIND = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in DATATYPES.items()}

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
"""Plain HTTP: the JSON header's length in a binary request or answer."""
SAGEMAKER_BINARY_CONTENT_TYPE = "application/vnd.sagemaker-triton.binary+json"
"""SageMaker's Triton: the same body, the header's length as a Content-Type parameter."""
_SAGEMAKER_HEADER_SIZE = re.compile(r"json-header-size\s*=\s*(\d+)")

METADATA_FILE = "kserve-model.json"
"""Beside a remote model's card: the served graph's KServe v2 model metadata
(``GET /v2/models/<name>``: name, platform, inputs and outputs with datatype and shape), written
when the server's model repository is made. SageMaker's /invocations cannot be asked for it."""


_ANSWER_HEADER_ALLOWANCE = 4096
"""Room for an answer's JSON header (model name, each output's name, datatype and shape)."""


class ProtocolError(ValueError):
    """An answer that does not follow the KServe v2 protocol (or not for the request sent)."""


# --- tensors --------------------------------------------------------------------------------------


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return BYTES
    try:
        return _BY_KIND[array.dtype.newbyteorder("=").str[1:]]
    except KeyError:
        raise TypeError(f"no KServe v2 datatype for numpy dtype {array.dtype}") from None


def tensor_bytes(array: np.ndarray) -> bytes:
    """The tensor's raw form: row-major little-endian values; BYTES as uint32 length + bytes each."""
    datatype = datatype_of(array)
    if datatype != BYTES:
        return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    out = bytearray()
    for item in array.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        out += struct.pack("<I", len(raw)) + raw
    return bytes(out)


def tensor_from_bytes(raw: bytes | memoryview, datatype: str, shape: list[int]) -> np.ndarray:
    count = _count(shape)
    if datatype == BYTES:
        items, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ProtocolError("a BYTES tensor ends inside a length prefix")
            (size,) = struct.unpack_from("<I", raw, offset)
            items.append(bytes(raw[offset + 4 : offset + 4 + size]))
            offset += 4 + size
        if offset != len(raw) or len(items) != count:
            raise ProtocolError(f"a BYTES tensor holds {len(items)} elements, its shape says {count}")
        return np.array(items, dtype=object).reshape(shape)
    dtype = _dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(f"a {datatype} tensor of shape {shape} needs {count * dtype.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def tensor_from_json(data, datatype: str, shape: list[int]) -> np.ndarray:
    """A tensor given as JSON ``data``: flat row-major (nested lists are accepted too)."""
    try:
        if datatype == BYTES:
            array = np.array([d.encode("utf-8") if isinstance(d, str) else d for d in np.ravel(data)], dtype=object)
        else:
            array = np.asarray(data, dtype=_dtype(datatype)).ravel()
        return array.reshape(shape)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"tensor data does not fit {datatype} {shape}: {exc}") from None


def _dtype(datatype: str) -> np.dtype:
    try:
        return np.dtype(DATATYPES[datatype])
    except KeyError:
        raise ProtocolError(f"unknown datatype {datatype!r}") from None


def _count(shape) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"a tensor shape must be a list of non-negative integers, got {shape!r}")
    count = 1
    for d in shape:
        count *= d
    return count


# --- messages -------------------------------------------------------------------------------------


def _dumps(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode("utf-8")


def encode_request(
    inputs: dict[str, np.ndarray], outputs: list[str] | None = None, *, binary: bool = True
) -> tuple[bytes, int | None]:
    """(body, JSON header length) of an inference request; the length is None for plain JSON.

    With ``binary`` the inputs travel as raw bytes and the outputs are asked for the same way.
    """
    header: dict = {"inputs": []}
    chunks: list[bytes] = []
    for name, array in inputs.items():
        entry = {"name": name, "shape": list(array.shape), "datatype": datatype_of(array)}
        if binary:
            raw = tensor_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif entry["datatype"] == BYTES:
            entry["data"] = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in array.ravel()]
        else:
            entry["data"] = array.ravel().tolist()
        header["inputs"].append(entry)
    if outputs:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    text = _dumps(header)
    return (text + b"".join(chunks), len(text)) if chunks else (text, None)


def decode_request(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, {input name: array}) of an inference request, JSON or binary."""
    header, rest = _split(body, header_length)
    arrays = _tensors(header.get("inputs"), rest, "inputs")
    return header, arrays


def encode_response(
    model_name: str, outputs: dict[str, np.ndarray], binary: dict[str, bool], *, model_version: str = "1",
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """(body, JSON header length) of an inference answer; ``binary[name]`` picks each output's form."""
    header: dict = {"model_name": model_name, "model_version": model_version}
    if request_id:
        header["id"] = request_id
    header["outputs"] = []
    chunks: list[bytes] = []
    for name, array in outputs.items():
        entry = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary.get(name):
            raw = tensor_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif entry["datatype"] == BYTES:
            entry["data"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.ravel()]
        else:
            entry["data"] = array.ravel().tolist()
        header["outputs"].append(entry)
    text = _dumps(header)
    return (text + b"".join(chunks), len(text)) if chunks else (text, None)


def decode_response(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, {output name: array}) of an inference answer, JSON or binary."""
    header, rest = _split(body, header_length)
    if "error" in header and "outputs" not in header:
        raise ProtocolError(f"the server answered an error: {str(header['error'])[:300]}")
    return header, _tensors(header.get("outputs"), rest, "outputs")


def _split(body: bytes, header_length: int | None) -> tuple[dict, memoryview]:
    size = len(body) if header_length is None else header_length
    if not 0 <= size <= len(body):
        raise ProtocolError(f"the JSON header length {size} is outside the {len(body)}-byte body")
    try:
        header = json.loads(bytes(body[:size]))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("the message's JSON header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("the message's JSON header is not an object")
    return header, memoryview(body)[size:]


def _tensors(entries, rest: memoryview, what: str) -> dict[str, np.ndarray]:
    if not isinstance(entries, list):
        raise ProtocolError(f"the message has no {what} list")
    arrays, offset = {}, 0
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ProtocolError(f"each of {what} needs a name")
        name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
        if not isinstance(datatype, str):
            raise ProtocolError(f"{what} {name!r} has no datatype")
        _count(shape)
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise ProtocolError(f"{what} {name!r}: binary_data_size {size!r} runs past the body")
            arrays[name] = tensor_from_bytes(rest[offset : offset + size], datatype, shape)
            offset += size
        elif "data" in entry:
            arrays[name] = tensor_from_json(entry["data"], datatype, shape)
        else:
            raise ProtocolError(f"{what} {name!r} has neither data nor binary_data_size")
    if offset != len(rest):
        raise ProtocolError(f"{len(rest) - offset} bytes after the last tensor")
    return arrays


# --- where the header length travels ----------------------------------------------------------------


def sagemaker_content_type(header_length: int | None) -> str:
    """InvokeEndpoint's ContentType for a body from `encode_request`."""
    if header_length is None:
        return JSON_CONTENT_TYPE
    return f"{SAGEMAKER_BINARY_CONTENT_TYPE};json-header-size={header_length}"


def header_length_of(content_type: str | None, header_value: str | None = None) -> int | None:
    """The JSON header length of a message from its Inference-Header-Content-Length (plain HTTP)
    or its SageMaker Content-Type; None when the whole body is JSON."""
    if header_value is not None:
        try:
            return int(header_value)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH_HEADER} is not an integer: {header_value[:40]!r}") from None
    ctype = (content_type or "").strip()
    if ctype.lower().startswith(SAGEMAKER_BINARY_CONTENT_TYPE):
        match = _SAGEMAKER_HEADER_SIZE.search(ctype)
        if match is None:
            raise ProtocolError(f"{SAGEMAKER_BINARY_CONTENT_TYPE} without json-header-size")
        return int(match.group(1))
    return None


# --- the engine -----------------------------------------------------------------------------------


class Transport(Protocol):
    """Moves one inference request to the model's server and its answer back."""

    max_payload_bytes: int | None
    """The largest request and the largest answer it can carry (None: no limit)."""

    def infer(self, body: bytes, header_length: int | None) -> tuple[bytes, int | None]:
        """(answer body, its JSON header length) for a body from `encode_request`. Failures raise
        the transport's own exceptions: its caller knows what they mean."""


def read_metadata(folder) -> dict:
    path = Path(folder) / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"a remote model needs {METADATA_FILE} beside its card (the served graph's inputs and outputs)") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{METADATA_FILE} is unreadable: {exc.__class__.__name__}") from None


class RemoteEngine:
    """The graph described by KServe v2 model metadata, run by the server behind ``transport``."""

    def __init__(self, metadata: dict, transport: Transport, *, binary: bool = True, max_batch: int | None = None):
        """``max_batch``: the most rows the server takes in one request (Triton's max_batch_size);
        a larger run (an explanation's coalitions) is sent as several requests, in order."""
        self.max_batch = max_batch
        try:
            self.model_name = str(metadata["name"])
            inputs, outputs = metadata["inputs"], metadata["outputs"]
            self.input_names = [str(i["name"]) for i in inputs]
            self.input_shapes = {str(i["name"]): list(i["shape"]) for i in inputs}
            self.output_names = [str(o["name"]) for o in outputs]
            self.output_specs = {str(o["name"]): (str(o["datatype"]), list(o["shape"])) for o in outputs}
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{METADATA_FILE} is not KServe v2 model metadata: {exc}") from None
        self.transport = transport
        self.binary = binary

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise ArtifactError(f"the served graph takes {', '.join(missing)}, which this model's task does not produce")
        inputs = {name: feeds[name] for name in self.input_names}
        rows = len(next(iter(inputs.values())))
        if self.max_batch is None or rows <= self.max_batch:
            return self._run(inputs)
        parts = [
            self._run({name: array[start : start + self.max_batch] for name, array in inputs.items()})
            for start in range(0, rows, self.max_batch)
        ]
        return [np.concatenate(outputs) for outputs in zip(*parts)]

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        limit = self.transport.max_payload_bytes
        batch = len(next(iter(inputs.values())))
        if limit is not None:
            self._check_answer_size(inputs, batch, limit)
        body, header_length = encode_request(inputs, self.output_names, binary=self.binary)
        if limit is not None and len(body) > limit:
            raise LimitExceeded(
                f"the batch's tensors are {len(body)} bytes; the model endpoint takes at most {limit} bytes per request: "
                "send fewer or shorter inputs"
            )
        answer, answer_header_length = self.transport.infer(body, header_length)
        _, arrays = decode_response(answer, answer_header_length)
        missing = [n for n in self.output_names if n not in arrays]
        if missing:
            raise ProtocolError(f"the answer lacks output(s) {', '.join(missing)}")
        results = [arrays[n] for n in self.output_names]
        for name, array in zip(self.output_names, results):
            if array.ndim == 0 or array.shape[0] != batch:
                raise ProtocolError(f"output {name!r} has shape {list(array.shape)} for a batch of {batch}")
        return results

    def _check_answer_size(self, inputs: dict[str, np.ndarray], batch: int, limit: int) -> None:
        """Refuse a batch whose answer could not come back: dynamic axes other than the batch are
        taken as long as the longest input axis sent (a per-token output's sequence axis)."""
        longest = max((a.shape[1] for a in inputs.values() if a.ndim > 1), default=1)
        expected = _ANSWER_HEADER_ALLOWANCE
        for datatype, shape in self.output_specs.values():
            if datatype == BYTES:
                return  # variable-length: cannot be known before the answer
            count = batch
            for d in shape[1:]:
                count *= d if isinstance(d, int) and d >= 0 else longest
            expected += count * np.dtype(DATATYPES.get(datatype, "<f8")).itemsize
        if expected > limit:
            per_input = max(1, expected // batch)
            raise LimitExceeded(
                f"the answer for {batch} inputs would be about {expected} bytes; the model endpoint answers at most "
                f"{limit} bytes per request: send at most {max(1, limit // per_input)} inputs of this length per request"
            )
