"""Offline-safe runtime settings for Ultralytics, applied once when ``yolo_compress`` is imported.

Everything here changes process state, not Ultralytics' files:

* ``YOLO_OFFLINE=1`` skips the DNS probe ``ultralytics.utils.is_online`` runs at import.
* ``YOLO_AUTOINSTALL=0`` stops ``ultralytics.nn.tasks.torch_safe_load`` from pip-installing a module a pickled
  checkpoint names but this process cannot import.
* ``YOLO_CONFIG_DIR`` defaults to a per-user folder under the temp dir instead of ``~/.config/Ultralytics``
  (a user-set value is kept).
* A local TrueType font is placed where ``ultralytics.utils.checks.check_font`` looks first
  (``USER_CONFIG_DIR/Arial.ttf``), so it never sends its HEAD request to github.com.
* ``ultralytics.utils.torch_utils.NUM_THREADS`` (read by ``select_device``, which calls
  ``torch.set_num_threads(NUM_THREADS)`` on CPU) is raised from ``cpu_count - 1`` to all cores.

Checked against Ultralytics 8.4.190.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CHECKED_ULTRALYTICS = ("8.4.190",)
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
    """Apply every runtime setting once; safe to call again."""
    global _applied
    if _applied:
        return
    set_offline_env()
    from ultralytics.utils import USER_CONFIG_DIR, torch_utils

    install_local_font(Path(USER_CONFIG_DIR))
    torch_utils.NUM_THREADS = os.cpu_count() or 1
    _applied = True
