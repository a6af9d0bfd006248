"""Experiment files: the YAML schema, its validation, and ``--set`` overrides.

An experiment file describes a model, an acquisition, an inversion and a matrix of
``impl x storage x dtype`` settings (DESIGN §6). Every key has a default except ``name``;
unknown keys are errors. All problems found in one file are reported together, one per
key path, in a single :class:`~fwi_cli.errors.ConfigError` whose message names the file::

    configs/x.yaml: inversion.lr: must be > 0 (got -1); modle: unknown key (allowed: ...)

Overrides ``key.path=value`` (the CLI's ``--set``) are applied to the parsed YAML before
validation; the value is read as YAML (``10`` is an int, ``[0, 40]`` a list, ``null`` None).

YAML booleans: this loader keeps ``true``/``false``/``yes``/``no`` as strings and lets the
schema convert them where a boolean is expected, so the DESIGN's ``model: {true: true}``
(the preset named "true") reads as intended.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from fwi_cli.errors import ConfigError
from fwi_cli.propagator.options import STORAGE_DTYPES, STORAGES

IMPLS = ("c", "eager")
STRATEGIES = ("full", "boundary")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Section(BaseModel):
    """Base of every schema section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSection(_Section):
    """``model:`` — which velocity models, and how they are resampled.

    Attributes:
        dataset: "marmousi" (the shipped Marmousi2 presets) or "npy" (files).
        true: preset name ("true"/"smooth") or a .npy path of the true model (nz, nx) m/s.
        init: preset name or a .npy path of the starting model.
        decimate: keep every k-th sample in z and x (Marmousi 12.5 m -> 25 m for k = 2).
        crop: optional [z0, z1, x0, x1] (cells, after decimation, end exclusive).
        dh: sample spacing (m) of the models before decimation; None means 12.5 m
            (the Marmousi2 spacing). An extension of the DESIGN schema for .npy models.
    """

    dataset: Literal["marmousi", "npy"] = "marmousi"
    true: str = "true"
    init: str = "smooth"
    decimate: Annotated[int, Field(ge=1)] = 2
    crop: tuple[int, int, int, int] | None = None
    dh: Annotated[float, Field(gt=0)] | None = None

    @field_validator("crop")
    @classmethod
    def _crop_ordered(cls, v):
        if v is not None:
            z0, z1, x0, x1 = v
            if not (0 <= z0 < z1 and 0 <= x0 < x1):
                raise ValueError("must be [z0, z1, x0, x1] with 0 <= z0 < z1 and 0 <= x0 < x1")
        return v


class GridSection(_Section):
    """``grid:`` — time stepping and stencil (dt in s)."""

    dt: Annotated[float, Field(gt=0)] = 0.002
    nt: Annotated[int, Field(gt=0)] = 2000
    spatial_order: Literal[2, 4, 8] = 4
    pml_width: Annotated[int, Field(ge=1)] = 50


class SourceSection(_Section):
    """``source:`` — the wavelet ``ricker(t - delay, freq)`` (Hz, s)."""

    wavelet: Literal["ricker"] = "ricker"
    freq: Annotated[float, Field(gt=0)] = 5.0
    delay: Annotated[float, Field(ge=0)] = 0.2


class AcquisitionSection(_Section):
    """``acquisition:`` — shots and receivers (depths in cells, spans as fractions of nx)."""

    nshots: Annotated[int, Field(ge=1)] = 20
    nrec: Annotated[int, Field(ge=1)] = 200
    src_z: Annotated[int, Field(ge=0)] = 2
    rec_z: Annotated[int, Field(ge=0)] = 4
    src_span: tuple[float, float] = (0.1, 0.9)

    @field_validator("src_span")
    @classmethod
    def _span_ordered(cls, v):
        if not (0.0 <= v[0] <= v[1] <= 1.0):
            raise ValueError("must be [a, b] with 0 <= a <= b <= 1 (fractions of the model width)")
        return v


