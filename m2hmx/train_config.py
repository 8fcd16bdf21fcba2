"""The training recipe as frozen dataclasses: one per YAML section (``model``, ``data``, ``optim``, ``loss``,
``train``) held by ``TrainConfig``. Importing it loads no torch (checking the loss weights at load does).

A recipe file (``m2hmx/configs/<name>.yaml``) gives some keys of some sections; ``load_config`` lays it and the
``--set section.key=value`` overrides (values parsed as YAML) over the defaults below, then checks every value
when the sections are built: a wrong type, a value out of range or an unknown key is one ``TrainError`` line
naming the key and where it came from (the file or the override). ``model.overrides`` (``M2HMXConfig`` fields)
and ``loss`` (``m2hmx.losses.LossWeights`` fields) are free mappings, checked by building those.
``TrainConfig.to_dict`` is what a run writes to ``<out_dir>/config.yaml``; loading that file gives the same
config back. Recipe format: docs/design/network.md section 10.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from m2hmx import M2HMXError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DATA_KINDS = ("synthetic", "sources", "nyudv2", "cityscapes")
SCHEDULES = ("poly", "cosine")
FREE_SECTIONS = ("model.overrides", "loss")  # mappings checked where used (network config, LossWeights)


class TrainError(M2HMXError):
    """A recipe, override or dataset problem, reported as one line."""


class ConfigKeyError(TrainError):
    """A bad value of the recipe key ``key`` (dotted), before it is known which file or override gave it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


# ------------------------------------------------------------------------------------ value checks
_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _scalar(value, kind: type):
    """``value`` as ``kind`` (numbers given as strings, as YAML reads ``1e-3``, are converted; an integer is a
    float), or ``None`` when it is not one."""
    if kind in (int, float) and isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if ok and kind is float:
        ok = math.isfinite(value)
    return value if ok else None


def _coerce(value, hint, key: str):
    """``value`` checked against the field's type hint (``X``, ``X | None``, ``tuple[X, ...]`` or ``dict``)."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigKeyError(key, f"config key '{key}' must be a mapping, got {value!r}")
        return copy.deepcopy(value)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        items = [_scalar(v, item) for v in value] if isinstance(value, (list, tuple)) else [None]
        if any(v is None for v in items):
            words = {int: "integers", float: "numbers", str: "strings"}[item]
            raise ConfigKeyError(key, f"config key '{key}' must be a list of {words}, got {value!r}")
        return tuple(items)
    checked = _scalar(value, hint)
    if checked is None:
        raise ConfigKeyError(key, f"config key '{key}' must be {_WORDS[hint]}, got {value!r}")
    return checked


def _check_fields(section, name: str, positive: tuple[str, ...] = ()) -> None:
    """Every field of the frozen ``section`` (YAML section ``name``) converted to its type hint, in place; the
    ``positive`` ones > 0."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        key = f"{name}.{f.name}"
        object.__setattr__(section, f.name, _coerce(getattr(section, f.name), hints[f.name], key))
        if f.name in positive and not getattr(section, f.name) > 0:
            raise ConfigKeyError(key, f"config key '{key}' must be > 0, got {getattr(section, f.name)!r}")


# ---------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class ModelSection:
    """The network: a preset of ``m2hmx.config.PRESETS`` with ``M2HMXConfig`` fields replaced (nested
    dataclasses by nested mappings, e.g. ``{"backbone": {"hidden_size": 32}}``)."""

    preset: str = "m2hmx-demo"
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_fields(self, "model")


