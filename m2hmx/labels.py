"""Label spaces (class names, official colours, object/structure split), numpy only.

The bundled spaces live in ``assets/labelspaces/<name>.json``: ``scannet20`` (ScanNet v2 benchmark
classes, train ids 0..19) and ``nyu40`` (NYUDv2 40 classes, train id = nyu40 id - 1). Pixels that
belong to no class carry ``ignore_index`` (255). This module is shared by ``m2hmx`` and ``mapping``
and must stay free of torch and Qt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from m2hmx import ASSETS_DIR

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelSpace:
    name: str
    names: tuple[str, ...]
    colors: np.ndarray  # (C, 3) uint8 RGB
    nyu40_ids: tuple[int, ...]
    kinds: tuple[str, ...]  # "structure" | "object" | "stuff" per class
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k == "object")

    @property
    def structure_ids(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k == "structure")

    def index(self, name: str) -> int:
        return self.names.index(name)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) ids -> (H, W, 3) uint8 RGB; ignored or out-of-range ids are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = self.colors
        return lut[np.asarray(labels).astype(np.uint8)]

    def from_nyu40(self, nyu40: np.ndarray) -> np.ndarray:
        """Map nyu40 ids (1..40, 0 = unlabelled) to this space's train ids (ignore elsewhere)."""
        lut = np.full(256, self.ignore_index, np.uint8)
        for train_id, nid in enumerate(self.nyu40_ids):
            lut[nid] = train_id
        return lut[np.asarray(nyu40).astype(np.uint8)]


@lru_cache(maxsize=None)
def load_label_space(name_or_path: str = "scannet20") -> LabelSpace:
    """Load a bundled label space by name, or any JSON file in the same layout."""
    path = Path(name_or_path)
    if not path.suffix:
        path = ASSETS_DIR / "labelspaces" / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (ASSETS_DIR / "labelspaces").glob("*.json"))
        raise FileNotFoundError(f"label space '{name_or_path}' not found (bundled: {', '.join(known)})")
    spec = json.loads(path.read_text())
    classes = sorted(spec["classes"], key=lambda c: c["id"])
    return LabelSpace(
        name=spec["name"],
        names=tuple(c["name"] for c in classes),
        colors=np.array([c["color"] for c in classes], np.uint8),
        nyu40_ids=tuple(int(c["nyu40_id"]) for c in classes),
        kinds=tuple(c["kind"] for c in classes),
        ignore_index=int(spec.get("ignore_index", IGNORE_INDEX)),
    )


def choose_label_space(requested: str | None = None, model: LabelSpace | None = None,
                       source: LabelSpace | None = None) -> tuple[LabelSpace, str]:
    """The label space a run colours and maps with, and a warning ("" if none): the ``requested`` one (a name
    or JSON file), else the model's, else the source's, else scannet20. A requested space whose class count
    differs from the model's gives way to the model's, since the network's class ids index it."""
    space = (load_label_space(requested) if requested else None) or model or source or load_label_space("scannet20")
    if model is not None and space.num_classes != model.num_classes:
        return model, (f"label space {space.name} has {space.num_classes} classes, the model {model.num_classes}: "
                       f"using the model's ({model.name})")
    return space, ""
