"""Find and check a dataset before Ultralytics sees it, so bad input fails in one clear line, before training.

Detection datasets are YOLO data yamls; classification datasets are ImageFolder trees (``train/<class>/*.jpg``,
``val/<class>/*.jpg``, optional ``test/``), as Ultralytics reads them. ``None`` selects the built-in synthetic set
of the task (generated under ``data/`` on first use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from yolo_compress.errors import CompressError
from yolo_compress.patches.datasets import image_files, label_files, read_det_yaml, verify_labels

LOGGER = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
DEFAULT_IMGSZ = {"detect": 640, "segment": 640, "pose": 640, "obb": 640, "classify": 224}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """A checked dataset.

    Attributes:
        path: the data yaml (detect) or the ImageFolder root (classify) the user named, absolute.
        task: ``"detect"``, ``"segment"``, ``"pose"``, ``"obb"`` or ``"classify"``.
        names: class index -> name.
        imgsz: the image size it was made for (built-in sets record it), else the task's usual size.
        data_arg: what Ultralytics is handed as ``data=``: for a yaml, the yaml as Ultralytics resolved it (absolute
            split paths, no ``download:`` key), written by yolo-compress; for an ImageFolder, ``path``.
        splits: split name -> its resolved entries (folders or image lists); empty for an ImageFolder.
        kpt_shape: keypoints per object and values per keypoint (pose data only).
    """

    path: Path
    task: str
    names: dict[int, str]
    imgsz: int
    data_arg: Path
    splits: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    kpt_shape: tuple[int, int] | None = None

    @property
    def nc(self) -> int:
        return len(self.names)


def resolve_data(data: str | Path | None, task: str = "detect") -> Dataset:
    """Check ``data`` for ``task`` and describe it; ``None`` means the built-in dataset of the task.

    Raises:
        CompressError: missing or malformed yaml or folder, a dataset that needs downloading, a split without
            images or usable labels, an empty class folder, or data of the other task.
    """
    if data is None:
        from yolo_compress.data import ensure_builtin

        data = ensure_builtin(task)
    path = Path(data).expanduser()
    if task == "classify":
        return _image_folder(path)
    return _detection_yaml(path, task)


def _detection_yaml(path: Path, task: str) -> Dataset:
    """Resolve ``path`` with Ultralytics' own rules (``patches.datasets``), then check what it resolved."""
    if path.is_dir():
        raise CompressError(f"{path} is a folder; a detection dataset is a YOLO data yaml (a folder of class "
                            "subfolders is a classification dataset: use a -cls model with it)")
    if not path.is_file():
        raise CompressError(f"dataset yaml not found: {path}; pass a YOLO data yaml, or omit --data to use the "
                            "built-in shapes dataset (yolo-compress data writes it)")
    raw = _read_yaml(path)
    spec = _ultralytics_spec(path, raw)
    kpt_shape = spec.get("kpt_shape")
    if task == "pose" and not (isinstance(kpt_shape, list) and len(kpt_shape) == 2 and kpt_shape[1] in (2, 3)):
        raise CompressError(f"{path}: a pose dataset needs 'kpt_shape: [keypoints, 2 or 3]' (found {kpt_shape!r}); "
                            "add it to the yaml")
    splits = {k: tuple(Path(e) for e in _as_list(spec[k])) for k in SPLITS if spec.get(k)}
    for split in ("train", "val"):
        try:
            images = image_files(splits[split])
        except FileNotFoundError as e:
            raise CompressError(f"{path}: no images found for split {split!r} in {[str(e) for e in splits[split]]} "
                                f"({_first_line(e.__cause__ or e)}); fix the yaml's paths") from e
        _check_labels(images, spec, split, path, task)
    return Dataset(path.resolve(), task, dict(spec["names"]), _yaml_imgsz(raw.get("imgsz"), path),
                   _write_resolved(path, spec), splits, tuple(kpt_shape) if task == "pose" else None)


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CompressError(f"{path} is not valid YAML ({e.__class__.__name__}); fix the file") from e
    if not isinstance(raw, dict):
        raise CompressError(f"{path} must be a mapping with 'train', 'val' and 'names' keys")
    return raw


def _ultralytics_spec(path: Path, raw: dict) -> dict:
    """Ultralytics' resolution of the yaml; its refusals in one line. A dataset that is missing and has a
    ``download:`` entry is refused: yolo-compress never runs a dataset's download script or URL."""
    try:
        return read_det_yaml(path)
    except FileNotFoundError as e:
        why = _first_line(e)
        if raw.get("download"):
            raise CompressError(f"{path}: {why}; the dataset must be downloaded first (yolo-compress never runs a "
                                "yaml's download: script): download it yourself, then point 'path:' at it") from e
        raise CompressError(f"{path}: {why}; fix 'path:' / 'val:' (relative paths are read from the current "
                            "folder, as Ultralytics reads them) or pass an absolute path") from e
    except (SyntaxError, TypeError, KeyError, ValueError) as e:
        raise CompressError(f"{path}: {_one_line(e).replace(f'{path} ', '')}; fix the yaml") from e


