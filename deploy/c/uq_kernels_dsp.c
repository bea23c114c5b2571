/* uqbench int8 kernels for cores with the DSP extension (Cortex-M4, M7, M33): the same results
 * as the reference kernels in uq_kernels.c, bit for bit, in fewer instructions.
 *
 * - Convolution and fully connected layers are dot products of a patch with a weight row. The
 *   patches of two output pixels are expanded once into 16-bit (x - input zero point) values
 *   (SXTAB16) and interleaved, then reused for every output channel; the inner loop takes two
 *   pixels and two output channels at a time, so each weight word loaded serves two pixels and
 *   each patch word two channels, and SMLAD does two multiply-accumulates per instruction.
 * - Expanded inputs are in the order SXTB16 unpacks bytes: for every 4 inputs b0 b1 b2 b3 the
 *   halfword pairs (b0, b2) then (b1, b3), so a weight word unpacked by SXTB16 and by SXTB16
 *   with ROR #8 meets its inputs without repacking. Weights come in a DSP layout (pairs of
 *   rows interleaved by groups of 4) that the code generator writes for these builds only.
 * - Depthwise 3 x 3 convolutions (strides 1 and 2, channels in fours) run on int16 planes, one
 *   per channel, each window sliding along the planes' lines with its weights in registers
 *   (uq_depthwise_planes); other depthwise layers take four channels per word, one
 *   multiply-accumulate per channel and tap (SMLABB / SMLATT on the unpacked halves), a 3 x 3
 *   window unrolled.
 * - The residual add looks each input's rescaled value up in a 256-entry table.
 * - Requantization computes TFLite's double rounding in fewer steps: its saturating rounding
 *   doubling high multiply equals (a * b + 2^30) >> 31 with an arithmetic shift (the truncating
 *   division of the nudged product, rewritten), and with its rounding right shift by e >= 2 it
 *   becomes one 64-bit multiply-accumulate and one shift (requantize_fast). Each chunk of 64
 *   output channels prepares its channels' parameters once; a convolution requantizes its two
 *   pixels in one loop, a depthwise channel its band of outputs with the parameters in registers.
 *
 * Built only where __ARM_FEATURE_DSP is defined and UQ_REFERENCE_KERNELS is not (uq_kernels.h). */
#include "uq_kernels.h"

#if UQ_DSP
#include <arm_acle.h>
#include <string.h>

/* Longest patch (kh * kw * c) the stack buffers take (4 bytes of stack per element; longer
 * patches fall back to the reference loop), and the output channels requantized per pass. */
#define UQ_MAX_PATCH 640
#define UQ_CHUNK 64

static inline uint32_t load32(const void *p) {
  uint32_t v;
  memcpy(&v, p, 4); /* an unaligned LDR on these cores */
  return v;
}

static inline uint32_t sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

static inline uint32_t sxtab16_ror8(uint32_t a, uint32_t x) {
  uint32_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
  return r;
}

/* Two patches, expanded and interleaved for the dot products: for every group of 4 inputs
 * x0 x1 x2 x3 (x - zero point, 16 bits), the words p0(x0,x2) p1(x0,x2) p0(x1,x3) p1(x1,x3),
 * the order SXTB16 and SXTB16 ROR #8 unpack a weight word in; after the k / 4 groups, the k % 4
 * tail inputs of p0 then of p1, in natural order. Each patch is `rows` runs of `run` contiguous
 * bytes, `stride` bytes apart (a kernel's rows in an NHWC map; one run for a vector); a run that
 * is not whole groups of 4 is first gathered into `scratch` (2 x rows x run bytes). */
static void interleave(const int8_t *src0, const int8_t *src1, int rows, int run, int stride,
                       uint32_t minus_zero, int32_t zero, int8_t *scratch, uint32_t *cols) {
  int k = rows * run;
  if (run & 3 && rows > 1) { /* groups would straddle runs: make each patch contiguous */
    for (int i = 0; i < rows; i++) {
      memcpy(scratch + i * run, src0 + i * stride, (size_t)run);
      memcpy(scratch + k + i * run, src1 + i * stride, (size_t)run);
    }
    src0 = scratch, src1 = scratch + k, run = k, rows = 1;
  }
  int groups = k >> 2, tail = k & 3;
  for (int i = 0; i < rows; i++) {
    const int8_t *a = src0 + i * stride, *b = src1 + i * stride;
    for (int n = run >> 2; n; n--, a += 4, b += 4, cols += 4) {
      uint32_t v0 = load32(a), v1 = load32(b);
      cols[0] = __sxtab16(minus_zero, v0);
      cols[1] = __sxtab16(minus_zero, v1);
      cols[2] = sxtab16_ror8(minus_zero, v0);
      cols[3] = sxtab16_ror8(minus_zero, v1);
    }
  }
  int16_t *rest = (int16_t *)cols; /* rows == 1 here whenever there is a tail */
  for (int i = 0; i < tail; i++) {
    rest[i] = (int16_t)(src0[4 * groups + i] - zero);
    rest[tail + i] = (int16_t)(src1[4 * groups + i] - zero);
  }
}

