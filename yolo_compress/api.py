"""``PruneModel``: the Python face of yolo-compress. Each method is one stage; each stage writes a checkpoint.

Stage settings are keyword arguments named as in the stage's settings class (``SparseSettings``,
``PruneSettings``, ``DistillSettings``), with the same defaults as the CLI and the config file; every other
keyword goes to Ultralytics and is checked before anything trains.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from yolo_compress.checkpoint import load_model, save_checkpoint
from yolo_compress.dataset import Dataset
from yolo_compress.errors import CompressError
from yolo_compress.models import model_size
from yolo_compress.preflight import check_beside_weights, check_disk, check_save_dir, check_source, check_train_values
from yolo_compress.settings import Settings
from yolo_compress.training import check_train_args, output_path, recovery_args, train_args, writable_dir
from yolo_compress.validation import validate
from yolo_compress.workspace import Workspace

if TYPE_CHECKING:
    from yolo_compress.distill import DistillSettings
    from yolo_compress.distill.teacher import Teacher
    from yolo_compress.prune import PruneResult
    from yolo_compress.report import Row
    from yolo_compress.stage import Stage

LOGGER = logging.getLogger(__name__)
S = TypeVar("S", bound=Settings)


class PruneModel:
    """A YOLO model (any supported family and task) on its way through sparse training, pruning, fine-tuning and
    distillation; its :class:`~yolo_compress.workspace.Workspace` (model, data, image size) is the pipeline's too.

    Args:
        weights: a trained ``.pt`` checkpoint, or a model yaml such as ``"yolov8n.yaml"`` / ``"yolov8n-cls.yaml"``
            (random init, seeded, built with the dataset's classes; no download).
        data: a YOLO data yaml (detect) or an ImageFolder root (classify); ``None`` uses the built-in dataset of
            the model's task (generated on first use).
        imgsz: default image size of every stage; ``None`` takes the dataset's recorded size, else 640 / 224.
        seed: initialisation seed when ``weights`` is a yaml.

    Example:
        >>> pm = PruneModel("yolov8n.yaml")  # built-in data
        >>> pm.train(save_dir="weights/baseline.pt", epochs=10)
        >>> pm.info()["params"]
    """

    def __init__(self, weights: str | Path = "yolov8n.yaml", data: str | Path | None = None,
                 imgsz: int | None = None, seed: int = 0) -> None:
        from yolo_compress.patches import runtime

        runtime.apply()
        self.workspace = Workspace.open(weights, data, imgsz, seed)
        self.metrics: dict[str, float] = {}
        self.run_dir: Path | None = None  # Ultralytics folder (results.csv, plots) of the last training stage

    @property
    def model(self) -> nn.Module:
        """The current network."""
        return self.workspace.model

    @property
    def data(self) -> Dataset:
        return self.workspace.data

    @property
    def imgsz(self) -> int:
        return self.workspace.imgsz

    @property
    def weights(self) -> Path | None:
        """The file :attr:`model` was last loaded from or saved to (``None``: built from a yaml, not saved)."""
        return self.workspace.weights

    @property
    def task(self) -> str:
        return self.workspace.task

    # ---- stages --------------------------------------------------------------------------------------------------
    def train(self, save_dir: str | Path = "weights/retrain.pt", resume: bool = False, **kwargs: Any) -> Path:
        """Train (or fine-tune) the current model with its exact architecture; returns the weights path.

        Keyword arguments go to Ultralytics (``epochs``, ``batch``, ``lr0``, ``device``, ``imgsz``, ...), except
        ``recovery_lr``: a detector loaded from (or saved to) a ``.pt`` trains at AdamW lr0 0.005 where Ultralytics
        would pick its small-data optimizer itself (give ``optimizer=...`` or ``recovery_lr=0`` for Ultralytics'
        own choice); the same holds for :meth:`sparse_train` and :meth:`distill`. ``resume=True`` continues the
        interrupted run of this ``save_dir`` (its run folder is ``<save_dir's folder>/runs/<stem>``).
        """
        from yolo_compress.finetune.stage import train_model

        out, args = self._prepare(save_dir, kwargs)
        return self._trained(train_model(self.model, self.data, out, args, resume, require_resume=resume), out)

    def sparse_train(self, save_dir: str | Path = "weights/sparse.pt", resume: bool = False, **kwargs: Any) -> Path:
        """Network slimming: free the channels a pruning target will remove, while training (``SparseSettings``).

        Settings: the target as for :meth:`prune` (``factor`` or ``speed_up``, ``round_to``; default 2x fewer
        GFLOPs), ``sparse_importance`` (how each layer's channels are ranked), ``zero_at`` (share of the run after
        which they are exactly zero). ``sparse_method="l1"`` instead pulls every scale by ``l1_total`` over the run
        (the published L1 penalty, for long runs). The final epoch's weights are saved, and the histogram of the
        BatchNorm scales next to them (``sparse_bn_gamma_hist.png``). Other keywords go to Ultralytics. Prune the
        result with the same target and the default importance: exactly the freed channels go, at no accuracy cost.
        ``sparse_distill=True`` also distils from the model as loaded (its ``.pt`` is the teacher), with the
        distillation keywords of :meth:`distill`.
        """
        from yolo_compress.distill import DistillSettings
        from yolo_compress.prune import TARGET_KEYS, PruneSettings
        from yolo_compress.sparse import SparseSettings
        from yolo_compress.sparse.stage import sparse_train

        settings, kwargs = _split(SparseSettings, kwargs)
        target, kwargs = _split(PruneSettings, kwargs, only=TARGET_KEYS)
        distill = None
        stray = [k for k in kwargs if k in DistillSettings.field_names()]
        if stray and not settings.sparse_distill:
            raise CompressError(f"{stray[0]} (--{stray[0].replace('_', '-')}) is a distillation setting; add "
                                "sparse_distill=True (--sparse-distill) to distil while training sparse")
        if settings.sparse_distill:
            if self.weights is None:
                raise CompressError("sparse_distill distils from the model's own checkpoint; load a trained .pt "
                                    "(PruneModel('model.pt')) or save it first")
            distill, kwargs = _split(DistillSettings, kwargs)
        out, args = self._prepare(save_dir, kwargs, (SparseSettings, PruneSettings, DistillSettings))
        teacher = self._teacher(self.weights, distill, args["imgsz"]) if distill else None
        return self._trained(sparse_train(self.model, self.data, out, settings, target, args["imgsz"], args, resume,
                                          resume, teacher=teacher), out)

    def prune(self, save_dir: str | Path = "weights/prune.pt", **settings: Any) -> PruneResult:
        """Remove channels with DepGraph (the head's output convs kept) and save the pruned checkpoint.

        Settings (``PruneSettings``): ``factor`` or ``speed_up`` (default: 2x fewer GFLOPs), ``importance``
        (``bn_scale``, ``l2``, ``group_norm``), ``global_pruning``, ``round_to``, ``head_ratio`` (unset: the detection
        head's inner convs are pruned like any other layer; 0: the head is kept whole).

        Returns:
            Params and GFLOPs (at the model's image size) before and after, and the time taken.
        """
        from yolo_compress.prune import PruneSettings
        from yolo_compress.prune.stage import prune_to

        config, _ = _split(PruneSettings, settings, rest_allowed=False)
        out = output_path(save_dir, (self.weights,))
        self.workspace.model, result = prune_to(self.model, self.imgsz, config, out)
        self.workspace.weights = out
        return result

    def distill(self, teacher: str | Path, save_dir: str | Path = "weights/distill.pt", resume: bool = False,
                **kwargs: Any) -> Path:
        """Fine-tune the current (pruned) model with a teacher checkpoint (``teacher``: its ``.pt`` path).

        Settings (``DistillSettings``): ``loss`` (``"cwd"``, ``"mgd"``, ``"kd"``, ``"cwd+kd"``, ``"mgd+kd"``),
        ``distill_layers``, ``distill_weight``, ``kd_weight``, ``kd_tau``, ``distill_warmup``, ... Other keywords go
        to Ultralytics.
        """
        from yolo_compress.distill import DistillSettings
        from yolo_compress.distill.stage import distill

        settings, kwargs = _split(DistillSettings, kwargs)
        out, args = self._prepare(save_dir, kwargs, (DistillSettings,), extra_inputs=(Path(teacher),))
        checked = self._teacher(teacher, settings, args["imgsz"])
        return self._trained(distill(self.model, checked, self.data, out, args, resume, resume), out)

    def compare(self, weights: list[str | Path], out_dir: str | Path = "weights", names: list[str] | None = None,
                rounds: int = 30, threads: int | None = None) -> list[Row]:
        """Params, GFLOPs, accuracy, size and CPU latency of each model (first row = reference): ``.pt`` in PyTorch,
        ``.onnx`` in ONNX Runtime, OpenVINO folders in OpenVINO, each on ``threads`` threads (default: torch's).

        Writes ``compare.md``, ``compare.csv`` and ``compare.png`` to ``out_dir``.
        """
        from yolo_compress.report.compare import compare_files

        return compare_files(weights, self.data, self.imgsz, out_dir, names, rounds, threads)

    def export(self, format: str = "onnx", **kwargs: Any) -> Path:
        """Export the current weights with Ultralytics (ONNX, TorchScript or OpenVINO, at the model's image size)."""
        from yolo_compress.deploy.export import export

        if self.weights is None:
            raise CompressError("nothing saved to export yet; train or prune first (or load a .pt)")
        check_beside_weights(self.weights, "export")
        return export(self.weights, format, kwargs.pop("imgsz", self.imgsz), **kwargs)

    def quantize(self, format: str = "onnx", resume: bool = False, **settings: Any) -> Path:
        """INT8 model of the current weights for ONNX Runtime (``format="onnx"``: ``*-int8.onnx``) or OpenVINO
        (``"openvino"``: ``*_int8_openvino_model/``), next to the weights; the fp32 export is made first when there
        is none newer than the weights.

        Settings (``QuantizeSettings``): ``quantize_mode`` (``static``: calibrated on ``calibration`` train images;
        ``dynamic``, ONNX only; ``accuracy``, OpenVINO only: within ``max_drop`` mAP50-95; ``qat``, OpenVINO only:
        ``qat_epochs`` of fake-quantized distillation from the current weights, which also takes Ultralytics
        train keywords such as ``batch``, ``device``, ``seed``, and ``resume``), ``float_head``, ``float_layers``.
        """
        from yolo_compress.deploy.quantize import check_quantizable, quantize_weights
        from yolo_compress.deploy.settings import QuantizeSettings
        from yolo_compress.training import check_train_args

        config, train = _split(QuantizeSettings, settings, rest_allowed=True)
        if config.quantize_mode != "qat":
            _split(QuantizeSettings, train, rest_allowed=False)  # names the unknown keyword
        check_train_args(train)
        check_quantizable(format, config.quantize_mode, self.data.task, config.float_head)
        if self.weights is None:
            raise CompressError("nothing saved to quantize yet; train or prune first (or load a .pt)")
        check_beside_weights(self.weights, "quantize")
        return quantize_weights(self.weights, format, self.data, self.imgsz, config, train=train, resume=resume)

    def apply(self, stage: str, out: str | Path = "weights", resume: bool = False,
              stages: Sequence[type[Stage]] | None = None, **keys: Any) -> dict[str, Path]:
        """Run one stage of ``stages`` (default: the pipeline's) on the current weights, as the pipeline runs it:
        the entry of a stage that has no method of its own (``Stage.command.method == "apply"``).

        ``keys`` are pipeline config keys (the stage's settings, ``epochs``, ``batch``, ``device``, ``train_args``,
        ...); earlier stages' weights are the current ones. Its outputs go to ``out`` as the pipeline names them
        (``<out>/<stage>.pt``); a stage that makes weights makes them the current model.

        Returns:
            The stage's outputs by role.
        """
        from yolo_compress.config import load_config
        from yolo_compress.plan import make_plan
        from yolo_compress.stage import RunContext
        from yolo_compress.stages import STAGES

        by_name = {cls.name: cls for cls in stages or STAGES}
        if stage not in by_name:
            raise CompressError(f"no stage {stage!r}; the stages are {', '.join(by_name)}")
        if self.weights is None:
            raise CompressError(f"the {stage} stage reads a checkpoint; train or save the model first")
        config = load_config(stages=tuple(by_name.values()), weights=str(self.weights), out=str(out), **keys)
        folder = writable_dir(out)
        runner = by_name[stage](RunContext(config, make_plan((by_name[stage],), config), folder, self.data, self.imgsz))
        if runner.makes_weights:
            output_path(runner.outputs()["weights"], (self.weights,), flag="out")  # never over its input
        runner.check(self.model)
        runner.run(runner.sources(dict.fromkeys(by_name, self.weights)), resume)
        outputs = runner.outputs()
        if runner.makes_weights:
            self.workspace.model, self.workspace.weights = load_model(outputs["weights"]), outputs["weights"]
        return outputs

    # ---- relations ---------------------------------------------------------------------------------------------
    def predict(self, source: str | Path, save: bool = True, save_dir: str | Path = "runs/predict",
                **kwargs: Any) -> list[dict[str, Any]]:
        """Detect boxes, infer each box's parent (smallest containing box) and draw both when ``save``.

        Returns one dict per image: ``path``, ``boxes`` (xyxy pixels), ``classes``, ``scores``, ``parent_ids``.
        """
        from yolo_compress.relations import predict_relations

        check_source(source)
        if save:
            check_save_dir(save_dir)
        kwargs.setdefault("imgsz", self.imgsz)
        with self._as_yolo() as yolo:
            return predict_relations(yolo, source, save_dir=save_dir if save else None, **kwargs)

    def evaluate(self, data_path: str | Path | None = None, **kwargs: Any) -> dict[str, float]:
        """Relation precision, recall and F1 on ``images/val`` + ``parents/val`` (default: the model's dataset)."""
        from yolo_compress.relations import evaluate_relations

        kwargs.setdefault("imgsz", self.imgsz)
        with self._as_yolo() as yolo:
            return evaluate_relations(yolo, data_path or self.data.path, **kwargs)

    # ---- measurements ------------------------------------------------------------------------------------------
    def val(self, **kwargs: Any) -> dict[str, float]:
        """Validate the current model (float32) on the val split: mAP50, mAP50-95, ... or top1, top5."""
        return validate(self.model, self.data, kwargs.pop("imgsz", self.imgsz), **kwargs)

    def info(self, imgsz: int | None = None) -> dict[str, float]:
        """Parameter count and GFLOPs of the current model at ``imgsz`` (default: the model's image size)."""
        return model_size(self.model, imgsz or self.imgsz)

    # ---- helpers -----------------------------------------------------------------------------------------------
    def _prepare(self, save_dir: str | Path, kwargs: dict[str, Any], settings: tuple[type[Settings], ...] = (),
                 extra_inputs: tuple[Path, ...] = ()) -> tuple[Path, dict[str, Any]]:
        """Check the output path and the Ultralytics keywords (the stage's ``settings`` already taken out: a name of
        theirs left here belongs to a stage not in use; they are suggested for near misses); build the train
        arguments."""
        from yolo_compress.stage import RunSettings

        imgsz = kwargs.pop("imgsz", self.imgsz)
        lr = RunSettings(recovery_lr=kwargs.pop("recovery_lr", RunSettings.recovery_lr)).recovery_lr  # checked
        check_train_values({**kwargs, "imgsz": imgsz})
        check_train_args(kwargs, hints=tuple(k for cls in settings for k in cls.field_names()))
        out = output_path(save_dir, (self.weights, *extra_inputs))
        check_disk(out.parent)
        recovery = recovery_args(lr, self.task, kwargs, trained=self.weights is not None)
        return out, train_args({**kwargs, **recovery}, self.data, imgsz, out)

    def _teacher(self, path: str | Path, settings: DistillSettings, imgsz: int) -> Teacher:
        """The teacher at ``path``, checked against the data at the image size the stage trains at."""
        from yolo_compress.distill.teacher import Teacher

        return Teacher.checked(path, self.data.task, self.data.nc, settings, imgsz)

    def _trained(self, fit: Any, out: Path) -> Path:
        self.workspace.model, self.workspace.weights = fit.model, out
        self.metrics, self.run_dir = fit.metrics, fit.run_dir
        return out

    @contextlib.contextmanager
    def _as_yolo(self) -> Iterator[Any]:
        """An Ultralytics ``YOLO`` wrapping the current model, through a temporary checkpoint."""
        from ultralytics import YOLO

        with tempfile.TemporaryDirectory() as tmp:
            yield YOLO(save_checkpoint(self.model, Path(tmp) / "model.pt"))


def _split(cls: type[S], kwargs: dict[str, Any], rest_allowed: bool = True,
           only: tuple[str, ...] | None = None) -> tuple[S, dict[str, Any]]:
    """Settings of ``cls`` from the keywords that name its fields (or the ``only`` ones); the rest returned.

    Raises:
        CompressError: a bad settings value, or (without ``rest_allowed``) a keyword that is no setting.
    """
    from yolo_compress.settings import check_known

    names = list(only or cls.field_names())
    if not rest_allowed:
        check_known(kwargs, names, what=f"{cls.__name__} key")
    mine = {k: v for k, v in kwargs.items() if k in names}
    return cls.from_mapping(mine), {k: v for k, v in kwargs.items() if k not in mine}

