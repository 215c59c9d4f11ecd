"""Resolve and check a YOLO dataset yaml before Ultralytics sees it, so bad input fails in one clear line."""

from __future__ import annotations

from pathlib import Path

import yaml

from yolo_compress.errors import CompressError

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}


def resolve_data(data: str | Path | None) -> Path:
    """Return the absolute path of a checked dataset yaml; ``None`` means the built-in shapes dataset.

    Raises:
        CompressError: the yaml is missing, unparsable, lacks ``train``/``val``/``names``, or a split has no images.
    """
    if data is None:
        from yolo_compress.data.synthetic import ensure_shapes_dataset

        return ensure_shapes_dataset()
    path = Path(data).expanduser()
    if not path.is_file():
        raise CompressError(f"dataset yaml not found: {path}; pass a YOLO data yaml, or omit --data to use the "
                            "built-in shapes dataset (yolo-compress data writes it)")
    try:
        spec = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CompressError(f"{path} is not valid YAML ({e.__class__.__name__}); fix the file") from e
    if not isinstance(spec, dict):
        raise CompressError(f"{path} must be a mapping with 'train', 'val' and 'names' keys")
    missing = [k for k in ("train", "val", "names") if k not in spec]
    if missing:
        raise CompressError(f"{path} lacks key(s) {missing}; a YOLO data yaml needs 'train', 'val' and 'names'")
    root = Path(spec.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    for split in ("train", "val"):
        entries = spec[split] if isinstance(spec[split], list) else [spec[split]]
        if not any(_count_images(root / e) for e in entries):
            raise CompressError(f"{path}: no images found for split {split!r} under {[str(root / e) for e in entries]}")
    return path.resolve()


def _count_images(entry: Path) -> int:
    """Images in a folder, or lines of an image-list ``.txt`` file."""
    if entry.is_dir():
        return sum(1 for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.is_file() and entry.suffix == ".txt":
        return sum(1 for line in entry.read_text().splitlines() if line.strip())
    return 0


def class_count(data_yaml: str | Path) -> int:
    """Number of classes a checked data yaml declares."""
    return len(yaml.safe_load(Path(data_yaml).read_text())["names"])


def default_imgsz(data_yaml: str | Path, fallback: int = 640) -> int:
    """The image size a dataset was made for (the built-in generators record ``imgsz:``), else ``fallback``."""
    return int(yaml.safe_load(Path(data_yaml).read_text()).get("imgsz") or fallback)
