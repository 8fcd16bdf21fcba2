"""Inertial measurements: the validated sample record, the IMU noise model, EuRoC's ``imu0/data.csv`` files and
GTSAM preintegration between two frame times (numpy and gtsam only).

Conventions (docs/design/imu.md): times in seconds on the frames' clock; ``gyro`` rad/s and ``accel`` the specific
force in m/s^2 (about +9.81 along the IMU's up axis at rest), both in the IMU (body) frame; ``body_T_cam`` maps camera
coordinates into the IMU frame (GTSAM's ``body_P_sensor`` with the camera as the sensor).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapping.atomic import atomic_write_text
from mapping.interface import InterfaceError

MAX_GYRO = 35.0  # rad/s (2000 deg/s, the widest range of consumer MEMS gyroscopes)
MAX_ACCEL = 160.0  # m/s^2 (16 g, the widest range of consumer MEMS accelerometers)
MAX_GAP_S = 0.1  # a longer pause between two samples of one stream means samples are missing
EUROC_HEADER = ("#timestamp [ns],w_RS_S_x [rad s^-1],w_RS_S_y [rad s^-1],w_RS_S_z [rad s^-1],"
                "a_RS_S_x [m s^-2],a_RS_S_y [m s^-2],a_RS_S_z [m s^-2]")


class ImuFileError(InterfaceError):
    """Bad IMU data in a file: ``location`` is ``path`` or ``path:line``."""

    def __init__(self, location: str, problem: str):
        self.location, self.problem = location, problem
        super().__init__(f"{location}: {problem}")


def first_violation(t: np.ndarray, gyro: np.ndarray, accel: np.ndarray) -> tuple[int, str] | None:
    """(sample index, problem) of the first sample that breaks the record's rules, or None. Shapes must agree."""
    bad = ~(np.isfinite(t) & np.isfinite(gyro).all(1) & np.isfinite(accel).all(1))
    order = np.flatnonzero(np.diff(t) <= 0) + 1
    g, a = np.linalg.norm(gyro, axis=1), np.linalg.norm(accel, axis=1)
    with np.errstate(invalid="ignore"):
        fast, hard = np.flatnonzero(g >= MAX_GYRO), np.flatnonzero(a >= MAX_ACCEL)
    found = []
    if bad.any():
        i = int(np.argmax(bad))
        found.append((i, "time, gyro or accel is NaN or infinite"))
    if len(order):
        i = int(order[0])
        found.append((i, f"time {t[i]:.9f} s is not after the previous sample's {t[i - 1]:.9f} s "
                         "(times must strictly increase)"))
    if len(fast):
        i = int(fast[0])
        found.append((i, f"|gyro| = {g[i]:.1f} rad/s is beyond the plausible {MAX_GYRO:g} rad/s "
                         "(deg/s given as rad/s?)"))
    if len(hard):
        i = int(hard[0])
        found.append((i, f"|accel| = {a[i]:.1f} m/s^2 is beyond the plausible {MAX_ACCEL:g} m/s^2 "
                         "(g units or mm/s^2 given as m/s^2?)"))
    return min(found) if found else None


