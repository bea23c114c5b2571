"""Boards: the microcontroller profiles the deploy stage builds for.

A board is a core (its compiler flags and the QEMU machine that emulates it), a clock, and flash
and RAM sizes. Boards are registered under the entry-point group ``uqbench.boards`` as
factories returning a :class:`Board`, first-party ones exactly like a third party's; ``uqbench
list`` shows them, and ``board.flash_kb=``, ``board.ram_kb=`` and ``board.clock_mhz=`` override
any of them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from uqbench.errors import ConfigError


@dataclass(frozen=True)
class Core:
    """A core as the emulated boards have it: compiler flags, the QEMU machine with that core
    (ANCHORS: MPS2 images), and that machine's memory map: where code and RAM start and where
    the CMSDK TIMER0 the harness counts instructions with sits, and how many instructions one
    of its ticks is under ``-icount shift=0`` (1 GHz of virtual time over its clock)."""

    cflags: tuple[str, ...]
    machine: str
    flash_origin: int = 0x00000000
    ram_origin: int = 0x20000000
    timer0: int = 0x40000000
    tick_instructions: int = 40  # a 25 MHz timer


CORES = {
    "cortex-m4": Core(
        ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), "mps2-an386"
    ),
    "cortex-m7": Core(
        ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"), "mps2-an500"
    ),
    # Armv8-M with TrustZone: the AN505 image boots secure, code in SSRAM1's secure alias,
    # RAM in SSRAM2/3, peripherals at their secure addresses.
    "cortex-m33": Core(
        ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
        "mps2-an505",
        0x10000000,
        0x38000000,
        0x50000000,
        50,
    ),  # 20 MHz
}


CLOCK_MHZ = (1.0, 2000.0)  # the clocks a microcontroller runs at, with room to spare


@dataclass(frozen=True)
class Board:
    """One target. Sizes in KiB (1024 bytes), clock in MHz."""

    name: str
    core: str
    clock_mhz: float
    flash_kb: int
    ram_kb: int
    description: str

    def __post_init__(self) -> None:
        if self.core not in CORES:
            raise ConfigError(f"board {self.name}: core {self.core!r} is not one of {list(CORES)}")
        if not (isinstance(self.clock_mhz, int | float) and CLOCK_MHZ[0] <= self.clock_mhz):
            raise ConfigError(
                f"board.clock_mhz must be at least {CLOCK_MHZ[0]}, got {self.clock_mhz}"
            )
        if not self.clock_mhz <= CLOCK_MHZ[1]:  # inf and NaN fail here too
            raise ConfigError(
                f"board.clock_mhz={self.clock_mhz} is not a microcontroller's clock; give "
                f"{CLOCK_MHZ[0]:g}-{CLOCK_MHZ[1]:g} MHz"
            )
        # Flash lies below RAM and RAM below the peripherals in the core's address map: a size
        # that would run one region into the next cannot be linked, so it is refused here.
        core = CORES[self.core]
        limits = {
            "flash_kb": (core.ram_origin - core.flash_origin) // 1024,
            "ram_kb": (core.timer0 - core.ram_origin) // 1024,
        }
        for key, limit in limits.items():
            value = getattr(self, key)
            if not isinstance(value, int) or not 1 <= value <= limit:
                raise ConfigError(
                    f"board.{key}={value} does not fit {self.core}'s address map: give a whole "
                    f"number of KiB from 1 to {limit:,}"
                )

    @property
    def cflags(self) -> tuple[str, ...]:
        return CORES[self.core].cflags

    @property
    def qemu_machine(self) -> str:
        return CORES[self.core].machine

    @property
    def memory(self) -> Core:
        """The emulated machine's memory map (origins and the timer's address)."""
        return CORES[self.core]

    def with_overrides(self, **overrides: Any) -> Board:
        """This board with ``flash_kb``, ``ram_kb`` or ``clock_mhz`` replaced."""
        unknown = set(overrides) - {"flash_kb", "ram_kb", "clock_mhz"}
        if unknown:
            raise ConfigError(
                f"unknown board option(s) {sorted(unknown)}: valid are board.flash_kb, "
                f"board.ram_kb, board.clock_mhz"
            )
        return dataclasses.replace(self, **overrides)


def small_mcu() -> Board:
    """The paper's Small-MCU: STM32L432KC class."""
    return Board(
        "small-mcu",
        "cortex-m4",
        80,
        256,
        64,
        "Cortex-M4F 80 MHz, 256 KB flash, 64 KB SRAM (STM32L432KC class)",
    )


def big_mcu() -> Board:
    """The paper's Big-MCU: STM32F767ZI class."""
    return Board(
        "big-mcu",
        "cortex-m7",
        216,
        2048,
        512,
        "Cortex-M7 216 MHz, 2 MB flash, 512 KB SRAM (STM32F767ZI class)",
    )


def nucleo_l4r5zi() -> Board:
    """The MLPerf Tiny reference board."""
    return Board(
        "nucleo-l4r5zi",
        "cortex-m4",
        120,
        2048,
        640,
        "Cortex-M4F 120 MHz, 2 MB flash, 640 KB SRAM (MLPerf Tiny reference)",
    )


def mid_mcu() -> Board:
    """A Cortex-M33 board: the STM32U575 class (MLPerf Tiny lists it, ANCHORS)."""
    return Board(
        "mid-mcu",
        "cortex-m33",
        160,
        2048,
        768,
        "Cortex-M33 160 MHz, 2 MB flash, 768 KB SRAM (STM32U575 class)",
    )


def select(names: Any, options: dict[str, Any] | None = None) -> list[Board]:
    """The registered boards ``names`` (``a,b``, ``[a,b]`` or a list), each with ``options``
    (``flash_kb``, ``ram_kb``, ``clock_mhz``: command-line strings or values, typed by
    :class:`Board`'s fields with the same grammar as ``fit``'s options) applied and checked.
    Raises :class:`ConfigError` naming the problem before any work."""
    from uqbench import registry
    from uqbench.config import coerce, split_list

    hints = typing.get_type_hints(Board)
    typed = {
        key: coerce(value, hints[key], f"board.{key}") if key in hints else value
        for key, value in (options or {}).items()
    }
    boards = [
        registry.load("board", name)().with_overrides(**typed)
        for name in split_list(names, "board")
    ]
    if not boards:
        raise ConfigError(
            "board= names no board; give one or more of " + ", ".join(registry.names("board"))
        )
    return boards
