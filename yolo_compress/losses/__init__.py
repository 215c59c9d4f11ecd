"""Distillation losses: pure functions of student and teacher tensors."""
