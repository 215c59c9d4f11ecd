"""GFLOPs while pruning: Ultralytics' count where a decision is taken, a cheap estimate in between.

Ultralytics' counter (thop) runs the model on several proxy images per call, four for a model with attention, and
pruning to a target called it after every cut near the target (YOLO11n at 640 px: 38 counts a prune, most of its
time). Pruning changes widths only, so a layer's multiply-adds are its weight's size times an area that stays fixed
for the whole prune. Scaling the last exact count by the ratio of these sums tracks it closely: the estimate says
"not there yet" while it is clearly below the target, and every count that can end the search is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from yolo_compress.models import gflops

WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
MARGIN = 0.002  # an estimate this close below the target is counted exactly (estimates ran up to 0.02% high)


def _areas(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """Per conv / linear layer (by name): how many times one forward of ``inputs`` in eval mode, as Ultralytics
    counts, applies its weight (summed over calls: a head may run a layer for each of its branches)."""
    areas: dict[str, int] = {}

    def hook(name: str):
        def record(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if isinstance(m, nn.Linear):
                area = out.numel() // m.out_features
            else:  # a transposed conv applies its weight once per input pixel
                area = (args[0] if isinstance(m, nn.ConvTranspose2d) else out)[0, 0].numel()
            areas[name] = areas.get(name, 0) + area
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, WEIGHTED)]
    training = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            model.eval()(inputs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in training.items():
            m.training = mode
    return areas


class FlopsCounter:
    """GFLOPs of a model through a prune, and of copies of it (layers are found by name)."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, imgsz: int, flops: float) -> None:
        """``flops``: Ultralytics' count of ``model`` as it is now, the reference of the first estimates; the areas
        are taken at ``imgsz`` itself (a classifier's linear layer does not grow with the image, its convs do)."""
        self.imgsz = imgsz
        self.areas = _areas(model, inputs.new_zeros(*inputs.shape[:2], imgsz, imgsz))
        self._names = {m: n for n, m in model.named_modules() if n in self.areas}
        self._model = model  # its layers are pruned in place: looked up once, not by name at every estimate
        self._ref = (flops, self._weighted(model))  # the last exact count and the weighted size it was taken at

    def _weighted(self, model: nn.Module) -> int:
        if model is self._model:
            return sum(m.weight.numel() * self.areas[n] for m, n in self._names.items())
        return sum(m.weight.numel() * self.areas[n] for n, m in model.named_modules() if n in self.areas)

    def estimate(self, model: nn.Module) -> float:
        """The last exact count scaled by the change of the weighted layer sizes since, for a model pruned further
        than at that count: 0.3% low to 0.02% high on the detectors and task models, up to 6% low on YOLO11n-cls
        (its pooled tail), at 64 and 640 px."""
        return self._ref[0] * self._weighted(model) / self._ref[1]

    def estimate_cut(self, model: nn.Module, cuts: list[tuple[nn.Module, bool, int]], share: float = 1.0) -> float:
        """The estimate for ``model`` once ``share`` of a cut is made: ``cuts`` lists (layer, out channels?, count)
        for the layers of one Torch-Pruning group, not yet pruned; each loses that share of its pruned dimension
        (both of a depthwise conv, whose weight has one)."""
        kept: dict[nn.Module, list[float]] = {}
        for layer, out, count in cuts:
            if layer not in self._names:
                continue
            dims = (getattr(layer, "out_channels", None) or layer.out_features,
                    getattr(layer, "in_channels", None) or layer.in_features)
            left = kept.setdefault(layer, [1.0, 1.0])
            left[not out] = min(left[not out], 1 - share * count / dims[not out])
        removed = 0.0
        for layer, (out, inp) in kept.items():
            depthwise = getattr(layer, "groups", 1) > 1 and layer.groups == layer.out_channels
            left = min(out, inp) if depthwise else out * inp
            removed += (1 - left) * layer.weight.numel() * self.areas[self._names[layer]]
        return self._ref[0] * (self._weighted(model) - removed) / self._ref[1]

    def exact(self, model: nn.Module) -> float:
        """Ultralytics' count (:func:`yolo_compress.models.gflops`), the reference of later estimates; the reference
        itself when the model has not been cut since (a prune only ever narrows layers)."""
        weighted = self._weighted(model)
        if weighted != self._ref[1]:
            self._ref = (gflops(model, self.imgsz), weighted)
        return self._ref[0]

    def reached(self, model: nn.Module, gflops_before: float, target: float) -> tuple[bool, float]:
        """Whether ``model`` is ``target`` times below ``gflops_before``, and its GFLOPs: the estimate while it says
        a clear no, the exact count from :data:`MARGIN` below the target on."""
        flops = self.estimate(model)
        if gflops_before / flops < target * (1 - MARGIN):
            return False, flops
        flops = self.exact(model)
        return gflops_before / flops >= target, flops
