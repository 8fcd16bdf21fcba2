"""Evaluation metrics of the multi-task NYUDv2 protocol (numpy only; accumulate frame by frame).

* Semantics: confusion matrix over the label space's classes, ignoring 255; IoU per class, mIoU over
  the classes that occur (in GT or prediction; as mmsegmentation's ``nanmean``), pixel accuracy.
* Depth (Eigen et al. 2014, as BTS/AdaBins ``compute_errors``): per frame over GT within
  ``(min_depth, max_depth)`` with the prediction clamped to that range, then averaged over frames:
  RMSE, AbsRel, log10, delta < 1.25^k. Also the per-frame scale ``median(pred / gt)`` whose std over
  a sequence's frames tells whether the depth is scale-consistent (what RGB-D tracking needs).
* Normals: angular error in degrees over all valid pixels of all frames (MTI-Net ``eval_normals``):
  mean, median, % within 11.25 / 22.5 / 30 deg.
* Edges: an ODS-like F-score: one threshold for the whole set chosen from fixed thresholds; a
  predicted edge pixel counts as correct when a GT edge lies within a tolerance (disk dilation), and a
  GT pixel as recalled when a predicted edge lies within it. This is NOT the official SEISM/BSDS
  benchmark (no thinning, no one-to-one matching), so its numbers read higher than published odsF.

Each meter's ``merge`` adds another's frames, so that several sequences make one test set: the NYUDv2 protocol
pools one confusion matrix over the whole set, not a mean of per-scene mIoUs.
"""
from __future__ import annotations

import cv2
import numpy as np

IGNORE_INDEX = 255
EDGE_THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


class SegmentationMeter:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), np.int64)  # rows: GT, cols: prediction

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        gt = np.asarray(gt).ravel().astype(np.int64)
        pred = np.asarray(pred).ravel().astype(np.int64)
        keep = (gt != self.ignore_index) & (gt < self.num_classes)
        gt, pred = gt[keep], np.clip(pred[keep], 0, self.num_classes - 1)
        self.confusion += np.bincount(gt * self.num_classes + pred,
                                      minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def merge(self, other: "SegmentationMeter") -> None:
        self.confusion += other.confusion

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both GT and prediction."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def result(self) -> dict:
        iou = self.iou()
        total = self.confusion.sum()
        return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
                "pixel_acc": float(np.diag(self.confusion).sum() / total) if total else float("nan"),
                "iou_per_class": [None if np.isnan(v) else float(v) for v in iou]}


class DepthMeter:
    """Frames of one sequence; after ``merge`` the scale std is taken within each sequence and averaged over them
    (frame-to-frame consistency, not the spread between scenes)."""

    def __init__(self, min_depth: float, max_depth: float):
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.rows: list[tuple[float, ...]] = []
        self.sequence: list[int] = []  # per row

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        gt = np.asarray(gt, np.float64)
        valid = (gt > self.min_depth) & (gt < self.max_depth)
        if not valid.any():
            return
        p = np.clip(np.asarray(pred, np.float64)[valid], self.min_depth, self.max_depth)
        g = gt[valid]
        ratio = np.maximum(p / g, g / p)
        self.rows.append((
            float(np.sqrt(np.mean((p - g) ** 2))),
            float(np.mean(np.abs(p - g) / g)),
            float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
            *(float(np.mean(ratio < 1.25 ** k)) for k in (1, 2, 3)),
            float(np.median(p / g)),
        ))
        self.sequence.append(0)

    def merge(self, other: "DepthMeter") -> None:
        first = max(self.sequence, default=-1) + 1
        self.rows += other.rows
        self.sequence += [first + k for k in other.sequence]

    def result(self) -> dict:
        if not self.rows:
            return {}
        a = np.asarray(self.rows)
        mean = a.mean(0)
        scales, sequence = a[:, 6], np.asarray(self.sequence)
        std = np.mean([scales[sequence == k].std() for k in np.unique(sequence)])
        return {"rmse": float(mean[0]), "abs_rel": float(mean[1]), "log10": float(mean[2]),
                "delta1": float(mean[3]), "delta2": float(mean[4]), "delta3": float(mean[5]),
                "scale_median_mean": float(scales.mean()), "scale_median_std": float(std),
                "frames": len(self.rows)}


