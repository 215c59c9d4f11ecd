"""Quantization-aware distillation: INT8 that trains to recover what post-training quantization loses.

The fp32 weights are fused (BatchNorm folded into the convolutions, as every export does), NNCF inserts fake
quantizers calibrated as in the post-training path (:mod:`.openvino`: train images only, the head's decoding in
float; the ``PERFORMANCE`` preset, symmetric activations, the one ``benchmarks/qat.py`` measured), and the
fake-quantized network trains a few epochs with the fp32 weights as its teacher (the distillation trainer's logit
KD, :mod:`yolo_compress.patches.distill`). The quantizers' ranges train with the weights (straight-through
gradients). OpenVINO then converts the fake quantizers into INT8 ops: the same IR layout as
``quantize_openvino``'s, loadable by ``YOLO(folder)``; or the quantizers are exported as ONNX QDQ pairs for ONNX
Runtime (``*-int8.onnx``, as ``quantize_onnx`` writes).

The NNCF graph of the fused model names its ops by function and call order (``conv/conv2d/5``), not by module,
so the head's decoding is found by the graph's structure: every op downstream of the last layer's branch
convolutions (``cv2``, ``cv3``; a classifier's ``conv``) that feeds none of them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.dataset import Dataset
from yolo_compress.deploy.settings import QuantizeSettings
from yolo_compress.distill.settings import DistillSettings
from yolo_compress.distill.teacher import Teacher
from yolo_compress.errors import CompressError
from yolo_compress.models import HEAD_CONV_BRANCHES

LOGGER = logging.getLogger(__name__)
QAT_ARGS = {"optimizer": "AdamW", "warmup_epochs": 0, "plots": False}  # a short run from converged weights


def qat_path(weights: Path) -> Path:
    """The fake-quantized checkpoint of ``weights``: ``distill.pt`` -> ``distill-qat.pt`` (its run folder
    ``runs/distill-qat``)."""
    return weights.with_name(f"{weights.stem}-qat.pt")


def _last_layer(model: nn.Module) -> str:
    return f"model.{len(model.model) - 1}"


def float_ops(graph: Any, head: str | None, float_layers: tuple[str, ...] = ()) -> list[str]:
    """Names of the ops of an NNCF graph that stay in float: the decoding after ``head``'s branch convolutions
    (``None``: none), and the convolutions of ``float_layers`` (``model.3`` covers ``model.3.cv1.conv``)."""
    consts = [n for n in graph.get_all_nodes() if n.node_type == "nncf_model_const"]

    def convs_of(prefixes: tuple[str, ...]) -> set[Any]:
        return {c for n in consts if any(n.node_name.startswith(p + ".") for p in prefixes)
                for c in graph.get_next_nodes(n) if c.node_type.startswith("conv")}

    def reach(start: set[Any], step: Any) -> set[Any]:
        seen, todo = set(), list(start)
        while todo:
            for nxt in step(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    names = {n.node_name for n in convs_of(float_layers)}
    if head is not None:
        branch = convs_of(tuple(f"{head}.{b}" for b in HEAD_CONV_BRANCHES))
        decode = reach(branch, graph.get_next_nodes) - branch - reach(branch, graph.get_previous_nodes)
        names |= {n.node_name for n in decode if not n.node_type.startswith("nncf_model_")}
    return sorted(names)


def fake_quantize(model: nn.Module, data: Dataset, imgsz: int, calibration: int = 300,
                  float_layers: tuple[str, ...] = ()) -> nn.Module:
    """A fused copy of ``model`` with NNCF fake quantizers, their ranges calibrated on train images; it trains
    with the usual Ultralytics losses and predicts in PyTorch (slowly: the rounding is simulated).

    Raises:
        CompressError: no train images to calibrate on.
    """
    import copy

    import nncf
    import torch
    from nncf.torch.function_hook import wrap_model
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    from yolo_compress.deploy.calibration import calibration_images, preprocess
    from yolo_compress.patches.quantizers import make_quantizers_picklable, use_loss_forward

    make_quantizers_picklable()
    images = calibration_images(data, calibration)
    if not images:
        raise CompressError(f"no train images in {data.path} to calibrate INT8 on")
    fused = copy.deepcopy(model).float().eval().fuse()
    head = fused.model[-1]
    head.export, head.format = True, "openvino"  # one output tensor, as exported
    example = torch.zeros(1, 3, imgsz, imgsz)
    scope = float_ops(build_nncf_graph(wrap_model(copy.deepcopy(fused)), example), _last_layer(fused), float_layers)
    calib = nncf.Dataset([torch.from_numpy(preprocess(p, imgsz, data.task)) for p in images])
    quantized = nncf.quantize(fused, calib, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(images),
                              ignored_scope=nncf.IgnoredScope(names=scope, validate=False))
    quantized.model[-1].export = False  # traced as exported; trains and validates as Ultralytics expects
    use_loss_forward(quantized)
    LOGGER.info("fake-quantized for QAT: calibrated on %d train images; %d ops kept in float", len(images),
                len(scope))
    return quantized


def save_openvino(model: nn.Module, fp32_folder: Path, imgsz: int) -> Path:
    """Convert a fake-quantized model to the INT8 OpenVINO folder next to its fp32 export (atomically), with the
    export's graph name and ``metadata.yaml``, so that ``YOLO(folder)`` validates and predicts; returns the folder."""
    import openvino as ov
    import torch

    from yolo_compress.deploy.openvino import save_int8_beside

    model = model.float().eval()
    head = model.model[-1]
    head.export, head.format = True, "openvino"
    example = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        model(example)  # the head caches its anchors: the traced graph then holds them as constants
        converted = ov.convert_model(model, example_input=example, input=[tuple(example.shape)])
    return save_int8_beside(converted, fp32_folder)


