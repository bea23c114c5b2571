"""The standalone C project a user builds for a real board: the model, the kernels, the
score, a Makefile, an example linker script and a README."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_project(folder: Path, files: dict[str, str], board: Any) -> None:
    """The standalone C project: the model, the kernels, the score, a Makefile, a README."""
    from uqbench.deploy.firmware import linker_script

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    flags = " ".join(board.cflags)
    (folder / "Makefile").write_text(
        f"# Builds the uqbench model as a static library for {board.name} ({board.core}).\n"
        f"CC = arm-none-eabi-gcc\nCFLAGS = {flags} -O3 -ffunction-sections -fdata-sections\n"
        "OBJECTS = $(patsubst %.c,%.o,$(wildcard *.c))\n\n"
        "libuqmodel.a: $(OBJECTS)\n\tarm-none-eabi-ar rcs $@ $^\n\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n\n"
        "clean:\n\trm -f $(OBJECTS) libuqmodel.a\n"
    )
    (folder / "link-example.ld").write_text(linker_script(board))
    (folder / "README.md").write_text(
        f"""# uqbench model for {board.name}

Files: `model.c` / `model.h` (the int8 network: weights in flash, one static arena),
`uq_kernels.c` / `uq_kernels.h` (int8 kernels, TFLite Micro arithmetic), `uq_kernels_dsp.c`
(the same kernels for cores with the DSP extension, chosen at compile time by
`__ARM_FEATURE_DSP`; `-DUQ_REFERENCE_KERNELS` keeps the portable ones, and `model.c` carries
the weight layout each expects), `uq_score.c` (the uncertainty score in float32 from the
network's int8 outputs: the logits, then any taps the score reads; its working memory is the
static `uq_scratch`).

Entry points:

```c
void uq_infer(const int8_t *input, int8_t *out);  /* input: int8 NHWC, UQ_INPUT_BYTES */
float uq_score(const int8_t *out, float *probs);  /* out: UQ_OUTPUT_BYTES; probs: per class */
```

Quantize the input as the run's datamodule normalizes it, then with the input scale and zero
point in `model.tflite`. `make` builds `libuqmodel.a` with `arm-none-eabi-gcc`; link it into
your firmware (`link-example.ld` shows this board's memory sizes) with `-lm`.

Timing on silicon: enable the DWT cycle counter (`CoreDebug->DEMCR |= TRCENA;
DWT->CYCCNT = 0; DWT->CTRL |= 1;`), read `DWT->CYCCNT` before and after `uq_infer` and
`uq_score`. The latency in `deploy.json` is an emulated estimate, not a measurement.
"""
    )