/* TFLite's saturating rounding doubling high multiply, rewritten (see the file's comment). */
static inline int32_t srdhm(int32_t a, int32_t b) {
  /* TFLite saturates a = b = INT32_MIN; b is a multiplier from quantize_multiplier, never
   * negative, so that case cannot occur here. */
  return (int32_t)(((int64_t)a * b + (1ll << 30)) >> 31);
}

/* One group of four inputs of both patches against a pair of weight rows: 16 multiply-
 * accumulates. `w` points at the pair's 8 bytes for the group (4 of each row: see the layout in
 * rows_by_patches), `x` at the group's 4 interleaved words. */
#define STEP(w, x)                                                       \
  do {                                                                   \
    uint32_t r0 = load32(w), r1 = load32((w) + 4);                       \
    uint32_t v0 = __sxtb16(r0), v1 = __sxtb16(r1);                       \
    uint32_t x0 = (x)[0], x1 = (x)[1];                                   \
    a00 = __smlad(x0, v0, a00);                                          \
    a01 = __smlad(x0, v1, a01);                                          \
    a10 = __smlad(x1, v0, a10);                                          \
    a11 = __smlad(x1, v1, a11);                                          \
    v0 = sxtb16_ror8(r0);                                                \
    v1 = sxtb16_ror8(r1);                                                \
    x0 = (x)[2], x1 = (x)[3];                                            \
    a00 = __smlad(x0, v0, a00);                                          \
    a01 = __smlad(x0, v1, a01);                                          \
    a10 = __smlad(x1, v0, a10);                                          \
    a11 = __smlad(x1, v1, a11);                                          \
  } while (0)

/* Two interleaved patches (see interleave) against every weight row, the bias added: sum0[o]
 * and sum1[o]. The weights come in the DSP layout the code generator writes for these kernels
 * (uqbench.deploy.codegen.dsp_weight_layout): each pair of rows (o, o + 1) as 4 bytes of row o
 * then 4 of row o + 1 per group of 4 inputs, then the two rows' k % 4 tails; an odd last row as
 * it is. One pointer walks the weights and one the patches, so the loop keeps its four sums,
 * two weight words, two input words and its counters in registers (the first scheduling pass,
 * which would raise that pressure, is off). */
__attribute__((noinline, optimize("no-schedule-insns"))) static void rows_by_patches(
    const uint32_t *cols, int k, const int8_t *weights, const int32_t *bias, int out_c,
    int32_t *sum0, int32_t *sum1) {
  int groups = k >> 2, tail = k & 3, o = 0;
  const int16_t *rest = (const int16_t *)(cols + 4 * groups);
  const int8_t *w = weights;
  for (; o + 2 <= out_c; o += 2) {
    int32_t a00 = bias[o], a01 = bias[o + 1], a10 = a00, a11 = a01;
    const uint32_t *x = cols;
    int n = groups;
    for (; n >= 4; n -= 4, w += 32, x += 16) { /* sixteen inputs per pass */
      STEP(w, x);
      STEP(w + 8, x + 4);
      STEP(w + 16, x + 8);
      STEP(w + 24, x + 12);
    }
    for (; n; n--, w += 8, x += 4) STEP(w, x);
    for (int i = 0; i < tail; i++) {
      a00 += rest[i] * w[i];
      a01 += rest[i] * w[tail + i];
      a10 += rest[tail + i] * w[i];
      a11 += rest[tail + i] * w[tail + i];
    }
    w += 2 * tail;
    sum0[o] = a00, sum0[o + 1] = a01, sum1[o] = a10, sum1[o + 1] = a11;
  }
  if (o < out_c) { /* an odd last row, in natural order */
    int32_t a0 = bias[o], a1 = a0;
    const uint32_t *x = cols;
    for (int g = 0; g < groups; g++, x += 4) {
      uint32_t r = load32(w + 4 * g), v = __sxtb16(r), u = sxtb16_ror8(r);
      a0 = __smlad(x[2], u, __smlad(x[0], v, a0));
      a1 = __smlad(x[3], u, __smlad(x[1], v, a1));
    }
    for (int i = 0; i < tail; i++) {
      a0 += rest[i] * w[4 * groups + i];
      a1 += rest[tail + i] * w[4 * groups + i];
    }
    sum0[o] = a0, sum1[o] = a1;
  }
}

