"""Segment, pose and OBB models: the generated data, pruning with the task heads' fixed outputs kept, distillation,
export. One tiny data set and one random-weight checkpoint per task (mechanics, not accuracy)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flat_outputs

from yolo_compress import CompressError, PruneModel
from yolo_compress.checkpoint import load_model, save_checkpoint
from yolo_compress.cli import main
from yolo_compress.dataset import resolve_data
from yolo_compress.models import build_from_yaml, gflops, head_inner_convs
from yolo_compress.prune import PruneSettings, prune_model
from yolo_compress.prune.settings import HEAD_KEPT_WHOLE

IMGSZ = 64
TASKS = {"segment": "yolov8n-seg", "pose": "yolov8n-pose", "obb": "yolov8n-obb"}


@pytest.fixture(scope="session")
def task_yaml(tmp_path_factory) -> dict[str, Path]:
    from yolo_compress.data.tasks import make_task_dataset

    root = tmp_path_factory.mktemp("tasks")
    return {task: make_task_dataset(task, root / task, n_train=8, n_val=4, imgsz=IMGSZ) for task in TASKS}


@pytest.fixture(scope="session")
def task_pt(task_yaml, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("task_models")
    return {task: save_checkpoint(build_from_yaml(f"{name}.yaml", resolve_data(task_yaml[task], task)),
                                  folder / f"{name}.pt") for task, name in TASKS.items()}


# ---- data ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(TASKS))
def test_generated_data_passes_ultralytics_checks_and_is_deterministic(task, task_yaml, tmp_path):
    from yolo_compress.data.tasks import make_task_dataset
    from yolo_compress.patches.datasets import label_files, read_det_yaml, verify_labels

    data = resolve_data(task_yaml[task], task)
    spec = read_det_yaml(task_yaml[task])  # Ultralytics' check_det_dataset
    images = sorted((task_yaml[task].parent / "images" / "train").glob("*.png"))
    results = verify_labels(images, spec, keypoints=task == "pose")  # Ultralytics' verify_image_label
    assert all(kept and not message for kept, message in results)
    again = make_task_dataset(task, tmp_path / task, n_train=8, n_val=4, imgsz=IMGSZ)
    first, second = label_files(images), label_files(sorted((again.parent / "images" / "train").glob("*.png")))
    assert [a.read_text() for a in first] == [b.read_text() for b in second]
    rows = [np.array(line.split(), float) for f in first for line in f.read_text().splitlines()]
    assert rows and data.task == task
    if task == "pose":
        assert data.kpt_shape == (4, 3) and all(len(r) == 5 + 12 for r in rows)
        triangles = [r for r in rows if r[0] == 1]
        assert triangles and all(r[5 + 3 + 2] == 0 for r in triangles)  # the missing corner is labelled unseen
    if task == "obb":
        for r in rows:
            p = r[1:].reshape(4, 2)
            assert abs(np.dot(p[1] - p[0], p[2] - p[1])) < 1e-3  # corners of a rotated rectangle


def test_a_pose_yaml_without_kpt_shape_is_refused(task_yaml, tmp_path):
    text = task_yaml["pose"].read_text().split("kpt_shape")[0]
    bad = tmp_path / "pose.yaml"
    bad.write_text(text)
    with pytest.raises(CompressError, match="a pose dataset needs 'kpt_shape"):
        resolve_data(bad, "pose")


# ---- pruning ------------------------------------------------------------------------------------------------------
def _fixed_widths(model: torch.nn.Module) -> dict[str, int]:
    """Output widths of the task head's fixed layers: each branch's last conv, and the prototypes."""
    head = model.model[-1]
    out = {f"{name}.{i}": b[-1].out_channels for name in ("cv2", "cv3", "cv4") for i, b in
           enumerate(getattr(head, name, None) or []) if isinstance(b[-1], torch.nn.Conv2d)}
    if hasattr(head, "proto"):
        out["proto"] = [m for m in head.proto.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["yolov8n-seg", "yolov8n-pose", "yolov8n-obb", "yolo26n-seg"])
def test_prune_keeps_the_task_outputs_and_lands_within_2_percent(name, task_yaml):
    task = {"seg": "segment", "pose": "pose", "obb": "obb"}[name.rsplit("-", 1)[1]]
    model = build_from_yaml(f"{name}.yaml", resolve_data(task_yaml[task], task))
    pruned, result = prune_model(model, IMGSZ, PruneSettings(speed_up=2.0))
    assert 0.99 * 2.0 <= result.speed_up <= 1.02 * 2.0, result.speed_up  # at most 1% under (see pruner), 2% over
    assert math.isclose(gflops(model, IMGSZ) / gflops(pruned, IMGSZ), result.speed_up, rel_tol=1e-6)
    assert _fixed_widths(pruned) == _fixed_widths(model)
    head_widths = [[c.out_channels for c in head_inner_convs(m)] for m in (model, pruned)]  # kept whole: pose, OBB
    assert (head_widths[0] == head_widths[1]) == (task in HEAD_KEPT_WHOLE), head_widths
    model.eval(), pruned.eval()
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        assert [t.shape for t in flat_outputs(model(x))] == [t.shape for t in flat_outputs(pruned(x))]


# ---- training and export ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def task_pruned(task_pt, task_yaml, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("task_pruned")
    out = {}
    for task, path in task_pt.items():
        pm = PruneModel(path, data=task_yaml[task], imgsz=IMGSZ)
        pm.prune(save_dir=folder / f"{task}.pt", speed_up=2.0)
        out[task] = folder / f"{task}.pt"
    return out


@pytest.mark.parametrize("task", ["pose", "obb"])  # segment: test_a_segmentation_model_goes_through_the_pipeline
def test_one_epoch_of_distillation_runs_with_finite_losses(task, task_pt, task_pruned, task_yaml, tmp_path):
    pm = PruneModel(task_pruned[task], data=task_yaml[task], imgsz=IMGSZ)
    out = pm.distill(task_pt[task], loss="cwd+kd", save_dir=tmp_path / "d.pt", epochs=1, batch=8, plots=False)
    header, row = (tmp_path / "runs" / "d" / "results.csv").read_text().strip().splitlines()
    losses = {k.strip(): float(v) for k, v in zip(header.split(","), row.split(",")) if "loss" in k}
    assert {"train/cwd_loss", "train/kd_loss"} <= set(losses) and all(math.isfinite(v) for v in losses.values())
    assert losses["train/cwd_loss"] > 0
    metric = {"segment": "mask mAP50-95", "pose": "pose mAP50-95", "obb": "mAP50-95"}[task]
    assert metric in pm.metrics and metric in pm.val()  # the task's own metric, from Ultralytics' validator
    assert sum(p.numel() for p in load_model(out).parameters()) == sum(
        p.numel() for p in load_model(task_pruned[task]).parameters())


@pytest.mark.parametrize("task", list(TASKS))
def test_pruned_model_exports_to_onnx_with_the_same_outputs(task, task_pruned, onnx_and_torch):
    got, want = onnx_and_torch(task_pruned[task], IMGSZ)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() < 1e-3 * max(1.0, np.abs(w).max())


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_static_int8_keeps_the_task_outputs(task, task_pruned, task_yaml, tmp_path):
    """ONNX Runtime INT8 of each task's pruned model: quantized ops, the fp32 export's outputs and shapes."""
    import onnx
    import onnxruntime as ort

    weights = tmp_path / f"{task}.pt"
    weights.write_bytes(task_pruned[task].read_bytes())
    int8 = PruneModel(weights, data=task_yaml[task], imgsz=IMGSZ).quantize(calibration=4)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    sessions = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
                for f in (weights.with_suffix(".onnx"), int8)]
    fp32, q = ([o.shape for o in s.run(None, {"images": x})] for s in sessions)
    assert fp32 == q
    with pytest.raises(CompressError, match=f"use static for a {task} model"):
        PruneModel(weights, data=task_yaml[task], imgsz=IMGSZ).quantize(format="openvino", quantize_mode="accuracy")


def test_a_model_of_an_unsupported_task_is_one_error_line(tmp_path, capsys):
    assert main(["prune", "--weights", "yolo26n-depth.yaml", "--imgsz", "64", "--save", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "builds a depth model; yolo-compress handles detect, segment, pose, obb and" in err[0]


def test_a_segmentation_model_goes_through_the_pipeline(task_yaml, tmp_path):
    """``run`` on a segment model: baseline, prune, one epoch of distillation (logit KD, with the masks' term) from
    the unpruned model, the table with mask mAP."""
    from yolo_compress.config import load_config
    from yolo_compress.pipeline import CompressionPipeline

    cfg = load_config(model="yolov8n-seg.yaml", data=str(task_yaml["segment"]), out=str(tmp_path / "o"),
                      imgsz=IMGSZ, epochs=1, batch=8, kd_mask=True, kd_box_min=0.0)
    result = CompressionPipeline(cfg).run()
    assert result.ran == ["baseline", "prune", "distill", "compare"]
    rows = {r["name"]: r for r in result.rows}
    assert rows["distill"]["gflops"] < 0.55 * rows["baseline"]["gflops"]
    assert {"mAP50_95", "mask_mAP50_95"} <= set(rows["distill"])
    assert "mask_mAP50_95" in (tmp_path / "o" / "compare.csv").read_text().splitlines()[0]
    header, row = (tmp_path / "o" / "runs" / "distill" / "results.csv").read_text().strip().splitlines()[:2]
    losses = {k.strip(): float(v) for k, v in zip(header.split(","), row.split(",")) if "loss" in k}
    assert "train/kd_loss" in losses and all(math.isfinite(v) for v in losses.values())  # one epoch of KD
    assert losses["train/mask_kd_loss"] > 0, losses
