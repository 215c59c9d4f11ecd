"""The parts of distillation this project adds, under real ``torch.distributed`` (gloo, 2 CPU processes).

Ultralytics' DDP launcher needs CUDA devices, but what yolo-compress adds can run under DDP on CPU: settings rebuilt
from ``vars(args)`` in each process, a DDP-wrapped student whose hooked layers record through the wrapper, and the
connectors outside DDP whose gradients ``FeatureDistillation.before_optimizer_step`` averages over ranks. After a
few steps both ranks must hold identical student and connector weights, equal to a single process that sees the
concatenated batch. BatchNorm runs in eval mode so a sample's loss does not depend on the rest of its batch.
"""

from __future__ import annotations

import copy
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

STEPS, IMGSZ, PER_RANK = 3, 64, 2
# CWD averages over images, so two halves average to the whole batch (logit KD normalises by the teacher's score
# mass of the batch it sees, which halves do not add up to)
ARGS = {"loss": "cwd", "distill_layers": [15, 18, 21], "cwd_tau": 2.0, "distill_warmup": 0.0}


def _models():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    teacher = DetectionModel("yolov8s.yaml", nc=3, verbose=False)
    return student, teacher


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(2 * PER_RANK, 3, IMGSZ, IMGSZ, generator=g) for _ in range(STEPS)]


def _train(student, teacher, batches, ddp: bool, world: int, rank: int) -> dict[str, torch.Tensor]:
    """A few steps of distillation-only training; ``ddp`` wraps the student and averages connector gradients."""
    import yolo_compress  # noqa: F401  (offline settings)
    from yolo_compress.distill import Distiller, DistillSettings
    from yolo_compress.patches.distill import FeatureDistillation

    settings = DistillSettings.from_args(SimpleNamespace(**ARGS))  # as a DDP worker rebuilds them from vars(args)
    distiller = Distiller(student, teacher, settings)
    student.eval(), distiller.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    model = DistributedDataParallel(student, find_unused_parameters=True) if ddp else student  # the head is unused
    params = [*student.parameters(), *distiller.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05)
    # the real override averages the connectors' gradients over ranks; it reads only these attributes
    step_hook = SimpleNamespace(distiller=distiller, trainer=SimpleNamespace(world_size=world if ddp else 1))
    with distiller:
        for img in batches:
            x = img[rank * PER_RANK:(rank + 1) * PER_RANK] if ddp else img
            preds = model(x)
            losses = distiller(x, preds)
            # DDP needs every forward output in the loss: the head's output enters with weight 0
            (sum(losses.values()) + 0 * preds[0].sum()).backward()
            FeatureDistillation.before_optimizer_step(step_hook)
            optimizer.step()
            optimizer.zero_grad()
    return {**{f"s.{k}": v.detach().clone() for k, v in student.state_dict().items()},
            **{f"c.{k}": v.detach().clone() for k, v in distiller.state_dict().items()}}


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        student, teacher = _models()
        state = _train(student, teacher, _batches(), ddp=True, world=world, rank=rank)
        queue.put((rank, {k: v.numpy() for k, v in state.items()}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_whole_batch():
    if not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    a, b = results[0], results[1]
    assert a.keys() == b.keys() and any(k.startswith("c.") and "align" in k for k in a)
    for k in a:
        assert (a[k] == b[k]).all(), f"ranks differ in {k}"

    student, teacher = _models()
    start = {f"s.{k}": v.clone() for k, v in student.state_dict().items()}
    single = _train(copy.deepcopy(student), teacher, _batches(), ddp=False, world=1, rank=0)
    for k, v in single.items():
        torch.testing.assert_close(torch.from_numpy(a[k]), v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    assert any(not torch.equal(single[k], start[k]) for k in start)  # the steps really moved the student
