"""M2H-MX: monocular multi-task dense prediction (depth, semantics, normals, edges).

Importing the package is cheap and imports no torch; the network lives in ``m2hmx.model`` and the
deployment API in ``m2hmx.predictor``.
"""
import os
from pathlib import Path

# Idle OpenMP threads (torch's and numba's) sleep instead of spinning: in the viewer, capture, inference,
# GUI and mapping share the cores. m2hmx-train, which has the machine to itself, picks ACTIVE unless the
# user chose. Must be set before torch is imported, so every entry point imports m2hmx first.
OMP_POLICY_FROM_USER = "OMP_WAIT_POLICY" in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numba would try TBB first (too old in the wheels here: a warning) and then take OpenMP anyway.
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

__version__ = "0.1.0"

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


class M2HMXError(Exception):
    """The root of the package's exceptions (each a one-line message naming the file or field): catch this to
    catch any of them."""