@dataclass(frozen=True)
class DataSection:
    """What to train on. ``kind``: synthetic (generated rooms ``range(*seeds)``), sources (specs for
    ``m2hmx.data.sources.open_source``), nyudv2 (the .mat's train split) or cityscapes (no reader yet)."""

    kind: str = "synthetic"
    seeds: tuple[int, ...] = (0, 16)  # synthetic: rooms range(start, stop)
    frames: int = 300  # synthetic: length of each room's walkthrough (30 Hz)
    stride: int = 50  # synthetic: train on every stride-th frame of each walk
    wall_views: int = 0  # synthetic: and on this many views close to a wall per room (synthetic.wall_views)
    height: int = 240  # synthetic: rendered size
    width: int = 320
    sources: tuple[str, ...] = ()  # sources / nyudv2: specs (paths relative to data_root where given)
    data_root: str | None = None
    size: tuple[int, ...] = (240, 320)  # network input (crop) size [height, width]
    augment: bool = True

    def __post_init__(self):
        _check_fields(self, "data", positive=("frames", "stride", "height", "width"))
        if self.kind not in DATA_KINDS:
            raise ConfigKeyError("data.kind", f"data.kind '{self.kind}' is not one of {', '.join(DATA_KINDS)}")
        if len(self.size) != 2 or min(self.size) < 16:  # one 16-pixel ViT patch at least
            raise ConfigKeyError("data.size", f"config key 'data.size' must be [height, width], each >= 16, "
                                              f"got {list(self.size)!r}")


@dataclass(frozen=True)
class OptimSection:
    """AdamW (no decay on 1-D tensors, SSM and token parameters) with the backbone at ``lr * backbone_lr_scale``;
    linear warm-up, then ``schedule`` (poly or cosine) to 0; gradients clipped to ``grad_clip``."""

    lr: float = 2e-4
    backbone_lr_scale: float = 0.5
    weight_decay: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 1000
    schedule: str = "poly"
    poly_power: float = 0.9
    grad_clip: float = 1.0

    def __post_init__(self):
        _check_fields(self, "optim", positive=("poly_power", "grad_clip"))
        if self.lr < 0:
            raise ConfigKeyError("optim.lr", f"config key 'optim.lr' must be >= 0, got {self.lr!r}")
        if len(self.betas) != 2:
            raise ConfigKeyError("optim.betas", f"config key 'optim.betas' must be two numbers, got {list(self.betas)}")
        if self.schedule not in SCHEDULES:
            raise ConfigKeyError("optim.schedule", f"optim.schedule '{self.schedule}' is not poly or cosine")


@dataclass(frozen=True)
class TrainSection:
    """The run: steps, batch, seed, where it writes, device, resumption and budget."""

    steps: int = 40000
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0
    out_dir: str = "runs/m2hmx"
    ckpt_every: int = 1000
    log_every: int = 20
    threads: int | None = None  # torch threads; None: torch's choice
    device: str = "auto"  # auto | cuda | cpu
    bf16: bool = True  # bf16 autocast on CUDA
    resume: bool = False  # continue from <out_dir>/last.pt
    stop_at: int | None = None  # stop (and checkpoint) at this step, the schedule still over ``steps``
    init_from: str | None = None  # a fresh run from this model file's weights (and loss log-variances)
    minutes: float | None = None  # wall-clock budget of the whole call: stop before it is spent, schedule by time
    trainable: tuple[str, ...] | None = None  # parameter-name prefixes to train (e.g. [heads.depth]); None: all

    def __post_init__(self):
        _check_fields(self, "train", positive=("steps", "batch_size", "ckpt_every", "log_every"))


@dataclass(frozen=True)
class TrainConfig:
    """A whole recipe. ``config_file``: the recipe it was loaded from (its stem is recorded in the saved model);
    a run's ``config.yaml`` keeps its recipe's, so a run restarted from it records the same."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: dict = field(default_factory=dict)  # fields of m2hmx.losses.LossWeights
    train: TrainSection = field(default_factory=TrainSection)
    config_file: str = ""

    def __post_init__(self):
        for name, kind in (("model", ModelSection), ("data", DataSection), ("optim", OptimSection),
                           ("train", TrainSection)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigKeyError(name, f"config key '{name}' must be a {kind.__name__}")
        object.__setattr__(self, "loss", _coerce(self.loss, dict, "loss"))
        object.__setattr__(self, "config_file", _coerce(self.config_file, str, "config_file"))

    def to_dict(self) -> dict:
        """Plain YAML-able values (tuples as lists), in the recipe's layout."""
        def plain(value):
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config of a complete mapping (``to_dict``'s layout; missing keys take their defaults)."""
        sections = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "train": TrainSection}
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigKeyError(unknown[0], f"unknown config key '{unknown[0]}' "
                                             f"(known: {', '.join(f.name for f in dataclasses.fields(cls))})")
        kwargs = {}
        for key, value in d.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigKeyError(key, f"config key '{key}' must be a mapping")
                known = [f.name for f in dataclasses.fields(sections[key])]
                bad = sorted(set(value) - set(known))
                if bad:
                    raise ConfigKeyError(f"{key}.{bad[0]}", f"unknown config key '{key}.{bad[0]}' "
                                                            f"(known: {', '.join(sorted(known))})")
                value = sections[key](**value)
            kwargs[key] = value
        return cls(**kwargs)