class NormalsMeter:
    """Angular errors are binned at 0.01 deg, so the median is exact to 0.01 deg at any set size."""

    BIN = 0.01

    def __init__(self):
        self.hist = np.zeros(int(180 / self.BIN) + 1, np.int64)
        self.sum = 0.0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        gt = np.asarray(gt, np.float64).reshape(-1, 3)
        pred = np.asarray(pred, np.float64).reshape(-1, 3)
        valid = np.linalg.norm(gt, axis=1) > 0.5
        if not valid.any():
            return
        g = gt[valid] / np.linalg.norm(gt[valid], axis=1, keepdims=True)
        p = pred[valid] / np.maximum(np.linalg.norm(pred[valid], axis=1, keepdims=True), 1e-12)
        err = np.degrees(np.arccos(np.clip((g * p).sum(1), -1.0, 1.0)))
        self.sum += float(err.sum())
        self.hist += np.bincount(np.round(err / self.BIN).astype(np.int64), minlength=self.hist.size)

    def merge(self, other: "NormalsMeter") -> None:
        self.hist += other.hist
        self.sum += other.sum

    def result(self) -> dict:
        n = self.hist.sum()
        if n == 0:
            return {}
        cdf = np.cumsum(self.hist)
        centres = np.arange(self.hist.size) * self.BIN
        within = {f"within_{t}": float(self.hist[centres <= t + 1e-9].sum() / n) for t in (11.25, 22.5, 30)}
        return {"mean": self.sum / n, "median": float(centres[np.searchsorted(cdf, (n + 1) / 2)]), **within}


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class EdgeMeter:
    """ODS-like F over fixed thresholds; ``tolerance`` in pixels, default 0.0075 x image diagonal
    (the BSDS ``maxDist``), at least 1."""

    def __init__(self, thresholds: np.ndarray = EDGE_THRESHOLDS, tolerance: int | None = None):
        self.thresholds = np.asarray(thresholds, np.float64)
        self.tolerance = tolerance
        # per threshold: matched predictions, predictions, recalled GT, GT
        self.counts = np.zeros((len(self.thresholds), 4), np.int64)

    def update(self, prob: np.ndarray, gt: np.ndarray) -> None:
        gt = np.asarray(gt) == 1
        h, w = gt.shape
        radius = self.tolerance if self.tolerance is not None else max(1, round(0.0075 * np.hypot(h, w)))
        kernel = _disk(radius)
        gt_near = cv2.dilate(gt.astype(np.uint8), kernel) > 0
        n_gt = int(gt.sum())
        for i, t in enumerate(self.thresholds):
            pred = np.asarray(prob) >= t
            pred_near = cv2.dilate(pred.astype(np.uint8), kernel) > 0
            self.counts[i] += (int((pred & gt_near).sum()), int(pred.sum()), int((gt & pred_near).sum()), n_gt)

    def merge(self, other: "EdgeMeter") -> None:
        self.counts += other.counts  # rows are thresholds: both meters must use the same ones

    def result(self) -> dict:
        c = self.counts.astype(np.float64)
        if c[:, 3].sum() == 0:
            return {}
        precision = np.divide(c[:, 0], c[:, 1], out=np.zeros(len(c)), where=c[:, 1] > 0)
        recall = np.divide(c[:, 2], c[:, 3], out=np.zeros(len(c)), where=c[:, 3] > 0)
        f = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(c)), where=precision + recall > 0)
        best = int(np.argmax(f))
        return {"f_ods": float(f[best]), "threshold": float(self.thresholds[best]),
                "precision": float(precision[best]), "recall": float(recall[best])}
