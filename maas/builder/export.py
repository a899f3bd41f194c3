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

from maas_runtime.card import InputSpec, OutputSpec

from ..manifest import ModelSpec
from . import evalsets
from .optimize import bert_config
from .quantize import uses_fused_graph
from .tasks import BuildTask, build_task

TOKENIZER_FILE = "tokenizer.json"

OPSET = 17
TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class ExportError(RuntimeError):
    pass


@dataclass
class Exported:
    onnx_path: Path
    inputs: InputSpec  # the card's inputs
    outputs: OutputSpec  # the card's outputs
    eval_inputs: list  # what parity feeds, as a request would send it
    reference: np.ndarray  # the fp32 original's outputs on eval_inputs, post-processed as served
    eval_labels: np.ndarray | None = None  # ground truth, where the data has it
    extra_files: dict[str, Path] = field(default_factory=dict)  # shipped beside model.onnx
    train_inputs: np.ndarray | None = None  # training rows in request units, where the source has them (explanations' background)
    description: str = ""
    reference_kind: str = "fp32 PyTorch original"
    attention_export: Path | None = None
    """The same model exported with eager attention, whose pattern ONNX Runtime fuses into its
    attention kernel (the default SDPA export traces to a graph it cannot fuse); None where the
    fusions do not apply to the source."""


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


def _text_inputs(spec: ModelSpec) -> InputSpec:
    return InputSpec(type="text", tokenizer=TOKENIZER_FILE, max_sequence_length=spec.serving.max_sequence_length)


def _text_reference(task: BuildTask, encoder, texts: list[str], run) -> np.ndarray:
    """The fp32 original's outputs, fed exactly the tokens the served model will see.

    `run(feeds)` is the original's forward pass; the task's post-processing is the runtime's
    own, so only the model differs between reference and served output.
    """
    rows = []
    for start in range(0, len(texts), 16):
        feeds, _ = encoder.encode(texts[start : start + 16])
        rows.append(task.reference(run(feeds), feeds))
    return np.concatenate(rows)


def _export_huggingface(spec: ModelSpec, task: BuildTask, folder: Path, work: Path) -> Exported:
    import torch
    import transformers

    from maas_runtime.tokenization import TextEncoder

    tokenizer = folder / TOKENIZER_FILE
    if not (folder / "config.json").is_file() or not tokenizer.is_file():
        raise ExportError(f"{spec.name}: {folder} needs config.json and {TOKENIZER_FILE}")
    if task.hf_auto_class is None or task.inputs != "text":
        raise ExportError(f"{spec.name}: a Hugging Face source is supported for text tasks only, not {task.name}")
    encoder = TextEncoder(tokenizer, spec.serving.max_sequence_length)
    texts = evalsets.embedding_texts()
    model = getattr(transformers, task.hf_auto_class).from_pretrained(str(folder)).eval()
    output_name = task.output_name

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
    axes[output_name] = task.output_axes
    _torch_export(wrapper, args, path, TEXT_INPUTS, [output_name], axes)
    attention_export = None
    if bert_config(folder) is not None and uses_fused_graph(spec.optimization.quantization):
        attention = model.config._attn_implementation
        model.set_attn_implementation("eager")
        attention_export = work / "fp32-eager-attention.onnx"
        _torch_export(wrapper, args, attention_export, TEXT_INPUTS, [output_name], axes)
        model.set_attn_implementation(attention)  # the reference stays the model as it ships

    with torch.inference_mode():
        reference = _text_reference(
            task, encoder, texts, lambda feeds: wrapper(*(torch.from_numpy(feeds[n]) for n in TEXT_INPUTS)).numpy()
        )
    return Exported(
        onnx_path=path,
        inputs=_text_inputs(spec),
        outputs=task.card_outputs(spec, config=model.config),
        eval_inputs=texts,
        reference=reference,
        extra_files={TOKENIZER_FILE: tokenizer},
        description=evalsets.TEXT_SET_DESCRIPTION.format(count=len(texts)),
        attention_export=attention_export,
    )