/* TFLite's requantization of a by (m, shift) when shift = -e <= -2, as one multiply-accumulate
 * and one shift: floor((a * m + 2^30 + 2^(30+e) - 2^31 [a < 0]) / 2^(31+e)). The reference
 * rounds twice (a rounding doubling high multiply, then a rounding shift by e with ties away
 * from zero); the sign term moves the tie rule into the first rounding, and two floors by powers
 * of two make one. It equals the reference for every int32 a and every multiplier
 * 0 <= m < 2^31 (checked against uqbench.deploy.int8 on random draws and extremes; the
 * randomized kernel tests hold the firmware to it).
 *
 * In the form the loops take, a channel's (m, shift) become (m, 2^(e-2), e-1): the
 * multiply-accumulate adds 2^30 - 2^31 [a < 0] as its low and sign words and 2^(e-2) to its high
 * word (2^(30+e) / 2^32), and the high word shifted right by e - 1 is the result. */
typedef struct {
  int32_t multiplier, round, shift;
} fastq;

static inline fastq fastq_of(int32_t multiplier, int32_t shift) {
  return (fastq){multiplier, 1 << (-shift - 2), -shift - 1};
}

static inline int32_t requantize_fast(int32_t a, fastq p) {
  uint32_t sign = (uint32_t)(a >> 31); /* 0 or all ones: the high word of -2^31 [a < 0] */
  uint64_t addend = ((uint64_t)(sign + (uint32_t)p.round) << 32) | (0x40000000u + (sign << 31));
  return (int32_t)(((int64_t)a * p.multiplier + (int64_t)addend) >> 32) >> p.shift;
}

static inline int32_t requantize_right(int32_t a, int32_t m, int32_t shift) {
  return requantize_fast(a, fastq_of(m, shift));
}

/* The general case (any shift), as the reference computes it, with the same algebra. */
static inline int32_t requantize_any(int32_t a, int32_t m, int32_t s) {
  if (s <= -2) return requantize_right(a, m, s);
  if (s == -1) {
    int32_t x = (int32_t)(((int64_t)a * m + ((1ll << 30) - (a < 0 ? (1ll << 31) : 0))) >> 31);
    return (x >> 1) + (x & 1);
  }
  return srdhm(a * (1 << s), m);
}

/* out[o] = sum[o] (the bias already in it) requantized, clamped, for the n channels from
 * `first` on. A layer whose shifts are all right shifts (the usual case: every scale ratio
 * below 1) takes the branch-free loop; `right_only` says so (see right_shifts_only). The
 * parameters are read into locals first: stores through int8_t pointers may alias anything,
 * so reading them from `q` in the loop would reload them after every output byte. */
__attribute__((always_inline)) static inline void requantize_row(const int32_t *sum, int n,
                                                     const uq_requant *q, int first,
                                                     int right_only, int8_t *out) {
  const int32_t *multiplier = q->multiplier + first, *shift = q->shift + first;
  int32_t out_zero = q->out_zero, lo = q->act_min, hi = q->act_max;
  if (right_only && hi == 127) { /* no upper bound but int8's: SSAT, then the lower one */
    for (int o = 0; o < n; o++) {
      int32_t v = __ssat(requantize_right(sum[o], multiplier[o], shift[o]) + out_zero, 8);
      out[o] = (int8_t)(v < lo ? lo : v);
    }
    return;
  }
  for (int o = 0; o < n; o++) {
    int32_t v = (right_only ? requantize_right(sum[o], multiplier[o], shift[o])
                            : requantize_any(sum[o], multiplier[o], shift[o])) + out_zero;
    v = v < lo ? lo : v;
    out[o] = (int8_t)(v > hi ? hi : v);
  }
}

/* The same loop as its own function for each kernel family: the loop gets registers of its
 * own (inlined into a kernel it spills), and the profile still tells the families apart. */
__attribute__((noinline, no_icf)) static void requantize_conv(const int32_t *sum, int n,
                                                      const uq_requant *q, int first,
                                                      int right_only, int8_t *out) {
  requantize_row(sum, n, q, first, right_only, out);
}

__attribute__((noinline, no_icf)) static void requantize_depthwise(const int32_t *sum, int n,
                                                           const uq_requant *q, int first,
                                                           int right_only, int8_t *out) {
  requantize_row(sum, n, q, first, right_only, out);
}

static int right_shifts_only(const int32_t *shift, int n) {
  for (int o = 0; o < n; o++)
    if (shift[o] > -2) return 0;
  return 1;
}

static inline uint32_t minus_zero_pair(int32_t zero) {
  uint32_t m = (uint32_t)(uint16_t)(int16_t)(-zero);
  return m | (m << 16);
}

