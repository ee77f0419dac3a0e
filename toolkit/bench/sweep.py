"""A sweep file: a base recipe, a grid over recipe keys, and the tables cost and MFU are read from.

    base: openelm/tiny.yaml            # any recipe (a path, or a plugin recipe name)
    device: cpu-2core                  # the hardware this sweep runs on: a key of prices and peak_tflops
    overrides: {data.seq_len: 128}     # recipe keys every cell sets
    grid:                              # every combination of the axes' values is one cell
      model_size:                      # a named axis: label -> the recipe keys it sets
        tiny: {model.num_layers: 2, model.model_dim: 64}
      data.batch_size: [4, 8]          # a recipe key: its values (the label is the value)
      nproc: [1, 2]                    # processes torchrun starts (also a top-level key, default 1)
    repeats: 3                         # timed windows per cell, for the spread
    steps: 10                          # optimizer steps per timed window
    warmup_steps: 2                    # steps before the first window, never timed
    loss_token_budget: 0               # Loss/$ from the loss after this many tokens (0 = none)
    cell_timeout_s: 1800               # a cell running longer is stopped and marked failed
    prices: {cpu-2core: 0.10}          # $ per hour per device
    peak_tflops: {cpu-2core: {fp32: 0.19, bf16: 0.43}}   # per device and precision

A sweep file is data: nothing in it is executed. Every problem is a SweepError naming the file
and the key, raised before anything is written.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import ToolkitError
from toolkit.registry import closest

NPROC_AXIS = "nproc"
TOP_LEVEL_KEYS = ("base", "device", "nproc", "overrides", "grid", "repeats", "steps", "warmup_steps",
                  "loss_token_budget", "cell_timeout_s", "prices", "peak_tflops")
SINGLE_PROCESS_LABEL = "-"  # a dist-only axis in a 1-process cell, where nothing is wrapped


class SweepError(ToolkitError):
    """A sweep file is missing, malformed, or names a key or value that cannot work."""


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its axis labels, the recipe overrides they make, and its processes."""

    labels: tuple[tuple[str, str], ...]  # (axis, label) in the grid's order
    overrides: tuple[str, ...]  # "key=value", the fixed overrides first, then the axes'
    nproc: int

    @property
    def id(self) -> str:
        """The cell's name in the results CSV (a resumed sweep skips ids already there)."""
        return ";".join(f"{axis}={label}" for axis, label in self.labels)


@dataclass
class Sweep:
    source: Path
    base: str
    device: str
    nproc: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # axis -> label -> keys
    repeats: int = 3
    steps: int = 10
    warmup_steps: int = 2
    loss_token_budget: int = 0
    cell_timeout_s: float = 1800.0
    prices: dict[str, float] = field(default_factory=dict)
    peak_tflops: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def axes(self) -> list[str]:
        return list(self.grid)

    def cells(self) -> list[Cell]:
        """Every combination, in grid order; 1-process cells that differ only in dist keys are one."""
        cells: list[Cell] = []
        seen: set[str] = set()
        fixed = [override(key, value) for key, value in self.overrides.items()]
        for choice in itertools.product(*[list(values.items()) for values in self.grid.values()]):
            nproc = self.nproc
            labels, made = [], []
            for axis, (label, keys) in zip(self.grid, choice):
                nproc = int(keys.get(NPROC_AXIS, nproc))
                labels.append([axis, label])
                made.extend(override(key, value) for key, value in keys.items() if key != NPROC_AXIS)
            if nproc == 1:  # one process wraps nothing: DDP and FSDP are the same run
                for entry, (label, keys) in zip(labels, choice):
                    if keys and all(key.startswith("dist.") for key in keys):
                        entry[1] = SINGLE_PROCESS_LABEL
                made = [item for item in made if not item.startswith("dist.")]
            cell = Cell(tuple((axis, label) for axis, label in labels), tuple(fixed + made), nproc)
            if cell.id not in seen:
                seen.add(cell.id)
                cells.append(cell)
        return cells


def override(key: str, value: Any) -> str:
    """`key=value` as the recipe loader parses it (JSON is valid YAML: strings quoted, true, null)."""
    return f"{key}={json.dumps(value)}"


