"""The `baseline` and `finetune` stages: training with the architecture kept. The trainer is ``patches.trainers``."""