/* A chunk of channels' requantization in the fast form (fastq_of), when every shift of the chunk
 * is a right shift by at least 2 (the usual case); 0 where one is not: the general loop. */
static int fast_params(const uq_requant *q, int first, int n, fastq *p) {
  for (int o = 0; o < n; o++) {
    if (q->shift[first + o] > -2) return 0;
    p[o] = fastq_of(q->multiplier[first + o], q->shift[first + o]);
  }
  return 1;
}

/* Clamped to the activation's range; SSAT alone where that range is int8's. */
#define CLAMP(v, lo, hi, full) \
  ((full) ? __ssat((v), 8) : ((v) < (lo) ? (lo) : (v) > (hi) ? (hi) : (v)))

/* Two pixels' sums (sum0[o], sum1[o], the bias in them) requantized by the chunk's fast
 * parameters into out0[o] and out1[o]: each channel's parameters are loaded once for both. */
__attribute__((noinline)) static void requantize_pair(const int32_t *sum0, const int32_t *sum1,
                                                      int n, const fastq *p,
                                                      const uq_requant *q, int8_t *out0,
                                                      int8_t *out1) {
  int32_t zero = q->out_zero, lo = q->act_min, hi = q->act_max;
  if (lo == -128 && hi == 127) {
    for (int o = 0; o < n; o++) {
      fastq c = p[o];
      int32_t v0 = requantize_fast(sum0[o], c) + zero, v1 = requantize_fast(sum1[o], c) + zero;
      out0[o] = (int8_t)CLAMP(v0, lo, hi, 1);
      out1[o] = (int8_t)CLAMP(v1, lo, hi, 1);
    }
    return;
  }
  for (int o = 0; o < n; o++) {
    fastq c = p[o];
    int32_t v0 = requantize_fast(sum0[o], c) + zero, v1 = requantize_fast(sum1[o], c) + zero;
    out0[o] = (int8_t)CLAMP(v0, lo, hi, 0);
    out1[o] = (int8_t)CLAMP(v1, lo, hi, 0);
  }
}

void uq_conv2d(const int8_t *in, int h, int w, int c, const int8_t *weights, const int32_t *bias,
               int out_c, int kh, int kw, int sh, int sw, const uq_requant *q, int8_t *out) {
  int oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1, k = kh * kw * c;
  if (k > UQ_MAX_PATCH) { /* a patch too long for the stack buffers: the reference loop */
    uq_ref_conv2d(in, h, w, c, weights, bias, out_c, kh, kw, sh, sw, q, out);
    return;
  }
  /* Two interleaved expanded patches (4 bytes of stack per patch element) and, where a
   * kernel row is not whole groups of 4 inputs, room to gather both patches. */
  int run = kw * c;
  uint32_t cols[k + 1];
  int8_t scratch[(run & 3) && kh > 1 ? 2 * k : 1];
  int32_t sums[2 * UQ_CHUNK];
  fastq params[UQ_CHUNK];
  uint32_t minus_zero = minus_zero_pair(q->in_zero);
  int pixels = oh * ow;
  /* Output channels in chunks (small buffers), each chunk's requantization prepared once;
   * the patches are expanded again per chunk, a small cost beside the chunk's dot products. */
  for (int o = 0; o < out_c; o += UQ_CHUNK) {
    int n = out_c - o < UQ_CHUNK ? out_c - o : UQ_CHUNK, fast = fast_params(q, o, n, params);
    for (int p = 0; p < pixels; p += 2) {
      int last = p + 1 < pixels ? p + 1 : p; /* one pixel left: it, twice */
      const int8_t *src0 = in + ((p / ow) * sh * w + (p % ow) * sw) * c;
      const int8_t *src1 = in + ((last / ow) * sh * w + (last % ow) * sw) * c;
      int8_t *out0 = out + p * out_c + o, *out1 = out + last * out_c + o;
      interleave(src0, src1, kh, run, w * c, minus_zero, q->in_zero, scratch, cols);
      rows_by_patches(cols, k, weights + o * k, bias + o, n, sums, sums + UQ_CHUNK);
      if (fast) {
        requantize_pair(sums, sums + UQ_CHUNK, n, params, q, out0, out1);
      } else {
        requantize_conv(sums, n, q, o, 0, out0);
        requantize_conv(sums + UQ_CHUNK, n, q, o, 0, out1);
      }
    }
  }
}

