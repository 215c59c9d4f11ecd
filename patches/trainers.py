"""``DetectionTrainer`` subclasses that keep the model they are given and carry extra settings in ``args``.

Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG


class ModuleKeepingTrainer(DetectionTrainer):
    """Train the exact module it is handed instead of a fresh ``DetectionModel`` built from ``model.yaml``.

    Replaces ``DetectionTrainer.get_model`` (``ultralytics/models/yolo/detect/train.py``), which rebuilds the
    network from its yaml and copies matching weights: a pruned network would silently grow back to full width
    ("Transferred 125/355 items") and ``resume=True`` would then fail on optimizer shapes.

    Subclasses list the settings they add in ``extra_args`` (name -> default). Ultralytics rejects unknown keys
    in ``get_cfg``, so they are taken out of the overrides before ``BaseTrainer.__init__`` and set on
    ``self.args`` afterwards. They thus travel in ``vars(self.args)``: in checkpoints (``resume`` restores them)
    and in the DDP launcher, which re-creates the trainer from ``vars(trainer.args)`` in a new process.
    """

    extra_args: dict[str, Any] = {}

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        overrides = dict(overrides or {})
        given = {k: overrides.pop(k) for k in list(overrides) if k in self.extra_args}
        super().__init__(cfg, overrides, _callbacks)
        for key, default in self.extra_args.items():
            # resume: check_resume() already restored the checkpoint's values into self.args
            value = given.get(key, getattr(self.args, key, default))
            setattr(self.args, key, value)

    def get_model(self, cfg=None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        """Return ``weights`` itself (float32, trainable) when it is a module, else build from ``cfg``."""
        if isinstance(weights, nn.Module):
            nc = getattr(weights, "nc", None)
            if nc is not None and nc != self.data["nc"]:
                raise ValueError(
                    f"model predicts {nc} classes but dataset {self.args.data!r} has {self.data['nc']}; "
                    "pass the dataset the model was trained on, or retrain the baseline from a yaml"
                )
            model = weights.float()
            for p in model.parameters():
                p.requires_grad_(True)
            return model
        return super().get_model(cfg=cfg, weights=weights, verbose=verbose)

    def get_validator(self):
        """``DetectionTrainer.get_validator`` with the extra settings hidden from ``args`` while it is built.

        The validator runs ``get_cfg(overrides=copy(args))``, whose ``check_dict_alignment`` rejects keys that
        Ultralytics does not know. They stay on ``self.args`` for checkpoints, resume and DDP.
        """
        saved = {k: getattr(self.args, k) for k in self.extra_args if hasattr(self.args, k)}
        for k in saved:
            delattr(self.args, k)
        try:
            return super().get_validator()
        finally:
            for k, v in saved.items():
                setattr(self.args, k, v)
