"""NNCF fake-quantized networks inside the Ultralytics trainer: picklable quantizers, and a loss call that enters
NNCF's hook mode once.

Checked on NNCF 3.4.0 (``nncf/torch/quantization/layers.py``, ``nncf/torch/function_hook/wrapper.py``) with
Ultralytics 8.4.190.

* Ultralytics saves whole pickled modules (``BaseTrainer.save_model``: ``torch.save`` of the EMA), and the fit loop
  hands the trainer a checkpoint. NNCF's quantizers register two load-state hooks pickle cannot name:
  ``BaseQuantizer.__init__``'s ``LoadStateListener`` (a class local to ``__init__``: a loaded state marks the
  quantizer initialized) and ``SymmetricQuantizer.__init__``'s ``lambda module, _: module.set_levels()``.
  :func:`make_quantizers_picklable` gives ``BaseQuantizer`` a ``__getstate__`` that leaves those two out and a
  ``__setstate__`` that registers the same hooks as module-level functions.
* ``nncf.quantize`` replaces the model's ``forward`` by a ``ForwardWithHooks``, which enters a
  ``FunctionHookMode`` per call. Ultralytics trains with ``model(batch)``: ``forward(dict)`` calls ``loss``, which
  calls ``forward(images)`` again; the nested mode's exit unwraps the modules the outer one still needs
  (``KeyError: '_call_impl'``). :class:`LossForward` passes a batch dict straight to the original ``forward``,
  so only the inner, tensor call runs with the quantizers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from nncf.torch.function_hook.wrapper import ForwardWithHooks
from nncf.torch.quantization.layers import BaseQuantizer, SymmetricQuantizer
from torch import nn

_done = False


class LossForward(ForwardWithHooks):
    """``ForwardWithHooks`` that leaves a training batch (a dict) to the original ``forward``, see above."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], dict):
            return self.orig_forward(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def use_loss_forward(model: nn.Module) -> nn.Module:
    """Swap the ``ForwardWithHooks`` of a model returned by ``nncf.quantize`` for a :class:`LossForward`."""
    hooked = model.forward
    if not isinstance(hooked, ForwardWithHooks):
        raise TypeError("the model has no NNCF forward to replace")
    del model.forward
    model.forward = LossForward(model, hooked.orig_forward)
    return model


def mark_initialized(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """``LoadStateListener.hook_fn``: a quantizer whose values come from a state dict is initialized."""
    if any(prefix + key in state_dict for key in module.state_dict()):
        module.initialized = True


def set_levels(module: nn.Module, incompatible_keys: Any) -> None:
    """``SymmetricQuantizer``'s post-load hook: the integer levels follow the loaded signedness."""
    module.set_levels()


def _is_local(hook: Any) -> bool:
    fn = getattr(hook, "hook", hook)  # torch wraps ``with_module`` hooks
    fn = getattr(fn, "func", fn)  # functools.partial
    return "<locals>" in getattr(fn, "__qualname__", "") or getattr(fn, "__name__", "") == "<lambda>"


def _getstate(self: nn.Module) -> dict[str, Any]:
    state = self.__dict__.copy()
    state.pop("load_listener", None)
    for key in ("_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"):
        state[key] = OrderedDict((k, h) for k, h in state[key].items() if not _is_local(h))
    return state


def _setstate(self: nn.Module, state: dict[str, Any]) -> None:
    nn.Module.__setstate__(self, state)
    self._register_load_state_dict_pre_hook(mark_initialized, with_module=True)
    if isinstance(self, SymmetricQuantizer):
        self.register_load_state_dict_post_hook(set_levels)


def make_quantizers_picklable() -> None:
    """Give ``BaseQuantizer`` the pickling methods above (once)."""
    global _done
    if not _done:
        BaseQuantizer.__getstate__ = _getstate
        BaseQuantizer.__setstate__ = _setstate
        _done = True
