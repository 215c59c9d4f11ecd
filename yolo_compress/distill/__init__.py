"""Feature distillation: record features with hooks, adapt channels, compose losses."""
