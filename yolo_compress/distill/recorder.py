"""Record the outputs of named submodules with forward hooks, only inside a ``with`` block."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn


class OutputHook:
    """Picklable forward hook that stores a module's output in a shared dict under ``name`` (last call wins)."""

    def __init__(self, store: dict[str, torch.Tensor], name: str) -> None:
        self.store = store
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.store[self.name] = output


class FeatureRecorder:
    """Context manager that hooks ``model``'s submodules named ``names`` and records their outputs.

    Hooks are registered on ``__enter__`` and removed on ``__exit__`` (the handles are kept); only the latest
    output of each module is kept, so memory does not grow with the number of forward passes.

    Args:
        model (nn.Module): model whose submodules are hooked.
        names (Sequence[str]): names as in ``model.named_modules()``, e.g. ``"model.6.cv2"``.

    Raises:
        KeyError: a name is not a submodule of ``model``; the message lists the closest names.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        >>> with FeatureRecorder(net, ["0"]) as rec:
        ...     _ = net(torch.zeros(1, 3, 2, 2))
        ...     feats = rec.pop()
        >>> feats["0"].shape
        torch.Size([1, 4, 2, 2])
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            close = difflib.get_close_matches(missing[0], list(modules), n=3)
            raise KeyError(f"{missing} not in {type(model).__name__}; close names: {close}")
        self.names = tuple(names)
        self.modules = [modules[n] for n in self.names]
        self.data: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> FeatureRecorder:
        self.remove()
        self._handles = [m.register_forward_hook(OutputHook(self.data, n)) for n, m in zip(self.names, self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
        self.data.clear()

    def remove(self) -> None:
        """Remove the hooks; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def pop(self) -> dict[str, torch.Tensor]:
        """Return the recorded outputs in ``names`` order and clear the buffer.

        Raises:
            RuntimeError: a hooked module did not run since the last ``pop``.
        """
        missing = [n for n in self.names if n not in self.data]
        if missing:
            raise RuntimeError(f"no output recorded for {missing}; run a forward pass inside the recorder first")
        out = {n: self.data[n] for n in self.names}
        self.data.clear()
        return out


def remove_output_hooks_(model: nn.Module) -> int:
    """Delete every :class:`OutputHook` left on ``model``'s submodules (e.g. in a deep copy); return how many."""
    removed = 0
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, OutputHook):
                del module._forward_hooks[key]
                removed += 1
    return removed
