"""Frames, synthetic scenes, dataset readers and torch datasets (no Qt)."""