void uq_fully_connected(const int8_t *in, int k, const int8_t *weights, const int32_t *bias,
                        int out_c, const uq_requant *q, int8_t *out) {
  if (k > UQ_MAX_PATCH) {
    uq_ref_fully_connected(in, k, weights, bias, out_c, q, out);
    return;
  }
  uint32_t cols[k + 1];
  int32_t sums[2 * UQ_CHUNK];
  int8_t none[1];
  interleave(in, in, 1, k, k, minus_zero_pair(q->in_zero), q->in_zero, none, cols); /* twice */
  for (int o = 0; o < out_c; o += UQ_CHUNK) {
    int n = out_c - o < UQ_CHUNK ? out_c - o : UQ_CHUNK;
    rows_by_patches(cols, k, weights + o * k, bias + o, n, sums, sums + UQ_CHUNK);
    requantize_conv(sums, n, q, o, right_shifts_only(q->shift + o, n), out + o);
  }
}

/* One tap of four channels: a word of inputs at p and a word of weights at g, unpacked, one
 * multiply-accumulate per channel; then p and g move on by the given steps. */
#define DW_TAP(p_step, g_step)                                                  \
  do {                                                                          \
    uint32_t v = load32(p), u = load32(g);                                      \
    uint32_t xe = __sxtab16(minus_zero, v), xo = sxtab16_ror8(minus_zero, v);   \
    uint32_t we = __sxtb16(u), wo = sxtb16_ror8(u);                             \
    a0 = __smlabb(xe, we, a0);                                                  \
    a2 = __smlatt(xe, we, a2);                                                  \
    a1 = __smlabb(xo, wo, a1);                                                  \
    a3 = __smlatt(xo, wo, a3);                                                  \
    p += (p_step), g += (g_step);                                               \
  } while (0)

/* sums[k] = bias + the taps of channels k..k+3, for every group of 4 of n channels: the kernel
 * window's inputs start at `base` (rows `in_row` bytes apart, taps c apart), its weights at
 * `weights` (taps c apart, rows contiguous: 1 x kh x kw x c). A 3 x 3 window runs unrolled. */
__attribute__((noinline, optimize("no-schedule-insns"))) static void dw_groups(
    const int8_t *base, const int8_t *weights, const int32_t *bias, int n4, int c, int in_row,
    int kh, int kw, uint32_t minus_zero, int32_t *sums) {
  for (int k = 0; k < n4; k += 4, base += 4, weights += 4) {
    int32_t a0 = bias[k], a1 = bias[k + 1], a2 = bias[k + 2], a3 = bias[k + 3];
    const int8_t *p = base, *g = weights;
    if (kh == 3 && kw == 3) {
      int next_row = in_row - 2 * c;
      DW_TAP(c, c);
      DW_TAP(c, c);
      DW_TAP(next_row, c);
      DW_TAP(c, c);
      DW_TAP(c, c);
      DW_TAP(next_row, c);
      DW_TAP(c, c);
      DW_TAP(c, c);
      DW_TAP(0, 0);
    } else {
      for (int i = 0; i < kh; i++, p += in_row - kw * c)
        for (int j = 0; j < kw; j++) DW_TAP(c, c);
    }
    sums[k] = a0, sums[k + 1] = a1, sums[k + 2] = a2, sums[k + 3] = a3;
  }
}

/* Depthwise 3 x 3 by planes. A group of 4 channels' input lines are expanded once into four
 * int16 planes (x - zero point, one per channel, `wp` values a line: 4-byte aligned lines, one
 * spare value); then one channel at a time, its nine weights held in six registers as halfword
 * pairs (u = (w0, w1), v = (w1, w2) per kernel line), the window slides along the plane's lines,
 * two output pixels at a time. Per kernel line, two pixels take two word loads (three at stride
 * 2) and four multiply-accumulates, dual (SMLAD) or single (SMLABT / SMLATB), for 6 MACs:
 *   stride 1, a = (x, x+1), b = (x+2, x+3):   p0 += a.u + b.lo * v.hi,   p1 += a.hi * u.lo + b.v
 *   stride 2, a, b, d = inputs 2x.. 2x+5:      p0 += a.u + b.lo * v.hi,   p1 += b.u + d.lo * v.hi
 * The lines are the image's rows or, where the output is taller than wide, its columns (a
 * transposed plane and kernel): every line has a fixed cost, so the fewer and longer the better
 * (DS-CNN's 25 x 5 maps slide down 5 columns, not along 25 rows). A channel's sums for a band of
 * lines are requantized together, its parameters held in registers. Bands: as many lines as
 * DW_PLANE_BYTES of planes and DW_SUMS sums take. */
#define DW_PLANE_BYTES 3072
#define DW_SUMS 256

static inline uint32_t pkhbt16(uint32_t lo, uint32_t hi) { /* (lo.lo, hi.lo) */
  uint32_t r;
  __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
  return r;
}