def read_sweep(path: Path, device: str | None = None) -> Sweep:
    """The sweep in `path`, checked; `device` (the command's --device) replaces the file's."""
    where = str(path)
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"sweep file not found: {path}", hint="toolkit-bench --list-sweeps lists the shipped ones") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = " ".join(str(error).split())
        raise SweepError(f"{where}: not valid YAML ({first})") from None
    if not isinstance(values, dict):
        raise SweepError(f"{where}: a sweep file is a mapping with base:, device: and grid:")
    for key in values:
        if key not in TOP_LEVEL_KEYS:
            suggestion = closest(str(key), list(TOP_LEVEL_KEYS))
            raise SweepError(f"{where}: unknown key '{key}'",
                             hint=f"did you mean '{suggestion}'?" if suggestion else f"keys: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("base", "grid", "prices", "peak_tflops"):
        if values.get(key) in (None, "", {}):
            raise SweepError(f"{where}: '{key}' is missing or empty")
    if not isinstance(values["base"], str):
        raise SweepError(f"{where}: base: must be a recipe name or path, got {values['base']!r}")
    sweep = Sweep(source=Path(path), base=values["base"], device=str(device or values.get("device") or ""))
    sweep.nproc = _positive_int(values.get("nproc", 1), f"{where}: nproc")
    for key in ("repeats", "steps"):
        setattr(sweep, key, _positive_int(values.get(key, getattr(sweep, key)), f"{where}: {key}"))
    for key in ("warmup_steps", "loss_token_budget"):
        setattr(sweep, key, _non_negative_int(values.get(key, getattr(sweep, key)), f"{where}: {key}"))
    sweep.cell_timeout_s = _positive_number(values.get("cell_timeout_s", sweep.cell_timeout_s), f"{where}: cell_timeout_s")
    sweep.overrides = _recipe_keys(values.get("overrides") or {}, f"{where}: overrides")
    sweep.grid = _grid(values["grid"], f"{where}: grid")
    sweep.prices = _prices(values["prices"], f"{where}: prices")
    sweep.peak_tflops = _peaks(values["peak_tflops"], f"{where}: peak_tflops")
    if not sweep.device:
        raise SweepError(f"{where}: device: is missing", hint="name the hardware, a key of prices:, or pass --device")
    for table in ("prices", "peak_tflops"):
        if sweep.device not in getattr(sweep, table):
            raise SweepError(f"{where}: {table}: has no entry for device '{sweep.device}'",
                             hint=f"devices there: {', '.join(getattr(sweep, table))}")
    return sweep


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{where}: must be a whole number >= 1, got {value!r}")
    return value


def _non_negative_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SweepError(f"{where}: must be a whole number >= 0, got {value!r}")
    return value


def _positive_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SweepError(f"{where}: must be a number > 0, got {value!r}")
    return float(value)


def _recipe_keys(values: Any, where: str) -> dict[str, Any]:
    """A mapping of dotted recipe keys (`trainer.precision`) to plain YAML values."""
    if not isinstance(values, dict):
        raise SweepError(f"{where}: must map recipe keys (section.key) to values, got {values!r}")
    for key, value in values.items():
        if not isinstance(key, str) or "." not in key or not all(key.split(".")):
            raise SweepError(f"{where}: '{key}' is not a recipe key (section.key, say trainer.precision)")
        if isinstance(value, dict):
            raise SweepError(f"{where}.{key}: set one key per entry (section.key.sub: value), not a mapping")
    return dict(values)


def _grid(values: Any, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """axis -> label -> the recipe keys (and `nproc`) that label sets."""
    if not isinstance(values, dict):
        raise SweepError(f"{where}: must map axes to their values")
    grid: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, choices in values.items():
        axis = str(axis)
        here = f"{where}.{axis}"
        if axis == NPROC_AXIS:
            if not isinstance(choices, list) or not choices:
                raise SweepError(f"{here}: must be a list of process counts, say [1, 2]")
            grid[axis] = {str(count): {NPROC_AXIS: _positive_int(count, here)} for count in choices}
        elif isinstance(choices, list):
            if "." not in axis:
                raise SweepError(f"{here}: a list of values needs a recipe key as its axis (section.key)",
                                 hint="or give a mapping of labels to the recipe keys each sets")
            if not choices or any(isinstance(choice, (dict, list)) for choice in choices):
                raise SweepError(f"{here}: must be a non-empty list of plain values")
            grid[axis] = {_label(choice): {axis: choice} for choice in choices}
        elif isinstance(choices, dict) and choices:
            grid[axis] = {str(label): _bundle(keys, f"{here}.{label}") for label, keys in choices.items()}
        else:
            raise SweepError(f"{here}: must be a list of values or a mapping of labels to recipe keys")
        if len(grid[axis]) != len(choices):
            raise SweepError(f"{here}: two values have the same label")
    return grid


def _bundle(keys: Any, where: str) -> dict[str, Any]:
    if not isinstance(keys, dict) or not keys:
        raise SweepError(f"{where}: must map recipe keys to values, say {{model.num_layers: 9}}")
    nproc = keys.get(NPROC_AXIS)
    if nproc is not None:
        _positive_int(nproc, f"{where}.{NPROC_AXIS}")
    return {**_recipe_keys({k: v for k, v in keys.items() if k != NPROC_AXIS}, where),
            **({NPROC_AXIS: nproc} if nproc is not None else {})}


def _label(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _prices(values: Any, where: str) -> dict[str, float]:
    if not isinstance(values, dict):
        raise SweepError(f"{where}: must map devices to $ per hour per device")
    return {str(device): _positive_number(price, f"{where}.{device}") for device, price in values.items()}


def _peaks(values: Any, where: str) -> dict[str, dict[str, float]]:
    if not isinstance(values, dict):
        raise SweepError(f"{where}: must map devices to {{precision: TFLOP/s per device}}")
    peaks = {}
    for device, table in values.items():
        if not isinstance(table, dict) or not table:
            raise SweepError(f"{where}.{device}: must map precisions (fp32, bf16) to TFLOP/s per device")
        peaks[str(device)] = {str(precision): _positive_number(value, f"{where}.{device}.{precision}")
                              for precision, value in table.items()}
    return peaks
