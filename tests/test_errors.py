"""Every bad input the README's error table lists, through the command line: exit 2, one line with the table's text
(which names the fix), and the output path never created. The cases are read from README.md."""

from __future__ import annotations

import errno
import re
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from yolo_compress.checkpoint import save_checkpoint
from yolo_compress.cli import main
from yolo_compress.dataset import resolve_data
from yolo_compress.models import build_from_yaml

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_cases() -> dict[str, str]:
    text = README.read_text()
    table = text[text.index("<!-- errors:start -->"):text.index("<!-- errors:end -->")]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    return {r[1].strip(): r[3].strip().strip("`") for r in rows}


@pytest.fixture(scope="module")
def files(tiny_yaml, tmp_path_factory) -> dict[str, Path]:
    """Real checkpoints and datasets the cases start from."""
    root = tmp_path_factory.mktemp("errors")
    data = resolve_data(tiny_yaml)
    out = {"data": Path(tiny_yaml),
           "w": save_checkpoint(build_from_yaml("yolov8n.yaml", data), root / "w.pt"),
           "nc2": save_checkpoint(build_from_yaml("yolov8n.yaml", replace(data, names={0: "a", 1: "b"})),
                                  root / "nc2.pt"),
           "cls": save_checkpoint(build_from_yaml("yolov8n-cls.yaml", replace(data, task="classify")),
                                  root / "cls.pt")}
    return out


def _text(name: str, content: str | bytes) -> str:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return name


def _yaml_with(files: dict[str, Path], name: str, **changes: str) -> str:
    text = files["data"].read_text()
    for old, new in changes.items():
        text = re.sub(old, new, text, flags=re.M)
    return _text(name, text)


def _class_ids(files: dict[str, Path]) -> str:
    import shutil

    root = Path("bad_ids")
    shutil.copytree(files["data"].parent, root)
    for label in (root / "labels" / "train").glob("*.txt"):
        label.write_text("9 0.5 0.5 0.2 0.2\n")
    return _yaml_with(files, "bad_ids/data.yaml", **{r"^path: .*$": f"path: {root.resolve()}"})


def _read_only_weights(files: dict[str, Path]) -> str:
    Path("ro").mkdir()
    shutil.copyfile(files["w"], "ro/w.pt")
    return files["read_only"]("ro") + "/w.pt"


def _predict_in_read_only_folder(files: dict[str, Path]) -> list[str]:
    files["read_only"](".")  # the default --save-dir, runs/predict, is under it
    return ["predict", "--weights", str(files["w"]), "--data", str(files["data"]), "--source",
            str(files["data"].parent / "images" / "val")]


