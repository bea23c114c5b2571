/* uqbench's QEMU TCG plugin: what the guest executed inside a window, instruction by instruction,
 * and how each block was left.
 *
 * Built for the host by uqbench.deploy.timing and loaded with
 *   qemu-system-arm ... -plugin libuqprofile.so,begin=0xADDR,end=0xADDR,out=FILE
 * The window opens when the block at `begin` runs and closes when the block at `end` runs (the
 * firmware calls an empty function at each, around the timed inference). Inside it, every block
 * execution is counted, and so is every transition from one block to the next, keyed by the
 * address of the last instruction of the block left and the first of the block entered: a
 * conditional branch at A of size S was not taken exactly as often as the edge (A, A + S) ran.
 * At exit, FILE gets
 *   "<address hex> <size> <count> <first> <disassembly>"  per instruction that ran in a window
 *     (<first> is 1 for the first instruction of its block), and
 *   "E <from hex> <to hex> <count>"                        per edge.
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

enum { UQ_CB_NO_REGS = 0 };

extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t i);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_vcpu_tb_trans_cb(
    qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern void qemu_plugin_register_vcpu_tb_exec_cb(
    struct qemu_plugin_tb *tb, void (*cb)(unsigned int, void *), int flags, void *userdata);
extern void qemu_plugin_register_atexit_cb(
    qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, void *), void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

typedef struct {
  uint64_t start, last; /* addresses of the first and the last instruction */
  uint64_t window;      /* executions inside the window */
  size_t n;
  uint64_t *addresses;
  size_t *sizes;
  char **disassembly;
} Block;

typedef struct {
  uint64_t from, to, count;
} Edge;

static Block **blocks;
static size_t used, capacity;
static Edge *edges;
static size_t edge_slots, edge_used;
static const Block *previous;
static int inside;
static uint64_t begin_address, end_address;
static char out_path[4096];

static size_t slot_of(uint64_t from, uint64_t to, size_t slots) {
  uint64_t h = (from * 0x9E3779B97F4A7C15ull) ^ (to + 0x632BE59BD9B4E019ull + (from << 6));
  return (size_t)(h ^ (h >> 29)) & (slots - 1);
}

static void edge_add(uint64_t from, uint64_t to) {
  if (2 * (edge_used + 1) > edge_slots) { /* keep the table at most half full */
    size_t slots = edge_slots ? 2 * edge_slots : 1 << 14;
    Edge *grown = calloc(slots, sizeof *grown);
    for (size_t i = 0; i < edge_slots; i++) {
      if (!edges[i].count) continue;
      size_t j = slot_of(edges[i].from, edges[i].to, slots);
      while (grown[j].count) j = (j + 1) & (slots - 1);
      grown[j] = edges[i];
    }
    free(edges);
    edges = grown, edge_slots = slots;
  }
  size_t j = slot_of(from, to, edge_slots);
  while (edges[j].count && (edges[j].from != from || edges[j].to != to))
    j = (j + 1) & (edge_slots - 1);
  if (!edges[j].count) edges[j].from = from, edges[j].to = to, edge_used++;
  edges[j].count++;
}

static void on_exec(unsigned int vcpu, void *userdata) {
  (void)vcpu;
  const Block *block = userdata;
  if (block->start == begin_address) inside = 1, previous = 0;
  if (inside) {
    ((Block *)block)->window++;
    if (previous) edge_add(previous->last, block->start);
    previous = block;
  }
  if (block->start == end_address) inside = 0;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  if (used == capacity) {
    capacity = capacity ? 2 * capacity : 4096;
    blocks = realloc(blocks, capacity * sizeof *blocks);
  }
  Block *block = calloc(1, sizeof *block);
  block->n = qemu_plugin_tb_n_insns(tb);
  block->start = qemu_plugin_tb_vaddr(tb);
  block->addresses = calloc(block->n, sizeof *block->addresses);
  block->sizes = calloc(block->n, sizeof *block->sizes);
  block->disassembly = calloc(block->n, sizeof *block->disassembly);
  for (size_t i = 0; i < block->n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    block->addresses[i] = qemu_plugin_insn_vaddr(insn);
    block->sizes[i] = qemu_plugin_insn_size(insn);
    block->disassembly[i] = qemu_plugin_insn_disas(insn);
  }
  block->last = block->n ? block->addresses[block->n - 1] : block->start;
  blocks[used++] = block;
  qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, UQ_CB_NO_REGS, block);
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
  for (size_t i = 0; i < edge_slots; i++) {
    if (edges[i].count)
      fprintf(out, "E %llx %llx %llu\n", (unsigned long long)edges[i].from,
              (unsigned long long)edges[i].to, (unsigned long long)edges[i].count);
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
