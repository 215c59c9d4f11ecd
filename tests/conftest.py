"""Shared fixtures: every test runs in its own working folder, so ``runs/`` and ``weights/`` land in tmp."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_compress.patches import runtime

runtime.apply()  # offline runtime settings before any Ultralytics import


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_yaml(tmp_path_factory) -> Path:
    """16 train / 8 val shapes images at 64 px: enough for mechanics, seconds to train an epoch."""
    from yolo_compress.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("tiny") / "shapes", n_train=16, n_val=8, imgsz=64, seed=0)


@pytest.fixture(scope="session")
def shapes160(tmp_path_factory) -> Path:
    """40 train / 20 val shapes images at 160 px, the shipped baseline's size: its boxes are meaningful there."""
    from yolo_compress.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("ov") / "shapes", n_train=40, n_val=20, imgsz=160, seed=0)


def flat_outputs(out) -> list[torch.Tensor]:
    """The tensors of a model's output, in order (nested tuples and lists flattened; raw-prediction dicts left out)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat_outputs(o)] if isinstance(out, (list, tuple)) else []


@pytest.fixture
def onnx_and_torch(tmp_path) -> Callable[[Path, int], tuple[list[np.ndarray], list[np.ndarray]]]:
    """``f(weights, imgsz)``: ONNX Runtime's outputs of Ultralytics' ONNX export of ``weights`` (a copy in tmp) on a
    fixed random image, and PyTorch's, in the same order."""
    def run(weights: Path, imgsz: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        import onnxruntime as ort
        from ultralytics import YOLO

        src = tmp_path / Path(weights).name
        src.write_bytes(Path(weights).read_bytes())
        onnx = Path(YOLO(str(src)).export(format="onnx", imgsz=imgsz))
        x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})
        model = YOLO(str(src)).model.float().eval()
        with torch.no_grad():
            want = [t.numpy() for t in flat_outputs(model(torch.from_numpy(x)))]
        return got, want[:len(got)]

    return run