def _check_transform(T, what: str) -> np.ndarray:
    T = np.array(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InterfaceError(f"{what} must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 or \
            not np.allclose(T[3], [0, 0, 0, 1]):
        raise InterfaceError(f"{what} is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    return T


@dataclass(frozen=True, eq=False)
class ImuSamples:
    """IMU samples of one stream: ``t`` (N,) s strictly increasing, ``gyro`` (N,3) rad/s, ``accel`` (N,3) m/s^2
    specific force, both in the IMU frame, and ``body_T_cam`` (4,4), the camera's pose in the IMU frame."""

    t: np.ndarray
    gyro: np.ndarray
    accel: np.ndarray
    body_T_cam: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        t = np.array(self.t, np.float64)
        if t.ndim != 1:
            raise InterfaceError(f"IMU times must be a 1-D array, got shape {t.shape}")
        arrays = {"t": t}
        for name in ("gyro", "accel"):
            v = np.array(getattr(self, name), np.float64)
            if v.size == 0 and len(t) == 0:
                v = v.reshape(0, 3)
            if v.shape != (len(t), 3):
                raise InterfaceError(f"IMU {name} must be ({len(t)}, 3) for {len(t)} times, got {v.shape}")
            arrays[name] = v
        arrays["body_T_cam"] = _check_transform(self.body_T_cam, "IMU body_T_cam")
        problem = first_violation(arrays["t"], arrays["gyro"], arrays["accel"])
        if problem is not None:
            raise InterfaceError(f"IMU sample {problem[0]}: {problem[1]}")
        for name, v in arrays.items():
            v.setflags(write=False)
            object.__setattr__(self, name, v)

    @classmethod
    def empty(cls, body_T_cam=None) -> ImuSamples:
        return cls(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)), np.eye(4) if body_T_cam is None else body_T_cam)

    def __len__(self) -> int:
        return len(self.t)

    def __repr__(self) -> str:
        span = f"{self.t[0]:.3f}..{self.t[-1]:.3f} s" if len(self) else "empty"
        return f"ImuSamples({len(self)} samples, {span})"

    def between(self, t0: float, t1: float) -> ImuSamples:
        """The samples with t0 < t <= t1."""
        i0, i1 = np.searchsorted(self.t, [t0, t1], side="right")
        return ImuSamples(self.t[i0:i1], self.gyro[i0:i1], self.accel[i0:i1], self.body_T_cam)

    def concat(self, other: ImuSamples) -> ImuSamples:
        """These samples followed by ``other``'s (same IMU: the extrinsics must agree; times must keep rising)."""
        if not np.allclose(self.body_T_cam, other.body_T_cam, atol=1e-9):
            raise InterfaceError("cannot join IMU samples with different body_T_cam extrinsics")
        return ImuSamples(np.concatenate([self.t, other.t]), np.concatenate([self.gyro, other.gyro]),
                          np.concatenate([self.accel, other.accel]), self.body_T_cam)


def carry_over(dropped, kept):
    """``kept``'s IMU samples preceded by those of a frame ``dropped`` before it was used (None stays None), so that
    a live pipeline that skips a stale frame loses none of the motion in between."""
    if dropped is None or kept is None or len(dropped) == 0:
        return kept
    return dropped.concat(kept)


def gyro_camera_rotation(samples: ImuSamples, times: np.ndarray, cam_rotations: np.ndarray,
                         min_rate: float = 0.05, max_residual: float = 0.3) -> np.ndarray | None:
    """The rotation R (3x3) that takes camera axes into IMU axes, from how the camera turned: the mean gyro over each
    interval between consecutive frames (``times``, camera-to-world ``cam_rotations``) against the camera's own rate
    there, fitted by least squares (Kabsch, scipy's ``align_vectors``) over intervals turning faster than
    ``min_rate`` rad/s. None when fewer than 10 intervals turn that fast or the fit leaves more than
    ``max_residual`` of the gyro's rms unexplained (too little motion, or IMU and poses disagree)."""
    from scipy.spatial.transform import Rotation

    gyro, cam = [], []
    for (t0, R0), (t1, R1) in zip(zip(times, cam_rotations), zip(times[1:], cam_rotations[1:])):
        if not 0 < t1 - t0 <= MAX_GAP_S or not ((samples.t > t0) & (samples.t <= t1)).any():
            continue
        w = Rotation.from_matrix(np.asarray(R0).T @ np.asarray(R1)).as_rotvec() / (t1 - t0)
        if np.linalg.norm(w) > min_rate:  # the gyro's mean over [t0, t1]: trapezoids between the samples
            cuts = np.concatenate([[t0], samples.t[(samples.t > t0) & (samples.t < t1)], [t1]])
            g = np.column_stack([np.interp(cuts, samples.t, samples.gyro[:, k]) for k in range(3)])
            gyro.append(((g[1:] + g[:-1]) / 2 * np.diff(cuts)[:, None]).sum(0) / (t1 - t0))
            cam.append(w)
    if len(gyro) < 10:
        return None
    gyro, cam = np.array(gyro), np.array(cam)
    rot, _ = Rotation.align_vectors(gyro, cam)
    residual = np.sqrt(np.mean(np.sum((gyro - rot.apply(cam)) ** 2, 1)) / np.mean(np.sum(gyro ** 2, 1)))
    return rot.as_matrix() if residual <= max_residual else None


def find_gap(t: np.ndarray, max_gap: float = MAX_GAP_S) -> int | None:
    """Index of the first sample that follows a pause longer than ``max_gap`` seconds (samples missing), or None."""
    gaps = np.flatnonzero(np.diff(t) > max_gap)
    return int(gaps[0]) + 1 if len(gaps) else None


# ---------------------------------------------------------------------------------------------------- noise model

@dataclass(frozen=True)
class ImuNoise:
    """Continuous-time IMU noise figures (Kalibr's / EuRoC's convention) and the sample rate."""

    gyro_noise_density: float  # rad/s/sqrt(Hz)
    accel_noise_density: float  # m/s^2/sqrt(Hz)
    gyro_bias_walk: float  # rad/s^2/sqrt(Hz)
    accel_bias_walk: float  # m/s^3/sqrt(Hz)
    rate_hz: float

    def scaled(self, k: float) -> ImuNoise:
        """The noise figures times ``k`` (same rate)."""
        return ImuNoise(self.gyro_noise_density * k, self.accel_noise_density * k, self.gyro_bias_walk * k,
                        self.accel_bias_walk * k, self.rate_hz)


# RealSense D435i: Bosch BMI055 IMU. White-noise densities from the BMI055 datasheet (Bosch Sensortec,
# BST-BMI055-DS000): gyroscope rate noise density 0.014 deg/s/sqrt(Hz), accelerometer output noise density
# 150 ug/sqrt(Hz). The datasheet gives no bias random walk; we take the figures EuRoC publishes for its
# ADIS16448 (imu0/sensor.yaml: 1.9393e-5 rad/s^2/sqrt(Hz), 3.0e-3 m/s^3/sqrt(Hz)), a conservative stand-in of the
# order Allan-variance fits of such MEMS parts give. Rate: the D435i's 200 Hz gyroscope stream.
D435I = ImuNoise(
    gyro_noise_density=math.radians(0.014),  # 2.44e-4 rad/s/sqrt(Hz)
    accel_noise_density=150e-6 * 9.80665,  # 1.47e-3 m/s^2/sqrt(Hz)
    gyro_bias_walk=1.9393e-5,
    accel_bias_walk=3.0e-3,
    rate_hz=200.0,
)


# ---------------------------------------------------------------------------------------------------- EuRoC files

def read_euroc_csv(path) -> ImuSamples:
    """An EuRoC ``imu0/data.csv`` (ns timestamps, gyro rad/s, accel m/s^2). The extrinsic comes from
    ``../cam0/sensor.yaml`` (``T_BS``, camera to body) when present, else identity. Raises ``ImuFileError``
    naming the file and line of the first bad line or sample (including a pause over ``MAX_GAP_S``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ImuFileError(str(path), "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ImuFileError(str(path), f"cannot read ({e})") from None
    ns, vals, lines = [], [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        try:
            if len(parts) != 7:
                raise ValueError
            ns.append(int(parts[0]))
            vals.append([float(x) for x in parts[1:]])
        except ValueError:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise ImuFileError(f"{path}:{lineno}", "expected 7 comma-separated numbers (timestamp [ns], "
                                                   f"gyro x y z [rad/s], accel x y z [m/s^2]), got '{shown}'") from None
        lines.append(lineno)
    v = np.array(vals, np.float64).reshape(-1, 6)
    t = np.array(ns, np.int64) / 1e9  # division: k/200 s written as ns reads back bit-exactly
    problem = first_violation(t, v[:, :3], v[:, 3:])
    if problem is None and (gap := find_gap(t)) is not None:
        problem = (gap, f"{t[gap] - t[gap - 1]:.3f} s since the previous sample (over {MAX_GAP_S:g} s): samples missing")
    if problem is not None:
        raise ImuFileError(f"{path}:{lines[problem[0]]}", problem[1])
    cam_yaml = path.parent.parent / "cam0" / "sensor.yaml"
    body_T_cam = read_sensor_yaml_T_BS(cam_yaml) if cam_yaml.is_file() else np.eye(4)
    return ImuSamples(t, v[:, :3], v[:, 3:], body_T_cam)


def write_euroc_csv(path, samples: ImuSamples, noise: ImuNoise | None = None) -> None:
    """Write ``samples`` as an EuRoC ``imu0/data.csv`` (atomically), with ``imu0/sensor.yaml`` beside it (``T_BS``
    identity, the noise figures when given) and ``../cam0/sensor.yaml`` holding ``T_BS`` = ``body_T_cam``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ns = np.round(samples.t * 1e9).astype(np.int64)
    rows = [EUROC_HEADER] + [f"{n}," + ",".join(repr(float(x)) for x in (*g, *a))
                             for n, g, a in zip(ns, samples.gyro, samples.accel)]
    atomic_write_text(path, "\n".join(rows) + "\n")
    imu_yaml = ["sensor_type: imu", "comment: written by m2hmx (mapping.imu.write_euroc_csv)",
                _t_bs_yaml(np.eye(4))]
    if noise is not None:
        imu_yaml += [f"rate_hz: {noise.rate_hz!r}", f"gyroscope_noise_density: {noise.gyro_noise_density!r}",
                     f"gyroscope_random_walk: {noise.gyro_bias_walk!r}",
                     f"accelerometer_noise_density: {noise.accel_noise_density!r}",
                     f"accelerometer_random_walk: {noise.accel_bias_walk!r}"]
    atomic_write_text(path.parent / "sensor.yaml", "\n".join(imu_yaml) + "\n")
    cam = path.parent.parent / "cam0"
    cam.mkdir(exist_ok=True)
    atomic_write_text(cam / "sensor.yaml", "\n".join(["sensor_type: camera", "comment: T_BS is the camera's pose in the "
                                                  "IMU (body) frame", _t_bs_yaml(samples.body_T_cam)]) + "\n")


def read_euroc_noise(imu_dir) -> ImuNoise | None:
    """The noise figures of an ``imu0/sensor.yaml`` (Kalibr/EuRoC keys), or None when it has none."""
    import yaml

    path = Path(imu_dir) / "sensor.yaml"
    try:
        meta = yaml.safe_load(path.read_text()) or {}
        keys = ("gyroscope_noise_density", "accelerometer_noise_density", "gyroscope_random_walk",
                "accelerometer_random_walk")
        if not all(k in meta for k in keys):
            return None
        g, a, gw, aw = (float(meta[k]) for k in keys)
        return ImuNoise(g, a, gw, aw, float(meta.get("rate_hz", D435I.rate_hz)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise ImuFileError(str(path), f"cannot read the IMU noise figures ({str(e).splitlines()[0]})") from None


def read_sensor_yaml_T_BS(path) -> np.ndarray:
    """``T_BS`` (4x4) of an EuRoC ``sensor.yaml``."""
    import yaml

    path = Path(path)
    try:
        data = (yaml.safe_load(path.read_text()) or {})["T_BS"]["data"]
        T = np.array([float(x) for x in data], np.float64).reshape(4, 4)
    except FileNotFoundError:
        raise ImuFileError(str(path), "file not found") from None
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        raise ImuFileError(str(path), "no readable T_BS (rows: 4, cols: 4, data: 16 numbers)") from None
    try:
        return _check_transform(T, "T_BS")
    except InterfaceError as e:
        raise ImuFileError(str(path), str(e)) from None


def _t_bs_yaml(T: np.ndarray) -> str:
    return "T_BS:\n  cols: 4\n  rows: 4\n  data: [" + ", ".join(repr(float(x)) for x in np.asarray(T).ravel()) + "]"



# ---------------------------------------------------------------------------------------------------- preintegration

def preintegration_params(noise: ImuNoise, gravity: float = 9.81):
    """GTSAM combined-IMU parameters for a z-up navigation frame (gravity (0, 0, -g)) with ``noise``'s figures
    (continuous-time densities squared, as GTSAM expects)."""
    import gtsam

    p = gtsam.PreintegrationCombinedParams.MakeSharedU(gravity)
    eye = np.eye(3)
    p.setGyroscopeCovariance(noise.gyro_noise_density ** 2 * eye)
    p.setAccelerometerCovariance(noise.accel_noise_density ** 2 * eye)
    p.setBiasOmegaCovariance(noise.gyro_bias_walk ** 2 * eye)
    p.setBiasAccCovariance(noise.accel_bias_walk ** 2 * eye)
    p.setIntegrationCovariance(1e-8 * eye)  # position integration error, GTSAM examples' figure
    return p


def preintegrate(samples: ImuSamples, t0: float, t1: float, params, bias=None):
    """``gtsam.PreintegratedCombinedMeasurements`` from ``t0`` to ``t1`` (seconds).

    The interval is cut at every sample time inside it (so the partial pieces at both ends count) and each piece
    is integrated with the midpoint rule: gyro and accel linearly interpolated at the piece's midpoint (held
    constant past the first and last samples), the accel turned by half the piece's rotation into the frame at its
    start, where GTSAM applies it. That keeps the discretisation error second order in the sample period; GTSAM's
    own step (the measurement held over the piece, applied in the start frame) leaves first-order errors of several
    mm over 1 s of hand-held motion at 200 Hz (gravity turning in the body frame)."""
    import gtsam

    if bias is None:
        bias = gtsam.imuBias.ConstantBias()
    pim = gtsam.PreintegratedCombinedMeasurements(params, bias)
    if not t1 > t0:
        return pim
    if len(samples) == 0:
        raise InterfaceError(f"no IMU samples to preintegrate from {t0:.6f} s to {t1:.6f} s")
    inside = samples.t[(samples.t > t0) & (samples.t < t1)]
    cuts = np.concatenate([[t0], inside, [t1]])
    mids, dts = (cuts[:-1] + cuts[1:]) / 2, np.diff(cuts)
    gyro = np.column_stack([np.interp(mids, samples.t, samples.gyro[:, k]) for k in range(3)])
    accel = np.column_stack([np.interp(mids, samples.t, samples.accel[:, k]) for k in range(3)])
    b_acc, b_gyro = bias.accelerometer(), bias.gyroscope()
    half = _rotations((gyro - b_gyro) * (dts / 2)[:, None])
    accel = np.einsum("nij,nj->ni", half, accel - b_acc) + b_acc  # GTSAM subtracts the bias again
    for a, w, dt in zip(accel, gyro, dts):
        if dt > 0:
            pim.integrateMeasurement(a, w, float(dt))
    return pim


def _rotations(rotvecs: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices of rotation vectors (Rodrigues' formula)."""
    theta = np.linalg.norm(rotvecs, axis=1)
    small = theta < 1e-12
    k = rotvecs / np.where(small, 1.0, theta)[:, None]
    K = np.zeros((len(k), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], (1 - np.cos(theta))[:, None, None]
    return np.eye(3) + s * K + c * (K @ K)