DEFAULTS = TrainConfig()


# ------------------------------------------------------------------------------------------ loading
def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise TrainError(f"config '{name_or_path}' is neither a file nor a bundled recipe ({known})")


def _merge(base: dict, update: dict, where: str, origin: str, origins: dict) -> None:
    """``update`` laid over ``base`` (both in ``to_dict``'s layout); ``origins[key] = origin`` for each key set."""
    for key, value in update.items():
        name = where + key
        if key not in base:
            raise TrainError(f"{origin}: unknown config key '{name}' (known: {', '.join(sorted(base))})")
        origins[name] = origin
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise TrainError(f"{origin}: config key '{name}' must be a mapping")
            if name in FREE_SECTIONS:
                _deep_update(base[key], value)
            else:
                _merge(base[key], value, name + ".", origin, origins)
        else:
            base[key] = value


def _deep_update(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _read_recipe(path: Path) -> dict:
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"{path}: cannot read the recipe ({exc})") from None
    if not isinstance(recipe, dict):
        raise TrainError(f"{path}: a recipe is a YAML mapping of sections (model, data, optim, loss, train), "
                         f"this file holds a {type(recipe).__name__}")
    return recipe


def load_config(name_or_path: str, overrides: list[str] = ()) -> TrainConfig:
    """Defaults <- recipe file <- ``key.sub=value`` overrides (values parsed as YAML), checked before any work
    (the network config and the loss weights are built too), so a typo fails in a second, not after
    rendering the training rooms."""
    path = resolve_config_path(name_or_path)
    merged, origins = DEFAULTS.to_dict(), {}
    _merge(merged, _read_recipe(path), "", str(path), origins)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise TrainError(f"override '{item}' is not key=value")
        value = yaml.safe_load(raw)
        for part in reversed(key.split(".")):
            value = {part: value}
        _merge(merged, value, "", f"--set {item}", origins)
    merged["config_file"] = merged["config_file"] or str(path)
    try:
        cfg = TrainConfig.from_dict(merged)
        build_model_config(cfg.model)
        _check_loss(cfg.loss)
    except ConfigKeyError as exc:
        parts = exc.key.split(".")
        given = [".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in origins]
        raise TrainError(f"{origins[given[0]] if given else path}: {exc}") from None
    return cfg


def _check_loss(loss: dict) -> None:
    from m2hmx.losses import LossWeights

    try:
        LossWeights(**loss)
    except TypeError as exc:
        raise ConfigKeyError("loss", f"loss: {exc}") from None


def build_model_config(model: ModelSection):
    """The network config of ``model.preset`` with ``model.overrides`` (nested dataclass fields by dotted keys)."""
    from m2hmx.config import ConfigError, get_preset

    try:
        config = get_preset(model.preset)
    except ConfigError as exc:
        raise ConfigKeyError("model.preset", str(exc)) from None
    return _replace_fields(config, model.overrides, "model.overrides.")


def _replace_fields(obj, overrides: dict, where: str):
    """``obj`` (a dataclass) with ``overrides`` applied; nested dataclasses take nested mappings."""
    changes = {}
    for key, value in overrides.items():
        if key not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigKeyError(where + key, f"'{where}{key}' is not a field of {type(obj).__name__}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigKeyError(where + key, f"'{where}{key}' must be a mapping of {type(current).__name__} "
                                                  f"fields")
            value = _replace_fields(current, value, f"{where}{key}.")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    try:
        return dataclasses.replace(obj, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigKeyError(where.rstrip("."), f"{where.rstrip('.')}: {exc}") from None
