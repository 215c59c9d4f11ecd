"""``manifest.json``: what each pipeline stage read, wrote and measured, so a rerun can skip finished stages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from yolo_compress.checkpoint import atomic_write_bytes

VERSION = 1


def file_record(path: str | Path) -> dict[str, str]:
    """Path and SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest()}


class Manifest:
    """The JSON file of a pipeline run; every change is written through at once (atomically)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"version": VERSION, "stages": {}}
        if self.path.is_file():
            loaded = json.loads(self.path.read_text())
            if loaded.get("version") == VERSION:
                self.data = loaded

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def is_done(self, stage: str, inputs: dict[str, dict[str, str]], config: dict[str, Any]) -> bool:
        """True when ``stage`` finished with these inputs and config and its outputs are unchanged on disk."""
        rec = self.stages.get(stage)
        if not rec or rec.get("status") != "done" or rec["inputs"] != inputs or rec["config"] != config:
            return False
        return all(Path(o["path"]).is_file() and file_record(o["path"]) == o for o in rec["outputs"].values())

    def started(self, stage: str, inputs: dict[str, dict[str, str]], config: dict[str, Any]) -> bool:
        """Record a stage start; True when the same stage with the same inputs was interrupted before."""
        rec = self.stages.get(stage, {})
        resumable = rec.get("status") == "running" and rec.get("inputs") == inputs and rec.get("config") == config
        self.stages[stage] = {"status": "running", "inputs": inputs, "config": config}
        self.save()
        return resumable

    def finish(self, stage: str, outputs: dict[str, str | Path], **measured: Any) -> None:
        rec = self.stages[stage]
        rec.update(status="done", outputs={k: file_record(v) for k, v in outputs.items()}, **measured)
        self.save()

    def forget_from(self, stages: list[str]) -> None:
        """Drop the records of ``stages`` (used by ``--force``)."""
        for s in stages:
            self.stages.pop(s, None)
        self.save()

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=2, default=str).encode())
