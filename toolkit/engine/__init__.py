"""The engine: one trainer for every family, with checkpoints, distributed wrapping and metrics."""