# case -> (command line builder, the output path it must not create)
CASES: dict[str, tuple[Callable[[dict[str, Path]], list[str]], str]] = {
    "missing_weights": (lambda f: ["train", "--weights", "nope.pt", "--data", str(f["data"]), "--save", "o/x.pt"],
                        "o"),
    "empty_weights": (lambda f: ["train", "--weights", _text("e.pt", b""), "--save", "o/x.pt"], "o"),
    "truncated_weights": (lambda f: ["train", "--weights", _text("t.pt", f["w"].read_bytes()[:5000]),
                                     "--save", "o/x.pt"], "o"),
    "text_weights": (lambda f: ["train", "--weights", _text("x.pt", "not a checkpoint"), "--save", "o/x.pt"], "o"),
    "weights_classes": (lambda f: ["train", "--weights", str(f["nc2"]), "--data", str(f["data"]),
                                   "--save", "o/x.pt"], "o"),
    "teacher_classes": (lambda f: ["distill", "--weights", str(f["w"]), "--data", str(f["data"]), "--teacher",
                                   str(f["nc2"]), "--save", "o/x.pt"], "o"),
    "run_teacher_classes": (lambda f: ["run", "--weights", str(f["w"]), "--data", str(f["data"]), "--teacher",
                                       str(f["nc2"]), "--sparse", "--out", "o"], "o"),
    "teacher_task": (lambda f: ["distill", "--weights", str(f["w"]), "--data", str(f["data"]), "--teacher",
                                str(f["cls"]), "--save", "o/x.pt"], "o"),
    "missing_teacher": (lambda f: ["distill", "--weights", str(f["w"]), "--data", str(f["data"]), "--teacher",
                                   "nope.pt", "--save", "o/x.pt"], "o"),
    "unsupported_task": (lambda f: ["train", "--weights", "yolo26n-depth.yaml", "--save", "o/x.pt"], "o"),
    "pose_data": (lambda f: ["train", "--weights", "yolov8n-pose.yaml", "--data", str(f["data"]), "--save", "o/x.pt"],
                  "o"),
    "missing_data": (lambda f: ["train", "--weights", str(f["w"]), "--data", "missing.yaml", "--save", "o/x.pt"],
                     "o"),
    "unparsable_data": (lambda f: ["train", "--weights", str(f["w"]), "--data", _text("bad.yaml", "train: [a\n"),
                                   "--save", "o/x.pt"], "o"),
    "data_without_names": (lambda f: ["train", "--weights", str(f["w"]), "--data",
                                      _yaml_with(f, "nonames.yaml", **{r"^names:(\n  .*)*": ""}), "--save",
                                      "o/x.pt"], "o"),
    "empty_split": (lambda f: ["train", "--weights", str(f["w"]), "--data",
                               _yaml_with(f, "nosplit.yaml", **{r"^train: .*$": "train: images/none"}), "--save",
                               "o/x.pt"], "o"),
    "class_ids": (lambda f: ["train", "--weights", str(f["w"]), "--data", _class_ids(f), "--save", "o/x.pt"], "o"),
    "missing_config": (lambda f: ["run", "--config", "nope.yaml", "--out", "o"], "o"),
    "unparsable_config": (lambda f: ["run", "--config", _text("cfg.yaml", "epochs: [1\n"), "--out", "o"], "o"),
    "unknown_key": (lambda f: ["run", "--set", "sparce=false", "--out", "o"], "o"),
    "unknown_ultralytics": (lambda f: ["train", "--weights", str(f["w"]), "--data", str(f["data"]), "--save",
                                       "o/x.pt", "lr00=0.01"], "o"),
    "bad_factor": (lambda f: ["prune", "--weights", str(f["w"]), "--data", str(f["data"]), "--factor", "1.5",
                              "--save", "o/x.pt"], "o"),
    "bad_speed_up": (lambda f: ["run", "--speed-up", "0.5", "--out", "o"], "o"),
    "bad_zero_at": (lambda f: ["run", "--zero-at", "2", "--out", "o"], "o"),
    "unreachable": (lambda f: ["run", "--weights", str(f["w"]), "--data", str(f["data"]), "--imgsz", "64",
                               "--speed-up", "50", "--out", "o"], "o"),
    "unknown_loss": (lambda f: ["run", "--loss", "foo", "--out", "o"], "o"),
    "unknown_importance": (lambda f: ["prune", "--weights", str(f["w"]), "--importance", "foo", "--save",
                                      "o/x.pt"], "o"),
    "unknown_format": (lambda f: ["export", "--weights", str(f["w"]), "--format", "foo"], "o"),
    "quantize_format": (lambda f: ["quantize", "--weights", str(f["w"]), "--data", str(f["data"]), "--format",
                                   "tflite"], "o"),
    "openvino_missing": (lambda f: ["quantize", "--weights", str(f["w"]), "--data", str(f["data"]), "--format",
                                    f["hide"]("openvino")], "o"),
    "layers_outside": (lambda f: ["distill", "--weights", str(f["w"]), "--data", str(f["data"]), "--teacher",
                                  str(f["w"]), "--loss", "cwd", "--distill-layers", "22", "--save", "o/x.pt"], "o"),
    "save_is_folder": (lambda f: ["train", "--weights", str(f["w"]), "--data", str(f["data"]), "--save",
                                  str(Path("folder.pt").resolve()) if Path("folder.pt").mkdir() is None else ""],
                       "o"),
    "save_is_input": (lambda f: ["train", "--weights", _text("in.pt", f["w"].read_bytes()), "--data",
                                 str(f["data"]), "--save", "in.pt"], "o"),
    "out_under_file": (lambda f: ["run", "--weights", str(f["w"]), "--data", str(f["data"]), "--out",
                                  _text("afile", "") + "/o"], "afile/o"),
    "missing_source": (lambda f: ["predict", "--weights", str(f["w"]), "--data", str(f["data"])], "runs"),
    "nothing_to_resume": (lambda f: ["train", "--weights", str(f["w"]), "--data", str(f["data"]), "--save",
                                     "o/x.pt", "--resume"], "o/runs"),
    "imgsz": (lambda f: ["prune", "--weights", str(f["w"]), "--data", str(f["data"]), "--imgsz", "100000",
                         "--save", "o/x.pt"], "o"),
    "batch": (lambda f: ["train", "--weights", str(f["w"]), "--data", str(f["data"]), "--batch", "0", "--save",
                         "o/x.pt"], "o"),
    "device": (lambda f: ["run", "--weights", str(f["w"]), "--data", str(f["data"]), "--device", "99", "--out", "o"],
               "o"),
    "nc_names": (lambda f: ["run", "--data", _text("nc.yaml", f["data"].read_text() + "nc: 7\n"), "--out", "o"],
                 "o"),
    "empty_source": (lambda f: ["predict", "--weights", str(f["w"]), "--data", str(f["data"]), "--source",
                                str(Path("empty").resolve()) if Path("empty").mkdir() is None else ""], "runs"),
    "read_only_export": (lambda f: ["export", "--weights", _read_only_weights(f)], "ro/w.onnx"),
    "read_only_quantize": (lambda f: ["quantize", "--weights", _read_only_weights(f), "--data", str(f["data"])],
                           "ro/w.onnx"),
    "read_only_predict": (_predict_in_read_only_folder, "runs"),
}


def test_the_readme_table_and_the_cases_agree():
    assert set(readme_cases()) == set(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_in_one_line_that_names_the_fix(case, files, capsys, monkeypatch, request):
    expected = readme_cases()[case]
    build, output = CASES[case]

    def hide(package: str) -> str:  # as if the package were not installed: importing it raises ImportError
        monkeypatch.setitem(sys.modules, package, None)
        return package

    def read_only(folder: str) -> str:  # as if on a read-only disk: no write permission, a failing write probe for
        path = Path(folder).resolve()  # root (whom permissions do not stop); Ultralytics would still write there
        path.chmod(0o555)
        request.addfinalizer(lambda: path.chmod(0o755))
        make = tempfile.TemporaryFile

        def probe(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
            if dir is not None and Path(dir).resolve() == path:
                raise OSError(errno.EROFS, "Read-only file system", str(dir))
            return make(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", probe)
        return folder

    argv = build({**files, "hide": hide, "read_only": read_only})
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yolo-compress: error: "), err
    assert expected in err[0], err[0]
    assert not Path(output).exists()