def save_onnx(model: nn.Module, fp32_onnx: Path, imgsz: int) -> Path:
    """Export a fake-quantized model as a QDQ ONNX model for ONNX Runtime next to its fp32 export
    (``distill-int8.onnx``, atomically), with the fp32 export's Ultralytics metadata; returns its path.

    NNCF's quantizers export as ``QuantizeLinear``/``DequantizeLinear`` pairs in their ONNX export mode (their default
    mode writes OpenVINO's ``FakeQuantize`` op, which ONNX Runtime lacks).
    """
    import torch
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import QuantizerExportMode

    from yolo_compress.checkpoint import atomic_write_bytes
    from yolo_compress.deploy.export import copy_metadata, int8_path

    model = model.float().eval()
    head = model.model[-1]
    head.export, head.format = True, "onnx"
    for _, quantizer in get_hook_storage(model).named_hooks():
        quantizer.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    out = int8_path(fp32_onnx)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        with torch.no_grad():
            torch.onnx.export(model, torch.zeros(1, 3, imgsz, imgsz), str(staged), opset_version=17, dynamo=False,
                              input_names=["images"], output_names=["output0"])
        copy_metadata(fp32_onnx, staged)
        atomic_write_bytes(out, staged.read_bytes())
    return out


def quantize_aware_distill(weights: Path, fp32: Path, data: Dataset, imgsz: int, s: QuantizeSettings,
                           train: dict[str, Any], resume: bool = False) -> Path:
    """INT8 model of ``weights`` by quantization-aware distillation, for the runtime of its fp32 export ``fp32``
    (an OpenVINO folder: ``*_int8_openvino_model/``; an ONNX file: ``*-int8.onnx`` in QDQ form); returns its path.

    Args:
        weights: the fp32 ``.pt``: the student's start and its teacher.
        fp32: its fp32 export (graph name and metadata).
        s: calibration, float layers, ``qat_epochs`` and ``qat_lr`` (AdamW, no warm-up, no mosaic).
        train: other Ultralytics train arguments (``batch``, ``device``, ``seed``, ...).
        resume: continue an interrupted run (the run folder of :func:`qat_path`).

    The teacher is the fp32 model itself (not the run's teacher), with the task's default distillation (logit KD).

    The last epoch's weights are kept, not the best on val: the val split scores the result.
    """
    from yolo_compress.checkpoint import load_model
    from yolo_compress.distill.stage import distill
    from yolo_compress.training import train_args

    out = qat_path(weights)
    student = fake_quantize(load_model(weights), data, imgsz, s.calibration, s.layers())
    args = {**train, **QAT_ARGS, "epochs": s.qat_epochs, "lr0": s.qat_lr, "close_mosaic": s.qat_epochs}
    teacher = Teacher.checked(weights, data.task, data.nc, DistillSettings(), imgsz)
    trained = distill(student, teacher, data, out, train_args(args, data, imgsz, out), resume=resume,
                      take="last").model
    if fp32.suffix == ".onnx":
        return save_onnx(trained, fp32, imgsz)
    return save_openvino(trained, fp32, imgsz)
