/* uqbench int8 kernels: the project's own, with TFLite Micro's reference arithmetic (bit-exact
 * with the tflite-micro interpreter). Tensors are NHWC, batch 1; weights OHWI (depthwise 1HWC);
 * per-channel requantization by a Q31 multiplier and a shift. */
#ifndef UQ_KERNELS_H
#define UQ_KERNELS_H
#include <stdint.h>

/* Which kernels a build gets: those of uq_kernels_dsp.c where the core has the DSP extension
 * (Cortex-M4, M7, M33), unless built with -DUQ_REFERENCE_KERNELS; the portable reference
 * kernels of uq_kernels.c everywhere else. Both compute the same bytes. */
#if defined(__ARM_FEATURE_DSP) && !defined(UQ_REFERENCE_KERNELS)
#define UQ_DSP 1
#else
#define UQ_DSP 0
#endif

typedef struct {
  int32_t in_zero, out_zero, act_min, act_max;
  const int32_t *multiplier, *shift; /* per output channel */
} uq_requant;

void uq_conv2d(const int8_t *in, int h, int w, int c, const int8_t *weights, const int32_t *bias,
               int out_c, int kh, int kw, int sh, int sw, const uq_requant *q, int8_t *out);
void uq_depthwise(const int8_t *in, int h, int w, int c, const int8_t *weights,
                  const int32_t *bias, int kh, int kw, int sh, int sw, const uq_requant *q,
                  int8_t *out);
/* Depthwise 3 x 3 by int16 planes (uq_kernels_dsp.c only): for the layers the code generator
 * finds it takes (uqbench.deploy.codegen.takes_planes). */
void uq_depthwise_planes(const int8_t *in, int h, int w, int c, const int8_t *weights,
                         const int32_t *bias, int stride, const uq_requant *q, int8_t *out);
void uq_fully_connected(const int8_t *in, int k, const int8_t *weights, const int32_t *bias,
                        int out_c, const uq_requant *q, int8_t *out);
void uq_average_pool(const int8_t *in, int h, int w, int c, int kh, int kw, int sh, int sw,
                     int32_t act_min, int32_t act_max, int8_t *out);
void uq_max_pool(const int8_t *in, int h, int w, int c, int kh, int kw, int sh, int sw,
                 int32_t act_min, int32_t act_max, int8_t *out);
void uq_pad(const int8_t *in, int h, int w, int c, int top, int bottom, int left, int right,
            int8_t value, int8_t *out);
void uq_add(const int8_t *a, const int8_t *b, int n, int32_t a_zero, int32_t a_mult,
            int32_t a_shift, int32_t b_zero, int32_t b_mult, int32_t b_shift, int32_t out_zero,
            int32_t out_mult, int32_t out_shift, int32_t act_min, int32_t act_max, int8_t *out);

void uq_mul(const int8_t *a, const int8_t *b, int n, int32_t a_zero, int32_t b_zero,
            int32_t out_zero, int32_t mult, int32_t shift, int32_t act_min, int32_t act_max,
            int8_t *out);
void uq_mul_dropout(const int8_t *a, int h, int w, int c, uint32_t stream, uint32_t threshold,
                    int32_t a_zero, int32_t kept, int32_t out_zero, int32_t mult, int32_t shift,
                    int32_t act_min, int32_t act_max, int8_t *out);

/* The portable reference kernels under their own names (uq_kernels.c): the kernels above where
 * the build has no DSP kernels, the DSP kernels' fallback for shapes they do not take. */
void uq_ref_conv2d(const int8_t *in, int h, int w, int c, const int8_t *weights,
                   const int32_t *bias, int out_c, int kh, int kw, int sh, int sw,
                   const uq_requant *q, int8_t *out);
void uq_ref_depthwise(const int8_t *in, int h, int w, int c, const int8_t *weights,
                      const int32_t *bias, int kh, int kw, int sh, int sw, const uq_requant *q,
                      int8_t *out);
void uq_ref_fully_connected(const int8_t *in, int k, const int8_t *weights, const int32_t *bias,
                            int out_c, const uq_requant *q, int8_t *out);
void uq_ref_pad(const int8_t *in, int h, int w, int c, int top, int bottom, int left, int right,
                int8_t value, int8_t *out);
void uq_ref_add(const int8_t *a, const int8_t *b, int n, int32_t a_zero, int32_t a_mult,
                int32_t a_shift, int32_t b_zero, int32_t b_mult, int32_t b_shift,
                int32_t out_zero, int32_t out_mult, int32_t out_shift, int32_t act_min,
                int32_t act_max, int8_t *out);

/* TFLite's requantization, shared by every kernel: a saturating rounding doubling high multiply
 * by a Q31 multiplier, then a rounding right shift (or a left shift before it). */
static inline int32_t uq_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
  return (int32_t)((ab + nudge) / (1ll << 31)); /* C division truncates toward zero */
}

static inline int32_t uq_rdbpot(int32_t x, int exponent) {
  int32_t mask = (int32_t)((1ll << exponent) - 1);
  int32_t remainder = x & mask;
  int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t uq_requantize(int32_t acc, int32_t multiplier, int32_t shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return uq_rdbpot(uq_srdhm(acc * (1 << left), multiplier), right);
}

static inline int8_t uq_clamp8(int32_t v, int32_t lo, int32_t hi) {
  return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
#endif
