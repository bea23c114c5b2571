/* uqbench's QEMU TCG plugin: how many times each guest instruction ran inside a window.
 *
 * Built for the host by uqbench.deploy.timing and loaded with
 *   qemu-system-arm ... -plugin libuqprofile.so,begin=0xADDR,end=0xADDR,out=FILE
 * Every translated block gets an inline counter (cheap: no call per execution). When the block
 * at `begin` runs, every counter is snapshotted; when the block at `end` runs, what each counter
 * gained since is added to its window total. At exit, FILE gets one line per instruction that ran
 * in a window: "<address hex> <size> <count> <first> <disassembly>", where <first> is 1 for the
 * first instruction of its block (the line before is then not the instruction before it). The firmware calls an empty function at
 * `begin` just before the timed inference and one at `end` just after it.
 *
 * The plugin API is QEMU's (version 1, QEMU 7.x); the declarations below are written from its
 * documentation, so no QEMU header is needed to build this file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;

enum { UQ_INLINE_ADD_U64 = 0, UQ_CB_NO_REGS = 0 };

extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t i);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_vcpu_tb_trans_cb(
    qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern void qemu_plugin_register_vcpu_tb_exec_inline(
    struct qemu_plugin_tb *tb, int op, void *ptr, uint64_t imm);
extern void qemu_plugin_register_vcpu_tb_exec_cb(
    struct qemu_plugin_tb *tb, void (*cb)(unsigned int, void *), int flags, void *userdata);
extern void qemu_plugin_register_atexit_cb(
    qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, void *), void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

typedef struct {
  uint64_t count;    /* executions so far (inline counter) */
  uint64_t snapshot; /* count when the current window began */
  uint64_t window;   /* executions inside windows */
  size_t n;
  uint64_t *addresses;
  size_t *sizes;
  char **disassembly;
} Block;

static Block **blocks;
static size_t used, capacity;
static uint64_t begin_address, end_address;
static char out_path[4096];

static void on_begin(unsigned int vcpu, void *userdata) {
  (void)vcpu;
  (void)userdata;
  for (size_t i = 0; i < used; i++) blocks[i]->snapshot = blocks[i]->count;
}

static void on_end(unsigned int vcpu, void *userdata) {
  (void)vcpu;
  (void)userdata;
  for (size_t i = 0; i < used; i++) {
    blocks[i]->window += blocks[i]->count - blocks[i]->snapshot;
    blocks[i]->snapshot = blocks[i]->count;
  }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  if (used == capacity) {
    capacity = capacity ? 2 * capacity : 4096;
    blocks = realloc(blocks, capacity * sizeof *blocks);
  }
  Block *block = calloc(1, sizeof *block);
  block->n = qemu_plugin_tb_n_insns(tb);
  block->addresses = calloc(block->n, sizeof *block->addresses);
  block->sizes = calloc(block->n, sizeof *block->sizes);
  block->disassembly = calloc(block->n, sizeof *block->disassembly);
  for (size_t i = 0; i < block->n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    block->addresses[i] = qemu_plugin_insn_vaddr(insn);
    block->sizes[i] = qemu_plugin_insn_size(insn);
    block->disassembly[i] = qemu_plugin_insn_disas(insn);
  }
  blocks[used++] = block;
  /* The counter runs first, so a window that opens on this block starts after it. */
  qemu_plugin_register_vcpu_tb_exec_inline(tb, UQ_INLINE_ADD_U64, &block->count, 1);
  uint64_t start = qemu_plugin_tb_vaddr(tb);
  if (start == begin_address) qemu_plugin_register_vcpu_tb_exec_cb(tb, on_begin, UQ_CB_NO_REGS, 0);
  if (start == end_address) qemu_plugin_register_vcpu_tb_exec_cb(tb, on_end, UQ_CB_NO_REGS, 0);
}

static void on_exit_write(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  FILE *out = fopen(out_path, "w");
  if (!out) return;
  for (size_t b = 0; b < used; b++) {
    Block *block = blocks[b];
    if (!block->window) continue;
    for (size_t i = 0; i < block->n; i++) {
      fprintf(out, "%llx %zu %llu %d %s\n", (unsigned long long)block->addresses[i],
              block->sizes[i], (unsigned long long)block->window, i == 0,
              block->disassembly[i] ? block->disassembly[i] : "?");
    }
  }
  fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(
    qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++) {
    if (!strncmp(argv[i], "begin=", 6)) begin_address = strtoull(argv[i] + 6, 0, 0);
    else if (!strncmp(argv[i], "end=", 4)) end_address = strtoull(argv[i] + 4, 0, 0);
    else if (!strncmp(argv[i], "out=", 4)) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    else return -1;
  }
  if (!begin_address || !end_address || !out_path[0]) return -1;
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_exit_write, 0);
  return 0;
}
