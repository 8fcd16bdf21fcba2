"""M2H-MX: monocular multi-task dense prediction (depth, semantics, normals, edges).

Importing the package is cheap and imports no torch; the network lives in ``m2hmx.model`` and the
deployment API in ``m2hmx.predictor``.
"""
import os
from pathlib import Path

# torch and numba each bring an OpenMP runtime; with the default active wait their idle threads spin
# against each other and a forward pass slows several-fold on a 2-core machine. Must be set before
# torch is imported, so every entry point imports m2hmx first.
OMP_POLICY_FROM_USER = "OMP_WAIT_POLICY" in os.environ  # m2hmx-train picks ACTIVE unless the user chose
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numba would try TBB first (too old in the wheels here: a warning) and then take OpenMP anyway.
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

__version__ = "0.1.0"

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
