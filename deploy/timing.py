"""Latency from the executed instruction mix, weighted by each core's documented timings.

:func:`profile` runs a firmware under QEMU with the project's own TCG plugin
(``c/uq_profile_plugin.c``, built for the host on first use and cached): every guest instruction
executed between the harness's ``uqh_begin()`` and ``uqh_end()`` calls (the first inference
and its score) is counted with its address, size and disassembly, and every transition between
translated blocks is counted too, so each conditional branch's taken and not-taken counts are
exact. :func:`estimate` classifies
each instruction and charges it cycles from the core's table (:data:`CYCLES`), so the latency
follows what the code executes (loads, multiplies, taken branches, ...) rather than one CPI.

What the model charges (Cortex-M4 Technical Reference Manual, table 3-1 "Cortex-M4 instruction
set summary"; the Cortex-M7 columns from its TRM's dual-issue rules):

- data processing, saturation, packing, extension, ``IT``: 1 cycle (M4); 0.5 on the M7, which
  issues two of them per cycle;
- every multiply and multiply-accumulate, DSP dual MACs included (``MUL``, ``MLA``, ``SMLAD``,
  ``SMLAL``, ...): 1; divisions (2-12 cycles by operand) 7;
- single loads and stores: 2, or 1 when the instruction before is also a load or store (their
  address and data phases pipeline); ``LDRD``/``STRD`` 3; ``LDM``/``STM``/``PUSH``/``POP``
  1 + N registers (M7: 1 per load or store, N/2 for multiples);
- branches: 1 + P when taken, P = 2 (the TRM's pipeline refill of 1-3 cycles, its middle), 1
  when not (counted exactly: the plugin records how often each branch fell through);
  ``POP {..., pc}`` and loads into ``pc`` add P to their own cost (M7: branch prediction, taken
  1, not taken 0.5, refill 1);
- floating point: 1 (``VMLA``/``VFMA`` 3 on the M4), ``VDIV``/``VSQRT`` 14, ``VLDR``/``VSTR``
  2, multiples 1 + N.

Left out, and said so in ``deploy.json``: flash wait states and the flash accelerator, caches
(the M7's), bus contention, the M7's pairing limits beyond these averages. It is an estimate from
an emulation, not a measurement on silicon. The Cortex-M33 (``mid-mcu``) is charged with the
M4's table.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from uqbench.deploy.codegen import C_DIR
from uqbench.deploy.firmware import qemu_command

from uqbench.errors import UQBenchError

PLUGIN_SOURCE = C_DIR / "uq_profile_plugin.c"
HOST_COMPILER_PACKAGES = "gcc libc6-dev"
CONDITIONS = "eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al"
BRANCH = re.compile(rf"^(b|bl|bx|blx)({CONDITIONS})?$")

# Cycles per instruction class and core (see the module docstring for the sources).
CYCLES = {
    "cortex-m4": {
        "alu": 1.0,
        "multiply": 1.0,
        "divide": 7.0,
        "load": 2.0,
        "load_pipelined": 1.0,
        "store": 2.0,
        "store_pipelined": 1.0,
        "load_store_double": 3.0,
        "multiple_base": 1.0,
        "multiple_per_register": 1.0,
        "branch_taken": 3.0,
        "branch_not_taken": 1.0,
        "refill": 2.0,
        "fpu": 1.0,
        "fpu_multiply_accumulate": 3.0,
        "fpu_divide": 14.0,
        "fpu_load_store": 2.0,
    },
    "cortex-m7": {
        "alu": 0.5,
        "multiply": 1.0,
        "divide": 7.0,
        "load": 1.0,
        "load_pipelined": 1.0,
        "store": 1.0,
        "store_pipelined": 1.0,
        "load_store_double": 1.0,
        "multiple_base": 1.0,
        "multiple_per_register": 0.5,
        "branch_taken": 1.0,
        "branch_not_taken": 0.5,
        "refill": 1.0,
        "fpu": 1.0,
        "fpu_multiply_accumulate": 1.0,
        "fpu_divide": 14.0,
        "fpu_load_store": 1.0,
    },
}
# The Cortex-M33's pipeline is an M4's in depth (3 stages, single issue, single-cycle MACs and
# DSP instructions): it is charged with the M4's table, an approximation.
CYCLES["cortex-m33"] = CYCLES["cortex-m4"]
MODEL = (
    "estimated cycles = sum over the executed instructions (counted one by one under QEMU) of "
    "each instruction's cycles by class from the core's documented timings (Cortex-M4 TRM "
    "table 3-1; Cortex-M7 dual-issue rules): see uqbench.deploy.timing. Not modelled: flash "
    "wait states and accelerators, caches, bus contention"
)


class ProfileError(UQBenchError):
    pass


@dataclass(frozen=True)
class Executed:
    """One instruction of the profiled window: where it is, how often it ran, what it is."""

    address: int
    size: int
    count: int
    first_in_block: bool
    text: str

    @property
    def mnemonic(self) -> str:
        return self.text.split()[0].lower().split(".")[0] if self.text.strip() else "?"


@dataclass
class Profile:
    """What one window executed: each instruction with its count, and each transition between
    blocks, ``(address of the last instruction left, address entered) -> count``."""

    executed: list[Executed]
    edges: dict[tuple[int, int], int] = field(default_factory=dict)

    def only(self, executed: list[Executed]) -> Profile:
        """Part of this profile's instructions (e.g. one function's), with the same edges."""
        return Profile(executed, self.edges)


@dataclass
class Timing:
    """The window's instructions, estimated cycles, and both by class and by function."""

    instructions: int
    cycles: float
    by_class: dict[str, dict[str, float]] = field(default_factory=dict)
    by_function: dict[str, int] = field(default_factory=dict)  # executed instructions