def _export_recipe(spec: ModelSpec, task: BuildTask, work: Path) -> Exported:
    import torch

    from ..recipes import get_recipe

    recipe = get_recipe(spec.source.recipe)
    if recipe.TASK != task.name:
        raise ExportError(f"{spec.name}: recipe {spec.source.recipe!r} trains a {recipe.TASK} model, not {task.name}")
    data = recipe.load_data()
    model = recipe.train(data)
    path = work / "fp32.onnx"
    sample = torch.zeros((2, 8, 8), dtype=torch.float32)
    flat = torch.nn.Sequential(*list(model.children())[1:]).eval()  # the graph takes (batch, 64)
    _torch_export(flat, (sample.reshape(2, 64),), path, ["pixels"], [task.output_name], {"pixels": {0: "batch"}, task.output_name: task.output_axes})

    with torch.inference_mode():
        logits = model(torch.tensor(data.x_test / recipe.PIXEL_MAX, dtype=torch.float32)).numpy()
    return Exported(
        onnx_path=path,
        inputs=InputSpec(type="image", shape=(8, 8), min=0, max=recipe.PIXEL_MAX, scale=1.0 / recipe.PIXEL_MAX),
        outputs=task.card_outputs(spec, labels=recipe.LABELS),
        eval_inputs=[img.tolist() for img in data.x_test],
        reference=task.reference(logits, {}),
        eval_labels=np.asarray(data.y_test),
        train_inputs=np.asarray(data.x_train).reshape(len(data.x_train), -1),
        description=f"trained by recipe {spec.source.recipe!r} (seed {recipe.SEED}, {len(data.x_train)} train / {len(data.x_test)} held-out test images)",
    )


def _export_onnx(spec: ModelSpec, task: BuildTask, file: Path, root: Path, work: Path) -> Exported:
    """A user's own .onnx: the file itself is the fp32 original."""
    import onnxruntime as ort

    from maas_runtime.tokenization import TextEncoder

    if task.inputs != "text":
        raise ExportError(f"{spec.name}: an .onnx source is supported for text models only")
    if not file.is_file():
        raise ExportError(f"{spec.name}: source file {file} not found")
    tokenizer = spec.source.tokenizer_path(root)
    if not tokenizer.is_file():
        raise ExportError(f"{spec.name}: tokenizer {tokenizer} not found")
    path = work / "fp32.onnx"
    shutil.copyfile(file, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if not set(names) <= set(TEXT_INPUTS):
        raise ExportError(f"{spec.name}: graph inputs {names} are not a subset of {TEXT_INPUTS}")
    encoder = TextEncoder(tokenizer, spec.serving.max_sequence_length)
    texts = evalsets.embedding_texts()
    reference = _text_reference(task, encoder, texts, lambda feeds: session.run(None, {n: feeds[n] for n in names})[0])
    try:
        outputs = task.card_outputs(spec, reference=reference)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    return Exported(
        onnx_path=path,
        inputs=_text_inputs(spec),
        outputs=outputs,
        eval_inputs=texts,
        reference=reference,
        extra_files={TOKENIZER_FILE: tokenizer},
        description=evalsets.TEXT_SET_DESCRIPTION.format(count=len(texts)),
        reference_kind="the supplied fp32 ONNX",
    )


def export(spec: ModelSpec, root: Path, work: Path) -> Exported:
    task = build_task(spec.task)
    if spec.source.type == "recipe":
        return _export_recipe(spec, task, work)
    location = spec.source.resolve(root)
    if spec.source.type == "huggingface":
        if not location.is_dir():
            raise ExportError(f"{spec.name}: source folder {location} not found")
        return _export_huggingface(spec, task, location, work)
    return _export_onnx(spec, task, location, root, work)
