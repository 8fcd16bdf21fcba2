"""Mono-Hydra-style metric-semantic mapping backend (Open3D, scipy, spark-dsg; no torch, no Qt).

``mapping.interface.PerceptionFrame`` in, ``mapping.bridge.MappingBridge`` for tracking, TSDF and class
fusion, ``mapping.scene_graph`` for the 3D scene graph, ``mapping.export`` / ``mapping.trajectory`` for files.
"""


class MappingError(Exception):
    """The root of the package's exceptions (each a one-line message): catch this to catch any of them."""