class InversionSection(_Section):
    """``inversion:`` — Adam on the velocity (lr in m/s per step)."""

    optimizer: Literal["adam"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 25.0
    eps: Annotated[float, Field(gt=0)] = 1.0e-16
    iterations: Annotated[int, Field(ge=1)] = 30
    batch_shots: Annotated[int, Field(ge=1)] = 8


class MemorySection(_Section):
    """``memory:`` — gradient strategy and the options shared by every storage tier."""

    strategy: Literal["boundary", "full"] = "boundary"
    transfer_interval: Annotated[int, Field(ge=1)] = 8
    pinned_memory: bool = True
    disk_dir: str | None = None


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def _check_choices(values: list[str], allowed: tuple[str, ...]) -> list[str]:
    bad = [x for x in values if x not in allowed]
    if bad:
        raise ValueError(f"must be one of {list(allowed)} (got {', '.join(map(repr, bad))})")
    if not values:
        raise ValueError(f"must name at least one of {list(allowed)}")
    return values


class MatrixBlock(_Section):
    """One block of the matrix; list values expand as a product within the block."""

    impl: list[str]
    storage: list[str]
    dtype: list[str]

    @field_validator("impl", "storage", "dtype", mode="before")
    @classmethod
    def _listify(cls, v):
        return _as_list(v)

    @field_validator("impl")
    @classmethod
    def _impl(cls, v):
        return _check_choices(v, IMPLS)

    @field_validator("storage")
    @classmethod
    def _storage(cls, v):
        return _check_choices(v, STORAGES)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v):
        return _check_choices(v, STORAGE_DTYPES)


class ExperimentConfig(_Section):
    """A whole experiment file (DESIGN §6). ``source`` holds the file it came from."""

    name: str
    output_dir: str = "runs"
    device: str = "auto"
    seed: Annotated[int, Field(ge=0)] = 0
    model: ModelSection = ModelSection()
    grid: GridSection = GridSection()
    source: SourceSection = SourceSection()
    acquisition: AcquisitionSection = AcquisitionSection()
    inversion: InversionSection = InversionSection()
    memory: MemorySection = MemorySection()
    matrix: Annotated[list[MatrixBlock], Field(min_length=1)]

    _path: str = PrivateAttr(default="<config>")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not _NAME_RE.match(v):
            raise ValueError(
                "must be a plain directory name (letters, digits, '.', '_', '-'), "
                f"got {v!r}"
            )
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if not _DEVICE_RE.match(v):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {v!r})")
        return v

    @property
    def path(self) -> str:
        """The file (or "<config>") this configuration was read from, for messages."""
        return self._path

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``: where the stores and the report go."""
        return Path(self.output_dir) / self.name

    def error(self, key: str, msg: str) -> ConfigError:
        """A :class:`ConfigError` for ``key`` of this file: ``"<file>: <key>: <msg>"``."""
        return ConfigError(f"{self.path}: {key}: {msg}")

    def resolved(self) -> dict:
        """The whole configuration with defaults filled in, as plain JSON types."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """Safe YAML loader that leaves true/false/yes/no/on/off as strings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text; any failure becomes a ConfigError naming ``where`` (and the line
    when the parser knows it).

    Besides syntax errors this covers values an explicit tag cannot convert (``!!float abc``,
    ``!!bool maybe``, ``!!timestamp x``) and nesting too deep to parse.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [""])[0]
        msg = f"{where}: {line}invalid YAML ({problem})"
    except RecursionError:
        msg = f"{where}: invalid YAML (nested too deeply to read)"
    except Exception as exc:  # a constructor of a tagged value (ValueError, KeyError, ...)
        msg = f"{where}: invalid YAML (a tagged value cannot be converted: {type(exc).__name__}: {exc})"
    raise ConfigError(msg)


