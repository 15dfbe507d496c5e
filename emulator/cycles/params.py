"""The cycle model's parameters: loaded from `cycle_model.toml`, the one place they live."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from emulator.errors import CycleModelError

DEFAULT_PARAMS = resources.files("emulator.cycles") / "cycle_model.toml"


@dataclass(frozen=True)
class InsnClass:
    latency: float
    throughput: float
    pool: str = "serial"  # the resource its throughput is spent on (cycle_model.toml, [classes])


@dataclass(frozen=True)
class CycleParams:
    """The Zen 4 model's figures (cycles unless named otherwise); see cycle_model.toml."""
    clock_ghz: float
    line: int
    l1d: tuple[int, int]   # size, ways
    l1i: tuple[int, int]
    l2: tuple[int, int]
    l3: tuple[int, int]
    l1_latency: float
    l2_latency: float
    l3_latency: float
    dram_latency: float
    store_miss_fraction: float
    dtlb1_entries: int
    dtlb2_entries: int
    dtlb2_ways: int
    dtlb2_hit: float
    page_walk: float
    mispredict: float
    btb_miss: float
    bp_table_bits: int
    bp_history_bits: int
    btb_bits: int
    ras_entries: int
    dispatch_width: float
    op_cache_width: float
    frontend_window: float
    taken_jump: float        # front-end bubble after a taken jump, call, return
    taken_call: float
    taken_ret: float
    fusion_first: frozenset[str]  # mnemonics a following Jcc fuses with
    classes: dict[str, InsnClass] = field(default_factory=dict)
    rep_iteration: dict[str, float] = field(default_factory=dict)  # movs/stos per byte, others per element


_DEFAULT: tuple[tuple[int, int], CycleParams] | None = None  # the packaged file's mtime and size, and its figures


def load_params(path: str | Path | None = None) -> CycleParams:
    """Read the model's parameters (default: the packaged emulator/cycles/cycle_model.toml, parsed
    again only when it changed: a boot asks for it several times)."""
    global _DEFAULT
    default = path is None
    path = Path(path) if path is not None else DEFAULT_PARAMS
    try:
        stamp = None
        if default:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if _DEFAULT is not None and _DEFAULT[0] == stamp:
                return _DEFAULT[1]
        d = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CycleModelError(f"cannot read the cycle model parameters {path}: {exc}") from exc
    params = _parse(path, d)
    if default:
        _DEFAULT = (stamp, params)
    return params


def _parse(path: Path, d: dict) -> CycleParams:
    try:
        c, t, b, core = d["cache"], d["tlb"], d["branch"], d["core"]
        classes = {name: InsnClass(float(v["latency"]), float(v["throughput"]), str(v["pool"]))
                   for name, v in d["classes"].items() if isinstance(v, dict)}
        return CycleParams(
            clock_ghz=float(d["clock"]["ghz"]), line=int(c["line"]),
            l1d=(int(c["l1d"]["size"]), int(c["l1d"]["ways"])), l1i=(int(c["l1i"]["size"]), int(c["l1i"]["ways"])),
            l2=(int(c["l2"]["size"]), int(c["l2"]["ways"])), l3=(int(c["l3"]["size"]), int(c["l3"]["ways"])),
            l1_latency=float(c["l1d"]["latency"]), l2_latency=float(c["l2"]["latency"]),
            l3_latency=float(c["l3"]["latency"]), dram_latency=float(c["dram"]["latency"]),
            store_miss_fraction=float(c["store"]["miss_fraction"]),
            dtlb1_entries=int(t["l1_entries"]), dtlb2_entries=int(t["l2_entries"]), dtlb2_ways=int(t["l2_ways"]),
            dtlb2_hit=float(t["l2_hit"]), page_walk=float(t["page_walk"]),
            mispredict=float(b["mispredict"]), btb_miss=float(b["btb_miss"]), bp_table_bits=int(b["table_bits"]),
            bp_history_bits=int(b["history_bits"]), btb_bits=int(b["btb_bits"]), ras_entries=int(b["ras_entries"]),
            dispatch_width=float(core["dispatch_width"]), op_cache_width=float(core["op_cache_width"]),
            frontend_window=float(core["frontend_window"]), taken_jump=float(core["taken"]["jump"]),
            taken_call=float(core["taken"]["call"]), taken_ret=float(core["taken"]["ret"]),
            fusion_first=frozenset(core["fusion"]["first"]),
            classes=classes,
            rep_iteration={k: float(v) for k, v in d["rep_iteration"].items() if not isinstance(v, str)},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CycleModelError(f"{path}: missing or malformed cycle model parameter {exc}") from exc


def millicycles(cycles: float) -> int:
    """Costs are millicycles internally (integers, so runs are exact and deterministic)."""
    return int(round(cycles * 1000))
