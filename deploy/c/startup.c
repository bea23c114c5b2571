/* Minimal Cortex-M start-up for the emulated boards: vector table, FPU on, .data/.bss set-up,
 * main, then a semihosting exit with main's status. */
#include <stdint.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

static int semihost(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void uq_write(const char *text) { semihost(0x04, text); }

void uq_exit(int status) {
  /* ADP_Stopped_ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown (QEMU exits 1). */
  semihost(0x18, (const void *)(status == 0 ? 0x20026 : 0x20024));
  for (;;) {
  }
}

void Reset_Handler(void) {
  /* Enable the FPU (CP10 and CP11 full access in SCB->CPACR) before any float instruction. */
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  memcpy(&_sdata, &_sidata, (uint32_t)&_edata - (uint32_t)&_sdata);
  memset(&_sbss, 0, (uint32_t)&_ebss - (uint32_t)&_sbss);
  uq_exit(main());
}

void Fault_Handler(void) {
  uq_write("FAULT\n");
  uq_exit(1);
}

__attribute__((section(".isr_vector"), used)) const void *const uq_vectors[16] = {
    &_estack, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler};
