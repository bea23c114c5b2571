"""Generated C built with arm-none-eabi-gcc and run under QEMU: outputs equal the host int8
reference (itself equal to tflite-micro) bit for bit; arena plans; sizes; OOM; hangs."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest
import torch
from uqbench.deploy.arena import plan_arena
from uqbench.deploy.boards import big_mcu, mid_mcu, small_mcu
from uqbench.deploy.codegen import generate
from uqbench.deploy.convert import quantize_input, to_graph
from uqbench.deploy.firmware import (
    ToolchainMissing,
    build,
    check_toolchain,
    elf_sizes,
    emulate,
    harness,
)
from uqbench.deploy.reference import run

from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.backbones.dscnn import ds_cnn
from uqbench.backbones.mobilenetv2 import mobilenetv2
from uqbench.backbones.resnet8 import resnet8
from uqbench.errors import UQBenchError

BACKBONES = {
    "digits-cnn": (digits_cnn, (1, 28, 28)),
    "resnet8": (resnet8, (3, 32, 32)),
    "ds-cnn": (ds_cnn, (1, 49, 10)),
    "ds-cnn-40x98": (ds_cnn, (1, 40, 98)),
    "mobilenetv2": (mobilenetv2, (3, 64, 64)),
}


def _graph(name):
    torch.manual_seed(0)
    factory, shape = BACKBONES[name]
    net = factory(10, shape).eval()
    return to_graph(net, [torch.randn(16, *shape)]), shape


@pytest.mark.parametrize("name", list(BACKBONES))
def test_arena_plan_is_valid_and_at_the_lower_bound(name):
    graph, _ = _graph(name)
    plan = plan_arena(graph)
    assert plan.size <= 1.05 * plan.lower_bound  # measured: equal for every backbone
    # Validity: two tensors alive at the same step never share a byte.
    life = {}
    for step, op in enumerate(graph.ops):
        for t in op.inputs + op.outputs:
            if graph.tensors[t].data is None:
                first, _ = life.get(t, (step, step))
                life[t] = (min(first, step), step)
    life[graph.inputs[0]] = (-1, life[graph.inputs[0]][1])
    alias = {op.outputs[0] for op in graph.ops if op.kind == "reshape"}
    names = [t for t in life if t not in alias]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                ra = (plan.offsets[a], plan.offsets[a] + int(np.prod(graph.tensors[a].shape)))
                rb = (plan.offsets[b], plan.offsets[b] + int(np.prod(graph.tensors[b].shape)))
                assert ra[1] <= rb[0] or rb[1] <= ra[0], (a, b)


@pytest.mark.parametrize("name", ["digits-cnn", "resnet8", "ds-cnn"])
@pytest.mark.parametrize("board", [small_mcu(), big_mcu(), mid_mcu()], ids=lambda b: b.name)
def test_firmware_is_bit_exact_under_emulation(name, board, tmp_path):
    graph, shape = _graph(name)
    x = quantize_input(graph, torch.randn(3, *shape))
    expected = run(graph, x)[graph.outputs[0]].reshape(len(x), -1)
    files, _ = generate(graph)
    files["main.c"] = harness(x.reshape(len(x), -1))
    result = build(files, board, tmp_path)
    assert result.elf is not None and not result.oom
    emulation = emulate(result.elf, board, len(x))
    np.testing.assert_array_equal(emulation.outputs, expected)
    # The DSP kernels' stack buffers (two expanded patches, a chunk's sums and requantization
    # parameters, a depthwise band's planes) stay well inside the 8 KB reservation.
    assert emulation.instructions > 1_000_000 and 64 < emulation.stack_bytes < 5 * 1024
    again = emulate(result.elf, board, len(x))
    assert again.instructions == emulation.instructions  # -icount: exactly repeatable


def test_sizes_agree_with_binutils(tmp_path):
    graph, shape = _graph("digits-cnn")
    files, _ = generate(graph)
    files["main.c"] = harness(quantize_input(graph, torch.randn(1, *shape)).reshape(1, -1))
    result = build(files, small_mcu(), tmp_path)
    flash, ram = elf_sizes(result.elf)
    text = subprocess.run(
        ["arm-none-eabi-size", "-A", str(result.elf)], capture_output=True, text=True, check=True
    ).stdout
    sizes = {
        line.split()[0]: int(line.split()[1])
        for line in text.splitlines()[2:]
        if line.strip() and line.split()[0].startswith(".")
    }
    loaded = (".isr_vector", ".text", ".ARM.exidx", ".data")
    assert flash == sum(sizes.get(section, 0) for section in loaded)
    assert ram == sizes[".data"] + sizes[".bss"] + sizes[".stack"]


def test_a_model_too_big_for_the_board_is_an_oom_result(tmp_path):
    graph, shape = _graph("resnet8")
    files, plan = generate(graph)
    files["main.c"] = harness(quantize_input(graph, torch.randn(1, *shape)).reshape(1, -1))
    tiny = small_mcu().with_overrides(ram_kb=16, flash_kb=64)
    result = build(files, tiny, tmp_path)
    assert result.elf is None
    assert result.oom["RAM"] > plan.size - 16 * 1024 - 1 and result.oom["FLASH"] > 0


def test_a_hanging_firmware_is_stopped_and_named(tmp_path):
    files = {"main.c": "int main(void) { for (;;) { } }\n"}
    result = build(files, small_mcu(), tmp_path)
    with pytest.raises(UQBenchError, match="did not finish within 2 s"):
        emulate(result.elf, small_mcu(), 1, timeout=2)


def test_a_faulting_firmware_is_stopped_and_the_fault_named(tmp_path):
    # A store to an address no memory answers: a bus fault, escalated to HardFault.
    files = {"main.c": "int main(void) { *(volatile int *)0xF0000000u = 1; return 0; }\n"}
    result = build(files, small_mcu(), tmp_path)
    with pytest.raises(UQBenchError, match="stopped with status 1 .*FAULT"):
        emulate(result.elf, small_mcu(), 1)


def test_a_stack_used_to_its_last_byte_is_refused(tmp_path):
    # What the harness prints when no painted byte is left: the stack ran into the memory below.
    files = {
        "main.c": "void uq_write(const char *t);\n"
        'int main(void) { uq_write("instructions=1\\nstack=8192\\ndone\\n"); return 0; }\n'
    }
    result = build(files, small_mcu(), tmp_path)
    with pytest.raises(UQBenchError, match="used all of its 8,192-byte stack"):
        emulate(result.elf, small_mcu(), 1)


def test_a_missing_toolchain_names_the_packages(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(
        ToolchainMissing,
        match="apt-get install --no-install-recommends "
        "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm",
    ):
        check_toolchain()


def test_board_overrides_are_checked():
    board = big_mcu().with_overrides(clock_mhz=100)
    assert board.clock_mhz == 100 and board.qemu_machine == "mps2-an500"
    with pytest.raises(UQBenchError, match="unknown board option"):
        big_mcu().with_overrides(sram=1)
    with pytest.raises(UQBenchError, match="board.ram_kb=0 does not fit"):
        dataclasses.replace(small_mcu(), ram_kb=0)


@pytest.mark.slow
def test_mobilenetv2_firmware_is_bit_exact_even_with_a_degenerate_calibration(tmp_path):
    """Freshly initialized: the pooled features span a tiny range, so a bias over that scale
    saturates; the accumulator still never overflows int32 on either side."""
    torch.manual_seed(0)
    net = mobilenetv2(10, (3, 64, 64)).eval()
    graph = to_graph(net, [torch.randn(8, 3, 64, 64)])
    x = quantize_input(graph, torch.randn(2, 3, 64, 64))
    expected = run(graph, x)[graph.outputs[0]].reshape(2, -1)
    files, _ = generate(graph)
    files["main.c"] = harness(x.reshape(2, -1))
    result = build(files, big_mcu(), tmp_path)
    emulation = emulate(result.elf, big_mcu(), 2, timeout=120)
    np.testing.assert_array_equal(emulation.outputs, expected)
