"""Stages 0 and 3: training with the architecture kept (baseline, fine-tuning). The trainer is ``patches.trainers``."""
