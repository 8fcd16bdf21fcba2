"""Readers for RGB-D datasets; each is a FrameSource yielding ``m2hmx.data.Frame``."""
