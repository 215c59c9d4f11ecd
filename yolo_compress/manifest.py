"""``manifest.json``: what each pipeline stage read, wrote and measured, so a rerun can skip finished stages."""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from yolo_compress.checkpoint import atomic_write_bytes

LOGGER = logging.getLogger(__name__)
VERSION = 2


def file_record(path: str | Path) -> dict[str, str]:
    """Path and SHA-256 of a file, or of a folder's files (an OpenVINO model: names and contents, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if file != path:
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for chunk in iter(partial(f.read, 1 << 20), b""):
                digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest()}


class Manifest:
    """The JSON record of a pipeline run; every change is written through at once, atomically.

    A second copy is kept as ``manifest.json.bak``. A manifest that does not parse (edited by hand, a disk error)
    is moved aside with a one-line warning and the backup is used: stages whose outputs still match their
    recorded hashes are skipped, the others run again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".bak")
        self.data: dict[str, Any] = {"version": VERSION, "stages": {}}
        if self.path.is_file():
            loaded = self._read(self.path)
            if loaded is None:
                aside = self.path.with_name(self.path.name + ".damaged")
                self.path.replace(aside)
                loaded = self._read(self.backup) if self.backup.is_file() else None
                LOGGER.warning("%s was damaged (moved to %s); %s", self.path, aside.name,
                               "using its backup, finished stages are re-verified by hash" if loaded
                               else "no usable backup, every stage runs again")
            if loaded is not None and loaded.get("version") == VERSION:
                self.data = loaded
                if not self.path.is_file():
                    self.save()  # the backup becomes the manifest again

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, OSError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("stages"), dict) else None

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def is_done(self, stage: str, sources: dict[str, dict[str, str]], settings: dict[str, Any]) -> bool:
        """True when ``stage`` finished with these sources and settings and its outputs are unchanged on disk."""
        rec = self.stages.get(stage)
        if not rec or rec.get("status") != "done" or rec.get("sources") != sources or rec.get("settings") != settings:
            return False
        return all(Path(o["path"]).exists() and file_record(o["path"]) == o for o in rec["outputs"].values())

    def started(self, stage: str, sources: dict[str, dict[str, str]], settings: dict[str, Any]) -> bool:
        """Record a stage start; True when the same stage with the same sources was interrupted before."""
        rec = self.stages.get(stage, {})
        resumable = rec.get("status") == "running" and rec.get("sources") == sources and rec.get("settings") == settings
        self.stages[stage] = {"status": "running", "sources": sources, "settings": settings}
        self.save()
        return resumable

    def finish(self, stage: str, outputs: dict[str, Path], **measured: Any) -> None:
        rec = self.stages[stage]
        rec.update(status="done", outputs={k: file_record(v) for k, v in outputs.items()}, **measured)
        self.save()

    def forget_from(self, stages: list[str]) -> None:
        """Drop the records of ``stages`` (``--force``)."""
        for s in stages:
            self.stages.pop(s, None)
        self.save()

    def save(self) -> None:
        data = json.dumps(self.data, indent=2, default=str).encode()
        atomic_write_bytes(self.path, data)
        atomic_write_bytes(self.backup, data)
