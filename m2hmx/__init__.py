"""M2H-MX: monocular multi-task dense prediction (depth, semantics, normals, edges).

Importing the package is cheap and imports no torch; the network lives in ``m2hmx.model`` and the
deployment API in ``m2hmx.predictor``.
"""
from pathlib import Path

__version__ = "0.1.0"

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