def plugin_library() -> Path:
    """The profiling plugin built for the host (once per source version, cached)."""
    source = PLUGIN_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uqbench"
    library = cache / f"uq_profile_plugin-{digest}.so"
    if library.is_file():
        return library
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise ProfileError(
            "no host C compiler: the deploy stage builds a small QEMU plugin to count the "
            f"executed instruction mix. On Debian/Ubuntu: sudo apt-get install "
            f"--no-install-recommends {HOST_COMPILER_PACKAGES}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / library.name
        done = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(PLUGIN_SOURCE)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ProfileError(f"the QEMU profiling plugin did not build:\n{done.stderr[-2000:]}")
        os.replace(built, library)  # whole or not at all: concurrent builds race harmlessly
    return library


def symbols(elf: Path) -> list[tuple[int, int, str]]:
    """(start, end, name) of every function in ``elf``, Thumb bit cleared, sorted."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    found = []
    with open(elf, "rb") as handle:
        for section in ELFFile(handle).iter_sections():
            if isinstance(section, SymbolTableSection):
                for symbol in section.iter_symbols():
                    if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_size"]:
                        start = symbol["st_value"] & ~1
                        found.append((start, start + symbol["st_size"], symbol.name))
    return sorted(found)


def profile(elf: Path, machine: str, timeout: float = 120.0) -> Profile:
    """Every instruction executed between ``uqh_begin`` and ``uqh_end`` in ``elf`` on QEMU's
    ``machine``, with how many times it ran there, and the transitions between blocks."""
    named = {name: start for start, _, name in symbols(elf)}
    if "uqh_begin" not in named or "uqh_end" not in named:
        raise ProfileError(f"{elf} has no uqh_begin/uqh_end window to profile")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "profile.txt"
        plugin = (
            f"{plugin_library()},begin={named['uqh_begin']:#x},end={named['uqh_end']:#x},out={out}"
        )
        command = [*qemu_command(machine, elf), "-plugin", plugin]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProfileError(f"profiling {elf} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0 or not out.is_file():
            raise ProfileError(
                f"profiling {elf} under QEMU failed (status {done.returncode}): "
                f"{(done.stdout + done.stderr)[-800:]!r}"
            )
        executed, edges = [], {}
        for line in out.read_text().splitlines():
            if line.startswith("E "):
                _, origin, target, count = line.split()
                edges[(int(origin, 16), int(target, 16))] = int(count)
                continue
            address, size, count, first, text = (line.split(" ", 4) + [""])[:5]
            executed.append(Executed(int(address, 16), int(size), int(count), first == "1", text))
    return Profile(executed, edges)


def _registers(text: str) -> int:
    inside = text[text.find("{") + 1 : text.find("}")] if "{" in text else ""
    return max(1, len([r for r in inside.split(",") if r.strip()]))


MULTIPLIES = (
    "mul",
    "mla",
    "mls",
    "smul",
    "smla",
    "smls",
    "smua",
    "smus",
    "smmul",
    "smmla",
    "smmls",
    "umul",
    "umla",
    "umaal",
)
MULTIPLE = ("pop", "push", "ldm", "stm", "vpush", "vpop", "vldm", "vstm")
FPU_MAC = ("vmla", "vmls", "vfma", "vfms", "vnmla", "vnmls", "vfnma", "vfnms")


def _is_load_store(m: str) -> bool:
    return m.startswith(("ldr", "str")) and m not in ("ldrd", "strd")


def classify(item: Executed, previous: Executed | None, fell_through: int) -> dict[str, float]:
    """Executions of ``item`` by cycle class: ``{class: executions}``. A conditional branch
    splits into taken and not taken by ``fell_through``, how often it fell through to the next
    instruction."""
    m, n, operands = item.mnemonic, item.count, item.text.lower().split(None, 1)[-1]
    branch = BRANCH.match(m)
    if branch or m in ("cbz", "cbnz", "tbb", "tbh"):
        base, condition = branch.groups() if branch else (m, None)
        conditional = base in ("cbz", "cbnz") or condition not in (None, "al")
        not_taken = min(fell_through, n) if conditional else 0
        return {"branch_taken": n - not_taken, "branch_not_taken": not_taken}
    if m.startswith(MULTIPLE):
        returns = n if m == "pop" and "pc" in operands else 0
        return {
            "multiple_base": n,
            "multiple_per_register": n * _registers(operands),
            "refill": returns,
        }
    if m in ("ldrd", "strd"):
        return {"load_store_double": n}
    if m in ("vldr", "vstr"):
        return {"fpu_load_store": n}
    if _is_load_store(m):
        kind = "load" if m.startswith("ldr") else "store"
        if kind == "load" and operands.startswith("pc,"):
            return {"load": n, "refill": n}  # a load into pc is a jump
        pipelined = previous is not None and _is_load_store(previous.mnemonic)
        return {f"{kind}_pipelined" if pipelined else kind: n}
    if m in ("sdiv", "udiv"):
        return {"divide": n}
    if m in ("vdiv", "vsqrt"):
        return {"fpu_divide": n}
    if m in FPU_MAC:
        return {"fpu_multiply_accumulate": n}
    if m.startswith("v"):
        return {"fpu": n}
    if m.startswith(MULTIPLIES):
        return {"multiply": n}
    return {"alu": n}


def estimate(profile: Profile, core: str, elf: Path | None = None) -> Timing:
    """The window's estimated cycles on ``core`` (see the module docstring), with the counts
    by cycle class and, given the ``elf``, the executed instructions by function."""
    if core not in CYCLES:
        raise ProfileError(f"no instruction timings for {core!r}; known: {', '.join(CYCLES)}")
    counts: Counter[str] = Counter()
    ending_at = {item.address + item.size: item for item in profile.executed}
    runs: Counter[int] = Counter()  # an instruction can sit in several translated blocks
    for item in profile.executed:
        runs[item.address] += item.count
    previous = None
    for item in profile.executed:
        # Its share of the instruction's fall-throughs (edges are counted per address).
        fell_through = (
            profile.edges.get((item.address, item.address + item.size), 0)
            * item.count
            // max(runs[item.address], 1)
        )
        parts = [(item, previous)]
        if item.first_in_block:
            # QEMU also splits straight-line code into blocks (page boundaries, block size):
            # the executions that arrived from the instruction just before keep it as their
            # predecessor (what load pipelining depends on); the others came by a branch.
            before = ending_at.get(item.address)
            flowed = profile.edges.get((before.address, item.address), 0) if before else 0
            flowed = min(flowed, item.count)
            parts = [
                (replace(item, count=flowed), before),
                (replace(item, count=item.count - flowed), None),
            ]
        for part, predecessor in parts:
            share = fell_through * part.count // max(item.count, 1)
            for kind, executions in classify(part, predecessor, share).items():
                counts[kind] += executions
        previous = item
    table = CYCLES[core]
    by_class = {
        kind: {"executions": float(c), "cycles": c * table[kind]}
        for kind, c in sorted(counts.items())
    }
    timing = Timing(
        instructions=sum(item.count for item in profile.executed),
        cycles=sum(v["cycles"] for v in by_class.values()),
        by_class=by_class,
    )
    if elf is not None:
        timing.by_function = by_function(profile.executed, symbols(elf))
    return timing


def by_function(executed: list[Executed], functions: list[tuple[int, int, str]]) -> dict[str, int]:
    """Executed instructions per function (``?`` for addresses outside every symbol)."""
    import bisect

    starts = [start for start, _, _ in functions]
    totals: Counter[str] = Counter()
    for item in executed:
        i = bisect.bisect_right(starts, item.address) - 1
        inside = i >= 0 and item.address < functions[i][1]
        totals[functions[i][2] if inside else "?"] += item.count
    return dict(totals.most_common())
