"""Offline-safe runtime settings for Ultralytics, applied once when yolo-compress starts work.

``apply()`` runs at the start of the command line, of ``PruneModel(...)`` and of ``CompressionPipeline(...)``,
never at import; ``YOLO_COMPRESS_RUNTIME=0`` in the environment turns it off (an application that sets up
Ultralytics and torch itself). Everything here changes process state, not Ultralytics' files:

* ``YOLO_OFFLINE=1`` skips the DNS probe ``ultralytics.utils.is_online`` runs at import (when Ultralytics was not
  imported before).
* ``YOLO_AUTOINSTALL=0`` stops ``ultralytics.nn.tasks.torch_safe_load`` from pip-installing a module a pickled
  checkpoint names but this process cannot import.
* ``YOLO_CONFIG_DIR`` defaults to a per-user folder under the temp dir instead of ``~/.config/Ultralytics``
  (a user-set value is kept).
* A local TrueType font is placed where ``ultralytics.utils.checks.check_font`` looks first
  (``USER_CONFIG_DIR/Arial.ttf``), so it never sends its HEAD request to github.com.
* ``ORT_DISABLE_TELEMETRY=1``: ONNX Runtime's 1DS telemetry (read when ONNX Runtime is imported) otherwise looks
  up ``mobile.events.data.microsoft.com`` and keeps an event store under ``~/.cache/Microsoft``;
  ``disable_telemetry_events()`` does not stop either (measured with strace, ONNX Runtime 1.32).
* ``MPLCONFIGDIR`` defaults to that config dir too, so matplotlib (imported by Ultralytics) writes its font cache
  there, not under ``~/.config`` / ``~/.cache``.
* OpenVINO's and NNCF's telemetry (``openvino_telemetry``, used by ``openvino.convert_model`` and
  ``nncf.quantize``) sends events to Google Analytics unless a consent file under ``~/intel`` says no: with no
  file and no dialog it counts as consent. :func:`decline_openvino_telemetry` replaces
  ``openvino_telemetry.utils.opt_in_checker.OptInChecker.check`` (checked on openvino-telemetry 2025.2.0) by a
  function that declines, for this process only; nothing is written under HOME.
* :func:`check_version` warns when the installed Ultralytics is outside the range the seam was checked on.
* Checkpoints are read from exactly the path given (``patches.weights``) and the label scan never rewrites a user's
  JPEG (``patches.datasets.keep_images_unchanged``).
* ``ultralytics.utils.torch_utils.NUM_THREADS`` (read by ``select_device``, which calls
  ``torch.set_num_threads(NUM_THREADS)`` on CPU) is raised from ``cpu_count - 1`` to all cores.

Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from yolo_compress.patches.datasets import keep_images_unchanged
from yolo_compress.patches.weights import exact_weight_paths

# the seam was read and tested against 8.4.190; the private pieces it relies on have been stable within 8.4.x
CHECKED_ULTRALYTICS = "8.4.190"
SUPPORTED_BELOW = "8.5"
LOGGER = logging.getLogger(__name__)
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_applied = False


def default_config_dir() -> Path:
    """Folder used for Ultralytics' settings when the user did not set ``YOLO_CONFIG_DIR``."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"yolo_compress-{uid}"


def set_offline_env() -> None:
    """Set the environment Ultralytics reads at import time; user-set values win except auto-install."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))
    os.environ.setdefault("MPLCONFIGDIR", str(Path(os.environ["YOLO_CONFIG_DIR"]) / "matplotlib"))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "onnxruntime" in sys.modules:
        LOGGER.warning("onnxruntime was imported before yolo-compress started: set ORT_DISABLE_TELEMETRY=1 before "
                       "importing it to keep its telemetry off")
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def install_local_font(config_dir: Path) -> None:
    """Copy matplotlib's bundled DejaVuSans to the names ``check_font`` asks for, if absent."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        target = config_dir / name
        if not target.exists():
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)


def apply() -> None:
    """Apply every runtime setting once (unless ``YOLO_COMPRESS_RUNTIME=0``); safe to call again."""
    global _applied
    if _applied or os.environ.get("YOLO_COMPRESS_RUNTIME", "1") == "0":
        return
    set_offline_env()
    from ultralytics.utils import USER_CONFIG_DIR, torch_utils

    install_local_font(Path(USER_CONFIG_DIR))
    decline_openvino_telemetry()
    exact_weight_paths()
    keep_images_unchanged()
    torch_utils.NUM_THREADS = os.cpu_count() or 1
    check_version()
    _applied = True


def decline_openvino_telemetry() -> bool:
    """Make OpenVINO's telemetry see a declined consent (see the module docstring); False when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("openvino_telemetry") is None:
        return False
    from openvino_telemetry.utils import opt_in_checker

    def check(self: object, enable_opt_in_dialog: bool = True, disable_in_ci: bool = False) -> object:
        return opt_in_checker.ConsentCheckResult.DECLINED

    opt_in_checker.OptInChecker.check = check
    return True


def check_version() -> bool:
    """Warn (once, at import) when Ultralytics is older than the checked release or of a newer minor series.

    Returns:
        (bool): True when the installed version is in ``[CHECKED_ULTRALYTICS, SUPPORTED_BELOW)``.
    """
    from ultralytics import __version__
    from ultralytics.utils.checks import check_version as compare

    ok = compare(__version__, f">={CHECKED_ULTRALYTICS},<{SUPPORTED_BELOW}")
    if not ok:
        LOGGER.warning("yolo-compress was checked against Ultralytics %s; %s is installed. Its trainer overrides "
                       "(yolo_compress/patches) may not fit: pip install ultralytics==%s if training fails",
                       CHECKED_ULTRALYTICS, __version__, CHECKED_ULTRALYTICS)
    return ok
