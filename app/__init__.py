"""The pipeline that wires m2hmx to mapping, the headless m2hmx-map and the Qt viewer."""
import m2hmx  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
