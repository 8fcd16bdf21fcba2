"""Metrics against confusion matrices and errors computed by hand."""
import math

import numpy as np
import pytest

from m2hmx import metrics


def test_segmentation_confusion_iou_and_accuracy():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]], np.uint8)
    m = metrics.SegmentationMeter(num_classes=4)
    m.update(pred, gt)
    # rows GT, cols pred: 0->{0,1}, 1->{1,1,1}, 2->{2,0}
    assert m.confusion.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    r = m.result()
    iou = [1 / 3, 3 / 4, 1 / 2]  # class 0: tp1 / (2 gt + 2 pred - 1); class 1: 3/(3+4-3); class 2: 1/2
    assert r["iou_per_class"][:3] == pytest.approx(iou)
    assert r["iou_per_class"][3] is None  # absent everywhere: excluded from the mean
    assert r["miou"] == pytest.approx(np.mean(iou))
    assert r["pixel_acc"] == pytest.approx(5 / 7)


def test_depth_errors_per_frame_then_averaged_and_scale():
    m = metrics.DepthMeter(0.1, 10.0)
    m.update(np.array([2.0, 2.0, 5.0, 1.0]), np.array([1.0, 2.0, 0.0, 20.0]))  # only first two valid
    m.update(np.array([1.0]), np.array([1.0]))
    r = m.result()
    rmse_a = math.sqrt((1 + 0) / 2)
    assert r["rmse"] == pytest.approx((rmse_a + 0) / 2)
    assert r["abs_rel"] == pytest.approx((0.5 + 0) / 2)
    assert r["log10"] == pytest.approx((math.log10(2) / 2) / 2)
    assert r["delta1"] == pytest.approx((0.5 + 1) / 2)
    assert r["delta3"] == pytest.approx((0.5 + 1) / 2)  # ratio 2 > 1.25^3 = 1.953
    # per-frame median(pred/gt): 1.5 and 1.0
    assert r["scale_median_mean"] == pytest.approx(1.25)
    assert r["scale_median_std"] == pytest.approx(0.25)


def test_merged_meters_pool_the_confusion_and_keep_the_scale_std_within_each_sequence():
    a, b = metrics.SegmentationMeter(num_classes=3), metrics.SegmentationMeter(num_classes=3)
    a.update(np.array([0, 0, 0, 2]), np.array([0, 0, 0, 0]))  # one pixel of an absent class 2
    b.update(np.array([0, 2, 2, 2]), np.array([0, 2, 2, 2]))
    assert a.result()["miou"] == pytest.approx((3 / 4 + 0) / 2)  # class 2 scores 0 in a scene without it
    assert b.result()["miou"] == pytest.approx(1.0)
    a.merge(b)
    assert a.confusion.tolist() == [[4, 0, 1], [0, 0, 0], [0, 0, 3]]
    assert a.result()["miou"] == pytest.approx((4 / 5 + 3 / 4) / 2)  # 0.775, not the scenes' mean 0.6875

    s, t = metrics.DepthMeter(0.1, 10.0), metrics.DepthMeter(0.1, 10.0)
    for scale in (1.0, 1.2):
        s.update(np.array([scale]), np.array([1.0]))
    for _ in range(2):
        t.update(np.array([2.0]), np.array([1.0]))
    s.merge(t)
    r = s.result()
    assert r["frames"] == 4 and r["scale_median_mean"] == pytest.approx(1.55)
    assert r["scale_median_std"] == pytest.approx((0.1 + 0.0) / 2)  # not the std of all four (0.46)

    n, m = metrics.NormalsMeter(), metrics.NormalsMeter()
    n.update(np.array([[0, 0, -1.0]]), np.array([[0, 0, -1.0]]))
    m.update(np.array([[1.0, 0, 0]]), np.array([[0, 0, -1.0]]))
    n.merge(m)
    assert n.result()["mean"] == pytest.approx(45.0, abs=1e-3)

    e, f = (metrics.EdgeMeter(thresholds=np.array([0.5]), tolerance=0) for _ in range(2))
    e.update(np.array([[1.0, 0.0]]), np.array([[1, 0]]))  # P 1, R 1
    f.update(np.array([[1.0, 1.0]]), np.array([[0, 1]]))  # P 1/2, R 1
    e.merge(f)
    assert e.result()["precision"] == pytest.approx(2 / 3) and e.result()["recall"] == pytest.approx(1.0)


def test_depth_prediction_clamped_to_range():
    m = metrics.DepthMeter(0.5, 10.0)
    m.update(np.array([-3.0]), np.array([1.0]))
    assert m.result()["abs_rel"] == pytest.approx(0.5)


def test_normals_angles():
    gt = np.array([[0, 0, -1], [0, 0, -1], [0, 0, -1], [0, 0, 0]], np.float32)
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    pred = np.array([[0, 0, -1], [0, s, -c], [1, 0, 0], [1, 0, 0]], np.float32)
    m = metrics.NormalsMeter()
    m.update(pred, gt)
    r = m.result()
    assert r["mean"] == pytest.approx((0 + 20 + 90) / 3, abs=1e-3)
    assert r["median"] == pytest.approx(20, abs=0.01)
    assert r["within_11.25"] == pytest.approx(1 / 3)
    assert r["within_22.5"] == pytest.approx(2 / 3)
    assert r["within_30"] == pytest.approx(2 / 3)


def test_edge_f_with_tolerance():
    gt = np.zeros((20, 20), np.uint8)
    gt[:, 10] = 1
    prob = np.zeros((20, 20), np.float32)
    prob[:, 11] = 0.9  # one pixel off: matched within tolerance 1
    prob[0:5, 2] = 0.6  # false positives above threshold 0.6 only
    m = metrics.EdgeMeter(thresholds=np.array([0.5, 0.7]), tolerance=1)
    m.update(prob, gt)
    r = m.result()
    # t=0.5: P = 20/25, R = 1 -> F = 0.888..; t=0.7: P = R = 1 -> F = 1
    assert r["f_ods"] == pytest.approx(1.0)
    assert r["threshold"] == 0.7
    strict = metrics.EdgeMeter(thresholds=np.array([0.7]), tolerance=0)
    strict.update(prob, gt)
    assert strict.result()["f_ods"] == 0.0
    half = metrics.EdgeMeter(thresholds=np.array([0.5]), tolerance=1)
    half.update(prob, gt)
    assert half.result()["f_ods"] == pytest.approx(2 * 0.8 / 1.8)