static inline uint32_t pkhtb16(uint32_t hi, uint32_t lo) { /* (lo.hi, hi.hi) */
  uint32_t r;
  __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
  return r;
}

/* `lines` input lines of `len` pixels, channels k .. k+3, into four planes of lines x wp
 * halfwords, `plane` apart: src is the first line's first pixel at channel k; lines are
 * `line_step` bytes apart and their pixels `step` (w * c and c for rows, c and w * c for
 * columns). */
__attribute__((noinline)) static void expand_planes(const int8_t *src, int lines, int len,
                                                    int step, int line_step, int wp,
                                                    uint32_t minus_zero, int16_t *planes,
                                                    int plane) {
  for (int r = 0; r < lines; r++, src += line_step) {
    const int8_t *s = src;
    uint32_t *p0 = (uint32_t *)(planes + r * wp), *p1 = p0 + plane / 2, *p2 = p1 + plane / 2,
             *p3 = p2 + plane / 2;
    int x = 0;
    for (; x + 2 <= len; x += 2, s += 2 * step) {
      uint32_t v0 = load32(s), v1 = load32(s + step);
      uint32_t e0 = __sxtab16(minus_zero, v0), e1 = __sxtab16(minus_zero, v1); /* ch 0, 2 */
      uint32_t o0 = sxtab16_ror8(minus_zero, v0), o1 = sxtab16_ror8(minus_zero, v1); /* 1, 3 */
      *p0++ = pkhbt16(e0, e1), *p1++ = pkhbt16(o0, o1);
      *p2++ = pkhtb16(e1, e0), *p3++ = pkhtb16(o1, o0);
    }
    /* An odd last pixel, and the spare value (read, never used: see dw_plane) as zero. */
    if (x < len) {
      uint32_t v = load32(s), e = __sxtab16(minus_zero, v), o = sxtab16_ror8(minus_zero, v);
      *p0 = e & 0xffffu, *p1 = o & 0xffffu, *p2 = e >> 16, *p3 = o >> 16;
    } else if (x < wp) {
      *p0 = 0, *p1 = 0, *p2 = 0, *p3 = 0;
    }
  }
}

/* One kernel line of two pixels (see the planes comment above); r walks the plane's line. Each
 * word is loaded after the last use of the one before, so one register holds them all: the
 * loop then keeps its six weights, three line pointers, sums and counter in registers. */
#define ROW_S1(r, u, v)                 \
  do {                                  \
    uint32_t t = load32(r);             \
    p0 = __smlad(t, u, p0);             \
    p1 = __smlatb(t, u, p1);            \
    t = load32((r) + 2);                \
    p0 = __smlabt(t, v, p0);            \
    p1 = __smlad(t, v, p1);             \
  } while (0)

#define ROW_S2(r, u, v)                 \
  do {                                  \
    uint32_t t = load32(r);             \
    p0 = __smlad(t, u, p0);             \
    t = load32((r) + 2);                \
    p0 = __smlabt(t, v, p0);            \
    p1 = __smlad(t, u, p1);             \
    t = load32((r) + 4);                \
    p1 = __smlabt(t, v, p1);            \
  } while (0)

/* One kernel row of one pixel: p0 += a.u + b.lo * v.hi, a and b the words at r and r + 2. */
#define ROW_ONE(r, u, v)                                                   \
  do {                                                                     \
    uint32_t a = *(const uint32_t *)(r), b = *(const uint32_t *)((r) + 2); \
    p0 = __smlabt(b, v, __smlad(a, u, p0));                                \
  } while (0)

/* One channel's sums, without its bias, for nb output rows of ow pixels: sums[y * ow + x] = the
 * 3 x 3 window at (y * stride, x * stride) of `plane` (rows wp halfwords apart) against the
 * kernel rows' halfword pairs uv[2i] = (w_i0, w_i1), uv[2i + 1] = (w_i1, w_i2); pixels in
 * pairs, an odd last one alone. Stride 1 or 2, specialised: the callers pass a constant. */
__attribute__((always_inline)) static inline void dw_plane(const int16_t *plane, int wp, int nb,
                                                           int ow, int stride,
                                                           const uint32_t *uv, int32_t *sums) {
  uint32_t u0 = uv[0], v0 = uv[1], u1 = uv[2], v1 = uv[3], u2 = uv[4], v2 = uv[5];
  for (int y = 0; y < nb; y++, plane += stride * wp) {
    const int16_t *r0 = plane, *r1 = plane + wp, *r2 = plane + 2 * wp;
    for (int n = ow >> 1; n; n--, sums += 2, r0 += 2 * stride, r1 += 2 * stride,
             r2 += 2 * stride) {
      int32_t p0 = 0, p1 = 0;
      if (stride == 1) {
        ROW_S1(r0, u0, v0);
        ROW_S1(r1, u1, v1);
        ROW_S1(r2, u2, v2);
      } else {
        ROW_S2(r0, u0, v0);
        ROW_S2(r1, u1, v1);
        ROW_S2(r2, u2, v2);
      }
      sums[0] = p0, sums[1] = p1;
    }
    if (ow & 1) {
      int32_t p0 = 0;
      ROW_ONE(r0, u0, v0);
      ROW_ONE(r1, u1, v1);
      ROW_ONE(r2, u2, v2);
      *sums++ = p0;
    }
  }
}

