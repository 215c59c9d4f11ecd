"""The pipeline's ``export`` and ``quantize`` stages: the final weights (distilled, else fine-tuned, else pruned) to
an ONNX / TorchScript file or an OpenVINO folder, and to an INT8 model for ONNX Runtime or OpenVINO."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.deploy.export import check_format, export, exported_path
from yolo_compress.deploy.qat import qat_path
from yolo_compress.deploy.quantize import check_quantizable, int8_output, quantize_weights
from yolo_compress.deploy.settings import FORMATS, QUANTIZE_FORMATS, ExportSettings, QuantizeSettings
from yolo_compress.stage import Command, PipelineConfig, Stage


class ExportStage(Stage):
    """Export the final weights with Ultralytics, next to them (``<out>/distill.onnx``)."""

    name = "export"
    settings_cls = ExportSettings
    command = Command("export", "export a checkpoint next to it", "export")

    @classmethod
    def add_command_arguments(cls, parser: ArgumentParser) -> None:
        """``--format`` (the pipeline's ``export`` key, which may be off, names the same choice)."""
        parser.add_argument("--format", default="onnx", choices=FORMATS)

    def _format(self) -> str | None:
        return self.config.settings_of(ExportSettings).export

    @classmethod
    def enabled(cls, config: PipelineConfig) -> bool:
        return config.settings_of(ExportSettings).export is not None

    def check(self, model: nn.Module) -> None:
        check_format(self._format())

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": done[self.ctx.plan.final]}

    def outputs(self) -> dict[str, Path]:
        return {"file": exported_path(self.ctx.out / f"{self.ctx.plan.final}.pt", self._format())}

    def models(self) -> dict[str, Path]:
        """The exported file, a row of its own in the report (``distill.onnx``); the report runs no TorchScript."""
        file = self.outputs()["file"]
        return {file.name: file} if self._format() != "torchscript" else {}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        export(sources["weights"], self._format(), self.ctx.imgsz)
        return {}


class QuantizeStage(Stage):
    """INT8 model of the final weights for the export's runtime: ``<out>/distill-int8.onnx`` (ONNX Runtime), or
    ``<out>/distill_int8_openvino_model/`` with ``--export openvino``; the fp32 export is made first unless the
    export stage makes it. ``quantize_mode: qat`` also writes the fake-quantized ``<out>/distill-qat.pt`` (its
    run folder ``runs/distill-qat``; an interrupted run resumes)."""

    name = "quantize"
    settings_cls = QuantizeSettings
    command = Command("quantize", "INT8 model of a checkpoint for ONNX Runtime or OpenVINO (exported first when "
                      "needed)", "quantize")

    @classmethod
    def add_command_arguments(cls, parser: ArgumentParser) -> None:
        """The runtime's ``--format``, the quantization settings, and qat mode's training flags."""
        parser.add_argument("--format", default="onnx", help=f"the runtime's format: {' or '.join(QUANTIZE_FORMATS)}")
        QuantizeSettings.add_arguments(parser, only=[k for k in QuantizeSettings.field_names() if k != "quantize"])
        parser.add_argument("--batch", type=int, help="qat mode: training batch")
        parser.add_argument("--device", help="qat mode: cpu, 0, 0,1 ... (default: Ultralytics' choice)")
        parser.add_argument("--resume", action="store_true", help="qat mode: continue the interrupted run")
        parser.add_argument("extra", nargs="*", metavar="key=value", help="qat mode: more Ultralytics train settings")

    @classmethod
    def enabled(cls, config: PipelineConfig) -> bool:
        return config.settings_of(QuantizeSettings).quantize is not None

    def _format(self) -> str:
        return "openvino" if self.config.settings_of(ExportSettings).export == "openvino" else "onnx"

    def _weights(self) -> Path:
        return self.ctx.out / f"{self.ctx.plan.final}.pt"

    def check(self, model: nn.Module) -> None:
        s = self.config.settings_of(QuantizeSettings)
        check_quantizable(self._format(), s.quantize_mode, self.ctx.data.task, s.float_head)

    def _exported_by_export_stage(self) -> bool:
        return self.config.settings_of(ExportSettings).export == self._format()

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        files = {"weights": done[self.ctx.plan.final]}
        if self._exported_by_export_stage():
            files["fp32"] = exported_path(self._weights(), self._format())
        return files

    def outputs(self) -> dict[str, Path]:
        files = {} if self._exported_by_export_stage() else {"fp32": exported_path(self._weights(), self._format())}
        if self.config.settings_of(QuantizeSettings).quantize_mode == "qat":
            files["qat"] = qat_path(self._weights())
        return {**files, "int8": int8_output(self._weights(), self._format())}

    def models(self) -> dict[str, Path]:
        """The INT8 model and the fp32 export it made, rows of their own (``distill-int8.onnx``, ``distill.onnx``)."""
        outputs = self.outputs()
        return {outputs[role].name: outputs[role] for role in ("fp32", "int8") if role in outputs}

    def fingerprint(self) -> dict[str, Any]:
        """The quantization's settings; in ``qat`` mode also what shapes its training (batch, device, train_args)."""
        own = super().fingerprint()
        if own.get("quantize_mode") != "qat":
            return own
        return {**own, **self._train()}

    def _train(self) -> dict[str, Any]:
        run = self.config.run
        return {**self.config.train_args, "batch": run.batch, **({"device": run.device} if run.device else {})}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        s = self.config.settings_of(QuantizeSettings)
        quantize_weights(Path(sources["weights"]), self._format(), self.ctx.data, self.ctx.imgsz, s,
                         train=self._train(), resume=resume)
        return {}