def _first_line(e: BaseException) -> str:
    """The first line of an Ultralytics error (the rest is advice about its download folder)."""
    return _one_line(e).split(". Note dataset download directory")[0]


def _one_line(e: BaseException) -> str:
    """An Ultralytics error message on one line, without its emoji and without repeating the yaml's path."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(line.strip() for line in text.replace("❌", "").splitlines() if line.strip())
    return text.replace(" .", ".").strip().rstrip(".") or type(e).__name__


def _as_list(entry: str | list) -> list:
    return entry if isinstance(entry, list) else [entry]


def _yaml_imgsz(value: object, path: Path) -> int:
    """The yaml's ``imgsz`` (a yolo-compress key of the built-in sets; ``[h, w]`` counts as its larger side)."""
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return max(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if value is not None:
        LOGGER.warning("%s: imgsz %r is not an image size; using %d", path, value, DEFAULT_IMGSZ["detect"])
    return DEFAULT_IMGSZ["detect"]


def _write_resolved(path: Path, spec: dict) -> Path:
    """Write what Ultralytics resolved (absolute paths, ``download`` dropped) to a yaml of yolo-compress's own, so
    training reads the same dataset from any folder and never finds a download to run. Named by content."""
    import hashlib

    from ultralytics.utils import USER_CONFIG_DIR

    from yolo_compress.checkpoint import atomic_write_bytes

    keep = {k: (str(v) if isinstance(v, Path) else v) for k, v in spec.items() if k not in ("download", "yaml_file")}
    text = yaml.safe_dump(keep, sort_keys=False, allow_unicode=True).encode()
    digest = hashlib.sha256(text).hexdigest()[:16]
    out = Path(USER_CONFIG_DIR) / "datasets" / f"{path.stem}-{digest}.yaml"
    if not out.is_file():
        atomic_write_bytes(out, text)
    return out


def split_images(data: Dataset, split: str) -> list[Path]:
    """The image files of a split of a checked dataset (detection yaml or ImageFolder), sorted."""
    if data.task == "classify":
        return _list_images(data.path / split)
    if split not in data.splits:
        raise CompressError(f"{data.path} has no {split!r} split; add a '{split}:' entry to the yaml")
    try:
        return sorted(image_files(data.splits[split]))
    except FileNotFoundError as e:
        raise CompressError(f"{data.path}: no images found for split {split!r} ({_first_line(e)})") from e


def _list_images(entry: Path) -> list[Path]:
    """Images in a folder (recursively)."""
    return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def label_file(image: Path) -> Path:
    """Ultralytics' ``img2label_paths``: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    return label_files([image])[0]


def _check_labels(images: list[Path], spec: dict, split: str, path: Path, task: str) -> None:
    """Run Ultralytics' own label check on every image and say in one line what it will skip.

    Ultralytics skips an image that is unreadable or whose label file has a bad row, with one message per file; a
    split left with no labelled image would train on nothing (or fail late), so that is an error here.

    Raises:
        CompressError: no image of the split has a usable label.
    """
    results = verify_labels(images, spec, keypoints=task == "pose")
    skipped = [msg for kept, msg in results if not kept]
    labelled = sum(kept and label.is_file() and label.stat().st_size > 0
                   for (kept, _), label in zip(results, label_files(images)))
    if skipped:
        LOGGER.warning("%s split %r: %d of %d images skipped by Ultralytics' label check, e.g. %s", path.name, split,
                       len(skipped), len(images), skipped[0].strip())
    if labelled == 0:
        reason = (f"all {len(skipped)} images with labels are skipped, e.g. {skipped[0].strip()}" if skipped
                  else "no label files found next to the images (a 'labels' folder beside 'images')")
        raise CompressError(f"{path}: split {split!r} has no usable labels ({reason}); fix the labels or 'names'")


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
    return Dataset(root.resolve(), "classify", dict(enumerate(classes)), imgsz, root.resolve())


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
    if data.data_arg.is_file():
        digest.update(data.data_arg.read_bytes())
    for split in ("train", "val"):
        images = split_images(data, split)
        labels = label_files(images) if data.task != "classify" else []
        for f in [*images, *labels]:
            stat = f.stat() if f.is_file() else None
            digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}\n".encode() if stat else f"{f}:-\n".encode())
    return digest.hexdigest()