__attribute__((noinline, optimize("no-schedule-insns"))) static void dw_plane_s1(
    const int16_t *plane, int wp, int nb, int ow, const uint32_t *uv, int32_t *sums) {
  dw_plane(plane, wp, nb, ow, 1, uv, sums);
}

__attribute__((noinline, optimize("no-schedule-insns"))) static void dw_plane_s2(
    const int16_t *plane, int wp, int nb, int ow, const uint32_t *uv, int32_t *sums) {
  dw_plane(plane, wp, nb, ow, 2, uv, sums);
}

/* One channel's sums (+ bias), `lines` lines of n, requantized by its fast parameters: sum
 * i of line l into out[l * line_step + i * step]. Two outputs a step: one loop test for both. */
#define REQUANTIZE_LINES(full)                                                   \
  for (int l = 0; l < lines; l++, out += line_step) {                            \
    int8_t *o = out;                                                             \
    for (int i = n >> 1; i; i--, sum += 2, o += 2 * step) {                      \
      int32_t v0 = requantize_fast(sum[0] + bias, p) + zero;                     \
      int32_t v1 = requantize_fast(sum[1] + bias, p) + zero;                     \
      o[0] = (int8_t)CLAMP(v0, lo, hi, full);                                    \
      o[step] = (int8_t)CLAMP(v1, lo, hi, full);                                 \
    }                                                                            \
    if (n & 1) {                                                                 \
      int32_t v = requantize_fast(*sum++ + bias, p) + zero;                      \
      *o = (int8_t)CLAMP(v, lo, hi, full);                                       \
    }                                                                            \
  }

__attribute__((noinline)) static void requantize_lines(const int32_t *sum, int lines, int n,
                                                       int32_t bias, fastq p,
                                                       const uq_requant *q, int8_t *out,
                                                       int line_step, int step) {
  int32_t zero = q->out_zero, lo = q->act_min, hi = q->act_max;
  if (lo == -128 && hi == 127) {
    REQUANTIZE_LINES(1)
  } else {
    REQUANTIZE_LINES(0)
  }
}

/* The planes path (see expand_planes): 3 x 3 windows at strides (1, 1) or (2, 2), channels a
 * multiple of 4, every shift a right shift by at least 2, lines short enough for a band of
 * three. The code generator calls it for the layers that are these
 * (uqbench.deploy.codegen.takes_planes, tested to agree), so a model whose depthwise layers all
 * are links no other depthwise kernel; a layer that is not one of these takes the reference
 * kernel here. */
void uq_depthwise_planes(const int8_t *in, int h, int w, int c, const int8_t *weights,
                         const int32_t *bias, int stride, const uq_requant *q, int8_t *out) {
  int oh = (h - 3) / stride + 1, ow = (w - 3) / stride + 1, rows = ow >= oh;
  /* Lines, their lengths and steps (input, output and weight bytes), as rows or as columns. */
  int len = rows ? w : h, olen = rows ? ow : oh, lines = rows ? oh : ow;
  int step = rows ? c : w * c, line_step = rows ? w * c : c;
  int out_step = rows ? c : ow * c, out_line = rows ? ow * c : c;
  int tap = rows ? c : 3 * c, tap_line = rows ? 3 * c : c;
  int wp = (len + 2) & ~1, max_lines = DW_PLANE_BYTES / (4 * 2 * wp);
  int band = (max_lines - 3) / stride + 1;
  if (band > DW_SUMS / olen) band = DW_SUMS / olen;
  if (c & 3 || max_lines < 3 || band < 1 || !right_shifts_only(q->shift, c) || stride < 1 ||
      stride > 2) {
    uq_ref_depthwise(in, h, w, c, weights, bias, 3, 3, stride, stride, q, out);
    return;
  }
  if (band > lines) band = lines;
  /* Buffers for one band (stack): no larger than the layer needs. */
  int16_t planes[4 * ((band - 1) * stride + 3) * wp] __attribute__((aligned(4)));
  int32_t sums[band * olen];
  uint32_t minus_zero = minus_zero_pair(q->in_zero), uv[6];
  for (int k0 = 0; k0 < c; k0 += 4)
    for (int l0 = 0; l0 < lines; l0 += band) {
      int nb = lines - l0 < band ? lines - l0 : band, in_lines = (nb - 1) * stride + 3;
      expand_planes(in + l0 * stride * line_step + k0, in_lines, len, step, line_step, wp,
                    minus_zero, planes, in_lines * wp);
      for (int j = 0; j < 4; j++) {
        int k = k0 + j;
        const int8_t *g = weights + k;
        for (int i = 0; i < 3; i++, g += tap_line) {
          uint32_t w0 = (uint16_t)g[0], w1 = (uint16_t)g[tap], w2 = (uint16_t)g[2 * tap];
          uv[2 * i] = w0 | w1 << 16, uv[2 * i + 1] = w1 | w2 << 16;
        }
        const int16_t *plane = planes + j * in_lines * wp;
        if (stride == 1) dw_plane_s1(plane, wp, nb, olen, uv, sums);
        else dw_plane_s2(plane, wp, nb, olen, uv, sums);
        requantize_lines(sums, nb, olen, bias[k], fastq_of(q->multiplier[k], q->shift[k]), q,
                         out + l0 * out_line + k, out_line, out_step);
      }
    }
}

