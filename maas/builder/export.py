"""Step 1: export a model's source to an fp32 ONNX graph, with its fp32 reference.

Three kinds of source: a Hugging Face model folder (safetensors + config + tokenizer.json),
a model trained by a build recipe in this repo, or an .onnx file the user brings.
Each export also yields the evaluation inputs and the fp32 original's outputs on them,
which parity compares the optimized model against.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..manifest import ModelSpec
from . import evalsets

OPSET = 17
TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class ExportError(RuntimeError):
    pass


@dataclass
class Exported:
    onnx_path: Path
    inputs: dict  # the card's "inputs" (tokenizer file name for text models)
    outputs: dict  # the card's "outputs"
    eval_inputs: list  # what parity feeds, as a request would send it
    reference: np.ndarray  # the fp32 original's outputs on eval_inputs (embeddings or probabilities)
    eval_labels: np.ndarray | None = None  # ground truth, where the data has it
    extra_files: dict[str, Path] = field(default_factory=dict)  # shipped beside model.onnx
    description: str = ""


def _torch_export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    import torch

    module.eval()  # every wrapper too: dropout and friends must be off in the graph
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns about Python-side shape checks in transformers' masking code;
        # the exported graph is checked against PyTorch by the parity step instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,  # torch 2.13 defaults to the dynamo exporter, which needs onnxscript
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
        )


def _text_encoder(tokenizer_path: Path, max_length: int):
    from maas_runtime.tokenization import TextEncoder

    return TextEncoder(tokenizer_path, max_length)


def _mean_pooled(hidden, mask):
    from maas_runtime.tasks import l2_normalize, mean_pool

    return l2_normalize(mean_pool(hidden, mask))


def _text_reference(task: str, encoder, texts: list[str], run) -> np.ndarray:
    """The fp32 original's outputs, fed exactly the tokens the served model will see.

    `run(feeds)` is the original's forward pass; pooling (embeddings) or softmax (classifiers)
    is the runtime's own, so only the model differs between reference and served output.
    """
    from maas_runtime.tasks import softmax

    rows = []
    for start in range(0, len(texts), 16):
        feeds, _ = encoder.encode(texts[start : start + 16])
        raw = run(feeds)
        rows.append(_mean_pooled(raw, feeds["attention_mask"]) if task == "embedding" else softmax(raw))
    return np.concatenate(rows)


def _export_huggingface(spec: ModelSpec, folder: Path, work: Path) -> Exported:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    tokenizer = folder / "tokenizer.json"
    if not (folder / "config.json").is_file() or not tokenizer.is_file():
        raise ExportError(f"{spec.name}: {folder} needs config.json and tokenizer.json")
    max_length = spec.serving.max_sequence_length
    encoder = _text_encoder(tokenizer, max_length)
    texts = evalsets.embedding_texts()

    if spec.task == "embedding":
        model = AutoModel.from_pretrained(str(folder)).eval()
        # The encoder's token vectors; pooling and normalization run in maas_runtime.
        output_name = "last_hidden_state"
        outputs = {"type": "embedding", "dimensions": model.config.hidden_size, "pooling": "mean", "normalize": True}
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        output_name = "logits"
        id2label = model.config.id2label
        labels = list(spec.labels or [id2label[i] for i in range(len(id2label))])
        outputs = {"type": "labels", "labels": labels}

    class OneOutput(torch.nn.Module):
        """A Hugging Face model as tensors in, one named output out (the graph's only output)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return getattr(out, output_name)

    wrapper = OneOutput(model).eval()

    sample, _ = encoder.encode(["a short one", "and a somewhat longer second example"])
    args = tuple(torch.from_numpy(sample[n]) for n in TEXT_INPUTS)
    path = work / "fp32.onnx"
    axes = {n: {0: "batch", 1: "sequence"} for n in TEXT_INPUTS}
    axes[output_name] = {0: "batch"} if output_name == "logits" else {0: "batch", 1: "sequence"}
    _torch_export(wrapper, args, path, TEXT_INPUTS, [output_name], axes)

    with torch.inference_mode():
        reference = _text_reference(
            spec.task, encoder, texts, lambda feeds: wrapper(*(torch.from_numpy(feeds[n]) for n in TEXT_INPUTS)).numpy()
        )
    return Exported(
        onnx_path=path,
        inputs={"type": "text", "tokenizer": "tokenizer.json", "max_sequence_length": max_length},
        outputs=outputs,
        eval_inputs=texts,
        reference=reference,
        extra_files={"tokenizer.json": tokenizer},
        description=evalsets.TEXT_SET_DESCRIPTION.format(count=len(texts)),
    )


def _export_recipe(spec: ModelSpec, work: Path) -> Exported:
    import torch

    from ..recipes import get_recipe

    recipe = get_recipe(spec.source.recipe)
    data = recipe.load_data()
    model = recipe.train(data)
    path = work / "fp32.onnx"
    sample = torch.zeros((2, 8, 8), dtype=torch.float32)
    flat = torch.nn.Sequential(*list(model.children())[1:]).eval()  # the graph takes (batch, 64)
    _torch_export(flat, (sample.reshape(2, 64),), path, ["pixels"], ["logits"], {"pixels": {0: "batch"}, "logits": {0: "batch"}})
    from maas_runtime.tasks import softmax

    with torch.inference_mode():
        logits = model(torch.tensor(data.x_test / recipe.PIXEL_MAX, dtype=torch.float32)).numpy()
    return Exported(
        onnx_path=path,
        inputs={"type": "image", "shape": [8, 8], "min": 0, "max": recipe.PIXEL_MAX, "scale": 1.0 / recipe.PIXEL_MAX},
        outputs={"type": "labels", "labels": list(spec.labels or recipe.LABELS)},
        eval_inputs=[img.tolist() for img in data.x_test],
        reference=softmax(logits),
        eval_labels=np.asarray(data.y_test),
        description=f"trained by recipe {spec.source.recipe!r} (seed {recipe.SEED}, {len(data.x_train)} train / {len(data.x_test)} held-out test images)",
    )


def _export_onnx(spec: ModelSpec, file: Path, root: Path, work: Path) -> Exported:
    """A user's own .onnx: the file itself is the fp32 original."""
    import onnxruntime as ort

    if spec.task not in ("embedding", "text-classification"):
        raise ExportError(f"{spec.name}: an .onnx source is supported for text models only")
    if not file.is_file():
        raise ExportError(f"{spec.name}: source file {file} not found")
    tokenizer = Path(spec.source.tokenizer)
    tokenizer = tokenizer if tokenizer.is_absolute() else root / tokenizer
    if not tokenizer.is_file():
        raise ExportError(f"{spec.name}: tokenizer {tokenizer} not found")
    path = work / "fp32.onnx"
    shutil.copyfile(file, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if not set(names) <= set(TEXT_INPUTS):
        raise ExportError(f"{spec.name}: graph inputs {names} are not a subset of {TEXT_INPUTS}")
    encoder = _text_encoder(tokenizer, spec.serving.max_sequence_length)
    texts = evalsets.embedding_texts()
    reference = _text_reference(spec.task, encoder, texts, lambda feeds: session.run(None, {n: feeds[n] for n in names})[0])
    if spec.task == "embedding":
        outputs = {"type": "embedding", "dimensions": int(reference.shape[1]), "pooling": "mean", "normalize": True}
    else:
        if not spec.labels:
            raise ExportError(f"{spec.name}: a classifier brought as .onnx needs `labels` in the manifest")
        outputs = {"type": "labels", "labels": list(spec.labels)}
    return Exported(
        onnx_path=path,
        inputs={"type": "text", "tokenizer": "tokenizer.json", "max_sequence_length": spec.serving.max_sequence_length},
        outputs=outputs,
        eval_inputs=texts,
        reference=reference,
        extra_files={"tokenizer.json": tokenizer},
        description=evalsets.TEXT_SET_DESCRIPTION.format(count=len(texts)),
    )


def export(spec: ModelSpec, root: Path, work: Path) -> Exported:
    if spec.source.type == "recipe":
        return _export_recipe(spec, work)
    location = spec.source.resolve(root)
    if spec.source.type == "huggingface":
        if not location.is_dir():
            raise ExportError(f"{spec.name}: source folder {location} not found")
        return _export_huggingface(spec, location, work)
    return _export_onnx(spec, location, root, work)
