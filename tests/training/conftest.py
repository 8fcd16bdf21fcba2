"""Passive OpenMP waiting (see m2hmx/cli/train.py): effective when torch has not been imported yet."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
