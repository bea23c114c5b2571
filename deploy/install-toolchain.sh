#!/bin/sh
# The ARM embedded toolchain and QEMU that the deploy stage builds and emulates with, and a host
# C compiler for its QEMU profiling plugin (Debian/Ubuntu packages; about 25 s and 0.9 GB).
# Does nothing when all three are installed.
set -e
if command -v arm-none-eabi-gcc >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1 \
  && command -v cc >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc libc6-dev