void uq_depthwise(const int8_t *in, int h, int w, int c, const int8_t *weights,
                  const int32_t *bias, int kh, int kw, int sh, int sw, const uq_requant *q,
                  int8_t *out) {
  int oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1;
  uint32_t minus_zero = minus_zero_pair(q->in_zero);
  int32_t sums[UQ_CHUNK];
  int right_only = right_shifts_only(q->shift, c);
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++)
      for (int k0 = 0; k0 < c; k0 += UQ_CHUNK) { /* channels in chunks: a small buffer */
        int n = c - k0 < UQ_CHUNK ? c - k0 : UQ_CHUNK, n4 = n & ~3;
        const int8_t *base = in + ((y * sh) * w + x * sw) * c + k0;
        dw_groups(base, weights + k0, bias + k0, n4, c, w * c, kh, kw, minus_zero, sums);
        for (int k = n4; k < n; k++) { /* the last c % 4 channels, one at a time */
          int32_t acc = bias[k0 + k];
          for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++)
              acc += (base[(i * w + j) * c + k] - q->in_zero) *
                     weights[(i * kw + j) * c + k0 + k];
          sums[k] = acc;
        }
        requantize_depthwise(sums, n, q, k0, right_only, out + (y * ow + x) * c + k0);
      }
}

void uq_add(const int8_t *a, const int8_t *b, int n, int32_t a_zero, int32_t a_mult,
            int32_t a_shift, int32_t b_zero, int32_t b_mult, int32_t b_shift, int32_t out_zero,
            int32_t out_mult, int32_t out_shift, int32_t act_min, int32_t act_max, int8_t *out) {
  /* Each input's rescaled value depends on its byte alone: two 256-entry tables, then one
   * requantization per element instead of three. (TFLite's input shifts are never positive.) */
  int32_t ta[256], tb[256];
  for (int v = -128; v < 128; v++) {
    ta[v + 128] = requantize_any((v - a_zero) * (1 << 20), a_mult, a_shift);
    tb[v + 128] = requantize_any((v - b_zero) * (1 << 20), b_mult, b_shift);
  }
  if (out_shift <= -2) { /* the usual case: the one-multiply form, no branch per element */
    for (int i = 0; i < n; i++) {
      int32_t v = requantize_right(ta[a[i] + 128] + tb[b[i] + 128], out_mult, out_shift);
      v += out_zero;
      v = v < act_min ? act_min : v;
      out[i] = (int8_t)(v > act_max ? act_max : v);
    }
    return;
  }
  for (int i = 0; i < n; i++) {
    int32_t v = requantize_any(ta[a[i] + 128] + tb[b[i] + 128], out_mult, out_shift) + out_zero;
    v = v < act_min ? act_min : v;
    out[i] = (int8_t)(v > act_max ? act_max : v);
  }
}

void uq_pad(const int8_t *in, int h, int w, int c, int top, int bottom, int left, int right,
            int8_t value, int8_t *out) {
  int ow = w + left + right, oh = h + top + bottom, row = w * c;
  memset(out, value, (size_t)(top * ow * c));
  for (int y = 0; y < h; y++) {
    int8_t *o = out + (y + top) * ow * c;
    memset(o, value, (size_t)(left * c));
    memcpy(o + left * c, in + y * row, (size_t)row);
    memset(o + left * c + row, value, (size_t)(right * c));
  }
  memset(out + (top + h) * ow * c, value, (size_t)(bottom * ow * c));
  (void)oh;
}
#endif
