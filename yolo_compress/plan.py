"""The plan of a pipeline run, made from its configuration alone before any stage is built.

Which stages run, the stage of the final weights, and the training budget (``budget``, default 20 epochs): the
training after the baseline that makes the final weights, i.e. the training stages of its lineage (e.g. sparse ->
prune -> distill). Each gets its ``<name>_epochs`` when set, else a share of what is left (``Stage.share``); a stage
switched off hands its epochs to the others, so recipes with and without a stage cost the same. A training stage
outside the lineage (fine-tuning next to distillation, the reference it must beat) gets the epochs and schedule
segment of the lineage stage that starts from the same weights. ``epochs`` (every stage) overrides all of this.
"""

from __future__ import annotations

from collections.abc import Sequence

from yolo_compress.errors import CompressError
from yolo_compress.stage import PipelineConfig, Plan, Segment, Stage, TrainingStage

Stages = Sequence[type[Stage]]


def make_plan(stages: Stages, config: PipelineConfig) -> Plan:
    """What ``config`` runs of ``stages`` and how long each training stage trains.

    Raises:
        CompressError: a budget too small for the stages that share it.
    """
    running = [cls for cls in stages if cls.enabled(config)]
    chain = lineage(running, config)
    segments = plan_segments(running, config)
    return Plan(running=tuple(cls.name for cls in running), segments=segments,
                final=chain[-1].name if chain else "",
                budget={cls.name: segments[cls.name].epochs for cls in chain if in_budget(cls)})


def lineage(running: Stages, config: PipelineConfig) -> list[type[Stage]]:
    """The running stages that lead to the final weights (the last weight-making stage), first to last."""
    by_name = {cls.name: cls for cls in running}
    makers = [cls for cls in running if cls.makes_weights]
    if not makers:
        return []
    chain, stage = [], makers[-1]
    while stage is not None:
        chain.append(stage)
        source = stage.starts_from(config, set(by_name))
        stage = by_name.get(source) if source else None
    return chain[::-1]


def in_budget(cls: type[Stage]) -> bool:
    return issubclass(cls, TrainingStage) and cls.default_epochs is None


def plan_segments(running: Stages, config: PipelineConfig) -> dict[str, Segment]:
    """Epochs and schedule segment of every running training stage.

    Raises:
        CompressError: the budget leaves a stage less than one epoch.
    """
    run = config.run
    chain = [cls for cls in lineage(running, config) if in_budget(cls)]
    fixed = {cls.name: run.epochs or config.epochs.get(cls.name) for cls in chain}
    free = [cls for cls in chain if not fixed[cls.name]]
    left = run.budget - sum(v for v in fixed.values() if v)
    if free:
        if left < len(free):
            names = ", ".join(f"{cls.name}_epochs" for cls in chain if fixed[cls.name])
            raise CompressError(f"budget {run.budget} leaves {max(left, 0)} epochs for {len(free)} stages "
                                f"({', '.join(cls.name for cls in free)}); raise budget or lower {names}")
        fixed.update(_split(left, {cls.name: cls.share for cls in free}))
    segments, start, total = {}, 0, sum(fixed.values())
    for cls in chain:
        segments[cls.name] = Segment(start, int(fixed[cls.name]), total)
        start += int(fixed[cls.name])
    names = {cls.name for cls in running}
    for cls in running:
        if issubclass(cls, TrainingStage) and cls.name not in segments:
            segments[cls.name] = _outside_budget(cls, chain, segments, names, config)
    return segments


def _outside_budget(cls: type[TrainingStage], chain: Stages, segments: dict[str, Segment], running: set[str],
                    config: PipelineConfig) -> Segment:
    """The baseline's own epochs, or a reference's: those of its twin in the lineage (same start weights)."""
    run = config.run
    epochs = run.epochs or config.epochs.get(cls.name)
    if cls.default_epochs is not None:  # the baseline: outside the budget
        epochs = epochs or cls.default_epochs
        return Segment(0, epochs, epochs)
    start = cls.starts_from(config, running)
    twin = next((t for t in chain if t.starts_from(config, running) == start), None)
    if twin is not None and epochs in (None, segments[twin.name].epochs):
        return segments[twin.name]
    epochs = epochs or run.budget
    return Segment(0, epochs, epochs)


def _split(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` epochs split by ``shares``, at least one each, largest remainders rounded up."""
    weight = sum(shares.values())
    exact = {k: total * v / weight for k, v in shares.items()}
    out = {k: max(1, int(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True):
        if sum(out.values()) >= total:
            break
        out[k] += 1
    while sum(out.values()) > total:
        k = max(out, key=lambda k: out[k])
        out[k] -= 1
    return out
