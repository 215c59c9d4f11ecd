"""Find and check a dataset before Ultralytics sees it, so bad input fails in one clear line, before training.

Detection datasets are YOLO data yamls; classification datasets are ImageFolder trees (``train/<class>/*.jpg``,
``val/<class>/*.jpg``, optional ``test/``), as Ultralytics reads them. ``None`` selects the built-in synthetic set
of the task (generated under ``data/`` on first use).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from yolo_compress.errors import CompressError

LOGGER = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
DEFAULT_IMGSZ = {"detect": 640, "classify": 224}


@dataclass(frozen=True)
class Dataset:
    """A checked dataset.

    Attributes:
        path: the data yaml (detect) or the ImageFolder root (classify), absolute.
        task: ``"detect"`` or ``"classify"``.
        names: class index -> name.
        imgsz: the image size it was made for (built-in sets record it), else the task's usual size.
    """

    path: Path
    task: str
    names: dict[int, str]
    imgsz: int

    @property
    def nc(self) -> int:
        return len(self.names)


def resolve_data(data: str | Path | None, task: str = "detect") -> Dataset:
    """Check ``data`` for ``task`` and describe it; ``None`` means the built-in dataset of the task.

    Raises:
        CompressError: missing or malformed yaml or folder, a split without images or usable labels, an empty
            class folder, or data of the other task.
    """
    if data is None:
        from yolo_compress.data import ensure_builtin

        data = ensure_builtin(task)
    path = Path(data).expanduser()
    if task == "classify":
        return _image_folder(path)
    return _detection_yaml(path)


def _detection_yaml(path: Path) -> Dataset:
    if path.is_dir():
        raise CompressError(f"{path} is a folder; a detection dataset is a YOLO data yaml (a folder of class "
                            "subfolders is a classification dataset: use a -cls model with it)")
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
    names = _names(spec["names"], path)
    if "nc" in spec and spec["nc"] != len(names):
        raise CompressError(f"{path}: nc: {spec['nc']} but 'names' lists {len(names)} classes; make them agree "
                            "(or drop nc)")
    for split in ("train", "val"):
        entries = split_entries(path, spec, split)
        images = [img for e in entries for img in _list_images(e)]
        if not images:
            raise CompressError(f"{path}: no images found for split {split!r} under {[str(e) for e in entries]}")
        _check_labels(images, len(names), split, path)
    imgsz = int(spec.get("imgsz") or DEFAULT_IMGSZ["detect"])
    return Dataset(path.resolve(), "detect", names, imgsz)


def split_entries(yaml_path: Path, spec: dict, split: str) -> list[Path]:
    """The folders (or image-list files) of ``split`` in a data yaml, resolved as Ultralytics resolves them:
    relative to ``path:``, which is itself relative to the yaml's folder (default: that folder)."""
    root = Path(spec.get("path") or yaml_path.parent)
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve()
    entries = spec[split] if isinstance(spec[split], list) else [spec[split]]
    return [root / e for e in entries]


def split_images(data: Dataset, split: str) -> list[Path]:
    """The image files of a split of a checked dataset (detection yaml or ImageFolder), sorted."""
    if data.task == "classify":
        return _list_images(data.path / split)
    spec = yaml.safe_load(data.path.read_text())
    return sorted(img for e in split_entries(data.path, spec, split) for img in _list_images(e))


def _names(raw: object, path: Path) -> dict[int, str]:
    if isinstance(raw, list):
        return dict(enumerate(str(n) for n in raw))
    if isinstance(raw, dict) and raw:
        try:
            return {int(k): str(v) for k, v in raw.items()}
        except ValueError as e:
            raise CompressError(f"{path}: 'names' keys must be class indices 0..n-1") from e
    raise CompressError(f"{path}: 'names' must be a list or a mapping of class names")


def _list_images(entry: Path) -> list[Path]:
    """Images in a folder, or those an image-list ``.txt`` file names (relative to its folder)."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.is_file() and entry.suffix == ".txt":
        lines = [line.strip() for line in entry.read_text().splitlines() if line.strip()]
        return [p if p.is_absolute() else (entry.parent / p) for p in map(Path, lines)]
    return []


def label_file(image: Path) -> Path:
    """Ultralytics' ``img2label_paths``: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    parts = image.parts
    if "images" not in parts:
        return image.with_suffix(".txt")
    k = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:k], "labels", *parts[k + 1:]).with_suffix(".txt")


