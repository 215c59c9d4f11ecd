"""Shared fixtures: every test runs in its own working folder, so ``runs/`` and ``weights/`` land in tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

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
