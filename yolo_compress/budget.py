"""The training budget of a pipeline run: how many epochs each training stage gets, and where in one schedule.

The budget (``budget``, default 20 epochs) counts the training after the baseline that makes the final weights:
the training stages of its lineage (e.g. sparse -> prune -> distill). Each gets its ``<name>_epochs`` when set,
else a share of what is left (``Stage.share``); a stage switched off hands its epochs to the others, so recipes
with and without a stage cost the same. A training stage outside the lineage (fine-tuning next to distillation,
the reference it must beat) gets the epochs and schedule segment of the lineage stage that starts from the same
weights. ``epochs`` (every stage) overrides all of this, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from yolo_compress.errors import CompressError
from yolo_compress.stage import PipelineConfig, Segment, Stage, TrainingStage


def lineage(stages: Sequence[Stage]) -> list[Stage]:
    """The running stages that lead to the final weights (the last weight-making stage), first to last."""
    by_name = {s.name: s for s in stages}
    running = set(by_name)
    makers = [s for s in stages if s.makes_weights]
    if not makers:
        return []
    chain, stage = [], makers[-1]
    while stage is not None:
        chain.append(stage)
        source = stage.starts_from(running)
        stage = by_name.get(source) if source else None
    return chain[::-1]


def in_budget(stage: Stage) -> bool:
    return isinstance(stage, TrainingStage) and stage.default_epochs is None


def plan_segments(stages: Sequence[Stage], config: PipelineConfig) -> dict[str, Segment]:
    """Epochs and schedule segment of every running training stage.

    Raises:
        CompressError: the budget leaves a stage less than one epoch.
    """
    run = config.run
    chain = [s for s in lineage(stages) if in_budget(s)]
    fixed = {s.name: run.epochs or config.epochs.get(s.name) for s in chain}
    free = [s for s in chain if not fixed[s.name]]
    left = run.budget - sum(v for v in fixed.values() if v)
    if free:
        if left < len(free):
            names = ", ".join(f"{s.name}_epochs" for s in chain if fixed[s.name])
            raise CompressError(f"budget {run.budget} leaves {max(left, 0)} epochs for {len(free)} stages "
                                f"({', '.join(s.name for s in free)}); raise budget or lower {names}")
        fixed.update(_split(left, {s.name: s.share for s in free}))
    segments, start, total = {}, 0, sum(fixed.values())
    for s in chain:
        segments[s.name] = Segment(start, int(fixed[s.name]), total)
        start += int(fixed[s.name])
    running = {s.name for s in stages}
    for s in stages:
        if not isinstance(s, TrainingStage) or s.name in segments:
            continue
        if s.default_epochs is not None:  # the baseline: outside the budget
            epochs = run.epochs or config.epochs.get(s.name) or s.default_epochs
            segments[s.name] = Segment(0, epochs, epochs)
            continue
        twin = next((t for t in chain if t.starts_from(running) == s.starts_from(running)), None)
        epochs = run.epochs or config.epochs.get(s.name)
        if twin is not None and epochs in (None, segments[twin.name].epochs):
            segments[s.name] = segments[twin.name]
        else:
            epochs = epochs or run.budget
            segments[s.name] = Segment(0, epochs, epochs)
    return segments


def budget_used(segments: dict[str, Segment], stages: Sequence[Stage]) -> dict[str, int]:
    """Epochs per training stage of the final weights' lineage (what a recipe costs)."""
    return {s.name: segments[s.name].epochs for s in lineage(stages) if in_budget(s)}


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