def _check_labels(images: list[Path], nc: int, split: str, path: Path) -> None:
    """Count what Ultralytics would drop (class ids outside ``names``, malformed rows) and say it in one line.

    Ultralytics skips an image whose label file has any bad row, with one warning per file; a split left with
    no labelled image would train on nothing (or fail late), so that is an error here.

    Raises:
        CompressError: no image of the split has a usable label.
    """
    bad_files, bad_rows, labelled, worst = 0, 0, 0, None
    unreadable = {image for image in images if not _image_ok(image)}
    for image in images:
        if image in unreadable:
            continue
        label = label_file(image)
        if not label.is_file():
            continue
        rows = [r.split() for r in label.read_text(errors="replace").splitlines() if r.strip()]
        if not rows:
            continue
        bad = [r for r in rows if not _row_ok(r, nc)]
        if bad:
            bad_files, bad_rows = bad_files + 1, bad_rows + len(bad)
            worst = worst or (label, " ".join(bad[0]))
        else:
            labelled += 1
    if unreadable:
        LOGGER.warning("%s split %r: %d of %d images are not readable images and will be skipped, e.g. %s",
                       path.name, split, len(unreadable), len(images), min(unreadable))
    if bad_files:
        LOGGER.warning("%s split %r: %d of %d images skipped (%d label rows with a class id outside 0..%d, "
                       "coordinates outside [0, 1] or a wrong column count, e.g. %s: %r)", path.name, split, bad_files,
                       len(images), bad_rows, nc - 1, *worst)
    if labelled == 0:
        reason = (f"all {bad_files} labelled images have rows with a class id outside 0..{nc - 1}, coordinates "
                  f"outside [0, 1] or a wrong column count, e.g. {worst[0]}: {worst[1]!r}" if bad_files
                  else "no label files found next to the images")
        raise CompressError(f"{path}: split {split!r} has no usable labels ({reason}); fix the labels or 'names'")


def _image_ok(image: Path) -> bool:
    """Whether an image file opens (its header only: cheap), as Ultralytics' label check needs before it keeps it."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            return im.size[0] > 0 and im.size[1] > 0
    # PIL's errors for files that are no image; ImportError: Ultralytics' patched Image.open then tries pi_heif
    except (OSError, ValueError, SyntaxError, ImportError):
        return False


def _row_ok(row: list[str], nc: int) -> bool:
    """A row Ultralytics keeps: a class id in ``0..nc-1``, then a box (4 values) or a polygon (3+ points), every
    coordinate a finite number in [0, 1]."""
    try:
        values = [float(v) for v in row]
    except ValueError:
        return False
    shape_ok = len(values) == 5 or (len(values) >= 7 and len(values) % 2 == 1)
    coords_ok = all(math.isfinite(v) and 0 <= v <= 1 for v in values[1:])
    return shape_ok and coords_ok and values[0].is_integer() and 0 <= values[0] < nc


def _image_folder(root: Path) -> Dataset:
    if root.is_file():
        raise CompressError(f"{root} is a file; a classification dataset is a folder with train/<class>/ and "
                            "val/<class>/ image folders (a data yaml is a detection dataset: use a detection model)")
    if not root.is_dir():
        raise CompressError(f"dataset folder not found: {root}; pass an ImageFolder root (train/, val/) or omit "
                            "--data for the built-in classification set")
    splits = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in splits or not ({"val", "test"} & set(splits)):
        raise CompressError(f"{root} needs a train/ folder and a val/ (or test/) folder, each with one "
                            "subfolder of images per class")
    classes = sorted(p.name for p in splits["train"].iterdir() if p.is_dir())
    if not classes:
        raise CompressError(f"{splits['train']} has no class subfolders; put the images of class C in train/C/")
    for folder in splits.values():
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if found != classes:
            raise CompressError(f"{folder} has classes {found} but train/ has {classes}; every split needs the "
                                "same class folders")
        for c in classes:
            images = _list_images(folder / c)
            if not images:
                raise CompressError(f"class folder {folder / c} holds no images; add images or remove the class "
                                    "from every split")
            _check_images(images)
    imgsz = DEFAULT_IMGSZ["classify"]
    meta = root / "dataset.yaml"  # written by the built-in generator: the image size it was made for
    if meta.is_file():
        imgsz = int((yaml.safe_load(meta.read_text()) or {}).get("imgsz") or imgsz)
    return Dataset(root.resolve(), "classify", dict(enumerate(classes)), imgsz)


def _check_images(images: list[Path]) -> None:
    """Open every image's header (cheap) so an unreadable file fails now, not as a warning mid-training.

    Raises:
        CompressError: the first image that cannot be read.
    """
    from PIL import Image

    for image in images:
        try:
            with Image.open(image) as im:
                im.verify()
        except Exception as e:  # PIL raises many types for a broken file
            raise CompressError(f"cannot read image {image} ({type(e).__name__}); delete or replace it") from e


def data_fingerprint(data: Dataset) -> str:
    """SHA-256 of what training reads: the yaml (or folder) and the name, size and modification time of every image
    and label file of the train and val splits, so a changed dataset reruns what depends on it."""
    import hashlib

    digest = hashlib.sha256()
    if data.path.is_file():
        digest.update(data.path.read_bytes())
    for split in ("train", "val"):
        images = split_images(data, split) if data.task == "classify" or data.path.is_file() else []
        for image in images:
            files = [image] if data.task == "classify" else [image, label_file(image)]
            for f in files:
                stat = f.stat() if f.is_file() else None
                digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}\n".encode() if stat else f"{f}:-\n".encode())
    return digest.hexdigest()
