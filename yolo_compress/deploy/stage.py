"""The pipeline's ``export`` and ``quantize`` stages: the final weights (distilled, else fine-tuned, else pruned) to
an ONNX / TorchScript file, and to an INT8 ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.deploy.export import check_format, export, exported_path
from yolo_compress.deploy.quantize import check_quantizable, int8_path, quantize_onnx
from yolo_compress.deploy.settings import ExportSettings, QuantizeSettings
from yolo_compress.stage import Stage


class ExportStage(Stage):
    """Export the final weights with Ultralytics, next to them (``<out>/distill.onnx``)."""

    name = "export"
    settings_cls = ExportSettings

    def _format(self) -> str | None:
        return self.config.settings_of(ExportSettings).export

    def enabled(self) -> bool:
        return self._format() is not None

    def check(self, model: nn.Module) -> None:
        check_format(self._format())

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": done[self.ctx.final]}

    def outputs(self) -> dict[str, Path]:
        return {"file": exported_path(self.ctx.out / f"{self.ctx.final}.pt", self._format())}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        export(sources["weights"], self._format(), self.ctx.imgsz)
        return {}


class QuantizeStage(Stage):
    """INT8 ONNX model of the final weights (``<out>/distill-int8.onnx``); exports the fp32 ONNX first unless the
    export stage does."""

    name = "quantize"
    settings_cls = QuantizeSettings

    def enabled(self) -> bool:
        return self.config.settings_of(QuantizeSettings).quantize is not None

    def check(self, model: nn.Module) -> None:
        check_quantizable()

    def _onnx(self) -> Path:
        return self.ctx.out / f"{self.ctx.final}.onnx"

    def _exported_by_export_stage(self) -> bool:
        return self.config.settings_of(ExportSettings).export == "onnx"

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        files = {"weights": done[self.ctx.final]}
        if self._exported_by_export_stage():
            files["onnx"] = self._onnx()
        return files

    def outputs(self) -> dict[str, Path]:
        files = {} if self._exported_by_export_stage() else {"onnx": self._onnx()}
        return {**files, "int8": int8_path(self._onnx())}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        s = self.config.settings_of(QuantizeSettings)
        onnx = sources.get("onnx") or export(sources["weights"], "onnx", self.ctx.imgsz)
        quantize_onnx(Path(onnx), self.ctx.data, self.ctx.imgsz, s.quantize_mode, s.calibration, s.float_head)
        return {}
