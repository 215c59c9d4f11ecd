"""The pipeline's ``export`` and ``quantize`` stages: the final weights (distilled, else fine-tuned, else pruned) to
an ONNX / TorchScript file, and to an INT8 ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_compress.deploy.export import check_format, export, exported_path
from yolo_compress.deploy.quantize import check_quantizable, int8_path, quantize_onnx
from yolo_compress.stage import Stage

FINAL = ("distill", "finetune", "prune")  # the first of these that runs is the final model


class _FinalStage(Stage):
    def final_stage(self) -> str:
        run = self.ctx.config.run
        on = {"distill": run.distill, "finetune": run.finetune, "prune": True}
        return next(s for s in FINAL if on[s])


class ExportStage(_FinalStage):
    """Export the final weights with Ultralytics, next to them (``<out>/distill.onnx``)."""

    name = "export"

    def enabled(self) -> bool:
        return self.ctx.config.run.export is not None

    def check(self, model: nn.Module) -> None:
        check_format(self.ctx.config.run.export)

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        return {"weights": done[self.final_stage()]}

    def outputs(self) -> dict[str, Path]:
        return {"file": exported_path(self.ctx.out / f"{self.final_stage()}.pt", self.ctx.config.run.export)}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "format": self.ctx.config.run.export}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        export(sources["weights"], self.ctx.config.run.export, self.ctx.imgsz)
        return {}


class QuantizeStage(_FinalStage):
    """INT8 ONNX model of the final weights (``<out>/distill-int8.onnx``); exports the fp32 ONNX first unless the
    export stage does."""

    name = "quantize"

    def enabled(self) -> bool:
        return self.ctx.config.run.quantize is not None

    def check(self, model: nn.Module) -> None:
        check_quantizable()

    def _onnx(self) -> Path:
        return self.ctx.out / f"{self.final_stage()}.onnx"

    def _exported_by_export_stage(self) -> bool:
        return self.ctx.config.run.export == "onnx"

    def sources(self, done: dict[str, Path]) -> dict[str, Path]:
        files = {"weights": done[self.final_stage()]}
        if self._exported_by_export_stage():
            files["onnx"] = self._onnx()
        return files

    def outputs(self) -> dict[str, Path]:
        files = {} if self._exported_by_export_stage() else {"onnx": self._onnx()}
        return {**files, "int8": int8_path(self._onnx())}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "quantize": self.ctx.config.run.quantize,
                **self.ctx.config.quantize_settings.to_dict()}

    def run(self, sources: dict[str, Path], resume: bool) -> dict[str, Any]:
        s = self.ctx.config.quantize_settings
        onnx = sources.get("onnx") or export(sources["weights"], "onnx", self.ctx.imgsz)
        quantize_onnx(Path(onnx), self.ctx.data, self.ctx.imgsz, s.quantize_mode, s.calibration, s.float_head)
        return {}