# --------------------------------------------------------------------------- overrides
def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], where: str) -> dict:
    """Apply ``key.path=value`` overrides to parsed YAML (returns a modified copy).

    Args:
        data: the parsed YAML mapping.
        overrides: items like ``"inversion.lr=10"`` or ``"matrix.0.dtype=[fp16, int8]"``;
            a numeric path component indexes a list.
        where: the file name for messages.

    Raises:
        ConfigError: a malformed item, or a path through something that is not a mapping/list.
    """
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected key.path=value (e.g. inversion.lr=10)")
        value = parse_yaml(raw, f"--set {key}")
        parts = key.split(".")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            here = ".".join(parts[: i + 1])
            if isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            elif isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"{where}: --set {key}: {here!r} is not an index of the "
                        f"{len(node)}-item list at {'.'.join(parts[:i])}"
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            else:
                raise ConfigError(
                    f"{where}: --set {key}: {'.'.join(parts[:i])} is a value, not a section"
                )
    return out


# --------------------------------------------------------------------------- errors
def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    msg = msg[:1].lower() + msg[1:]
    msg = msg.replace("input should be ", "must be ")
    if "input" in err and "(got" not in msg and kind not in ("model_type", "dict_type"):
        got = repr(err["input"])
        msg += f" (got {got if len(got) <= 80 else got[:77] + '...'})"
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Names of the keys allowed at the section holding ``loc`` (for unknown-key hints)."""
    cls: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            cls = args[0]
        else:
            return None
    return list(cls.model_fields)


def format_validation_error(exc: ValidationError, where: str) -> str:
    """One line naming ``where`` and every bad key path with its problem."""
    items = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = _message(err)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(ExperimentConfig, loc)
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        items.append(f"{_loc(loc)}: {msg}")
    return f"{where}: " + "; ".join(items)


def _cross_checks(cfg: ExperimentConfig) -> list[str]:
    """Checks that involve several keys (those needing the model's size live in problem.py)."""
    bad = []
    if cfg.inversion.batch_shots > cfg.acquisition.nshots:
        bad.append(
            f"inversion.batch_shots: must be <= acquisition.nshots = {cfg.acquisition.nshots} "
            f"(got {cfg.inversion.batch_shots})"
        )
    if cfg.model.dataset == "marmousi":
        from fwi_cli.datasets import PRESETS

        for key in ("true", "init"):
            val = getattr(cfg.model, key)
            if val not in PRESETS:
                bad.append(
                    f"model.{key}: must be a Marmousi preset {list(PRESETS)} when "
                    f"model.dataset is marmousi (got {val!r}); use dataset: npy for files"
                )
    return bad


# --------------------------------------------------------------------------- entry points
def validate_config(data: Any, where: str = "<config>") -> ExperimentConfig:
    """Validate parsed YAML into an :class:`ExperimentConfig`.

    Args:
        data: the parsed (and overridden) YAML document.
        where: the file name used in messages.

    Raises:
        ConfigError: naming ``where`` and each bad key path.
    """
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{where}: the experiment file must be a YAML mapping of keys, got {got}")
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    cfg._path = where
    bad = _cross_checks(cfg)
    from fwi_cli.experiment.matrix import duplicate_problems

    bad += duplicate_problems(cfg.matrix)
    if bad:
        raise ConfigError(f"{where}: " + "; ".join(bad))
    return cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment file.

    Args:
        path: the YAML file.
        overrides: ``key.path=value`` items applied before validation.

    Raises:
        ConfigError: missing/unreadable file, malformed YAML (with its line), unknown keys,
            bad values; the message names the file and every bad key path.
    """
    p = Path(path)
    where = str(path)
    try:
        missing = not p.is_file()
        why = ("is a directory" if p.is_dir() else "no such file") if missing else ""
    except (OSError, ValueError) as exc:  # a name too long, an embedded NUL, ...
        missing, why = True, str(exc)
    if missing:
        raise ConfigError(f"{where}: cannot read the experiment file ({why})")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the experiment file ({exc})") from None
    data = parse_yaml(text, where)
    if overrides:
        if not isinstance(data, dict):
            data = {} if data is None else data
        if isinstance(data, dict):
            data = apply_overrides(data, overrides, where)
    return validate_config(data, where)
