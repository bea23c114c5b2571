"""The latency model: instructions counted by the project's QEMU plugin agree with the timer's
exact count, are attributed to functions, and are charged the core's documented cycles."""

from __future__ import annotations

import pytest
import torch
from test_deploy_firmware import _graph
from uqbench.deploy.boards import big_mcu, mid_mcu, small_mcu
from uqbench.deploy.codegen import generate
from uqbench.deploy.convert import quantize_input
from uqbench.deploy.firmware import build, emulate, harness
from uqbench.deploy.timing import CYCLES, Executed, Profile, classify, estimate, profile


def _at(address, text, count=1, first=False, size=2):
    return Executed(address, size, count, first, text)


def test_a_loop_is_charged_the_cortex_m4_table():
    # A 10-iteration multiply-accumulate loop: two loads (the second pipelines behind the
    # first), a MAC, a decrement, and a backward branch taken 9 times out of 10.
    loop = [
        _at(0x100, "ldrsb.w r4, [r0], #1", 10, first=True, size=4),
        _at(0x104, "ldrsb.w r5, [r1], #1", 10, size=4),
        _at(0x108, "smlabb r3, r4, r5, r3", 10, size=4),
        _at(0x10C, "subs r2, #1", 10),
        _at(0x10E, "bne #0x100", 10),
        _at(0x110, "pop {r4, r5, pc}", 1, first=True),
    ]
    # The plugin's edge count: the branch at 0x10E fell through to 0x110 once.
    timing = estimate(Profile(loop, {(0x10E, 0x110): 1, (0x10E, 0x100): 9}), "cortex-m4")
    # loads 2 + 1, MAC 1, subs 1: 5 x 10; branch 9 x 3 + 1; pop: 1 + 3 registers + 2 refill
    assert timing.cycles == 50 + 28 + 6
    assert timing.instructions == 51
    m7 = estimate(Profile(loop, {(0x10E, 0x110): 1, (0x10E, 0x100): 9}), "cortex-m7")
    # loads 1 + 1, MAC 1, subs 0.5: 3.5 x 10; branch 9 x 1 + 0.5; pop: 1 + 3 x 0.5 + 1.
    assert m7.cycles == 35 + 9.5 + 3.5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bl #0x2000", {"branch_taken": 4, "branch_not_taken": 0}),  # a call: always taken
        ("bls #0x2000", {"branch_taken": 3, "branch_not_taken": 1}),  # b + ls, conditional
        ("cbz r0, #0x2000", {"branch_taken": 3, "branch_not_taken": 1}),
        ("bic r0, r1, #3", {"alu": 4}),  # not a branch
        ("smlad r0, r1, r2, r0", {"multiply": 4}),
        ("sdiv r0, r1, r2", {"divide": 4}),
        ("ldrd r0, r1, [r2]", {"load_store_double": 4}),
        ("ldr pc, [sp], #4", {"load": 4, "refill": 4}),
        ("vmla.f32 s0, s1, s2", {"fpu_multiply_accumulate": 4}),
        ("vdiv.f32 s0, s1, s2", {"fpu_divide": 4}),
        ("vldr s0, [r0]", {"fpu_load_store": 4}),
        (
            "push {r4, r5, r6, lr}",
            {"multiple_base": 4, "multiple_per_register": 16, "refill": 0},
        ),
        ("it ne", {"alu": 4}),
    ],
)
def test_instruction_classes(text, expected):
    assert classify(_at(0, text, 4), None, fell_through=1) == expected
    for table in CYCLES.values():
        assert set(expected) <= set(table)


def test_an_unknown_core_is_refused():
    with pytest.raises(Exception, match="no instruction timings for 'cortex-m0'"):
        estimate(Profile([]), "cortex-m0")


@pytest.mark.parametrize("board", [small_mcu(), big_mcu(), mid_mcu()], ids=lambda b: b.name)
def test_the_plugin_counts_what_the_timer_counts_and_attributes_it(board, tmp_path):
    graph, shape = _graph("digits-cnn")
    files, _ = generate(graph)
    files["main.c"] = harness(quantize_input(graph, torch.randn(2, *shape)).reshape(2, -1))
    result = build(files, board, tmp_path)
    emulation = emulate(result.elf, board, 2)
    executed = profile(result.elf, board.qemu_machine)
    timing = estimate(executed, board.core, result.elf)
    # Branches end blocks, so the edges leaving a branch add up to its executions: taken to
    # its target, not taken to the next instruction (all but the window's last one).
    leaving: dict[int, int] = {}
    for (origin, _), count in executed.edges.items():
        leaving[origin] = leaving.get(origin, 0) + count
    runs: dict[int, int] = {}
    for item in executed.executed:
        if item.mnemonic in (
            "bne",
            "beq",
            "blt",
            "bge",
            "bgt",
            "ble",
            "bhi",
            "bls",
            "blo",
            "bhs",
            "bcc",
            "bcs",
            "cbz",
            "cbnz",
        ):
            runs[item.address] = runs.get(item.address, 0) + item.count
    assert len(runs) > 5
    assert sum(leaving.get(address) != n for address, n in runs.items()) <= 1
    assert 0 <= timing.instructions - emulation.instructions < 64
    assert sum(timing.by_function.values()) == timing.instructions
    # The convolution's dot products dominate (the reference kernel, or the DSP kernels' own).
    assert max(timing.by_function, key=timing.by_function.get) in ("uq_conv2d", "rows_by_patches")
    # The harness's share is the timer reads and the window calls; nothing it prints.
    assert timing.by_function.get("main", 0) < 16 and "uqh_hex" not in timing.by_function
    assert timing.cycles == pytest.approx(sum(v["cycles"] for v in timing.by_class.values()))
    cpi = timing.cycles / timing.instructions
    assert (0.5 < cpi < 1.2) if board.core == "cortex-m7" else (1.0 < cpi < 2.0)
