/* uqbench int8 kernels: the project's own, with TFLite Micro's reference arithmetic (bit-exact
 * with the tflite-micro interpreter). Tensors are NHWC, batch 1; weights OHWI (depthwise 1HWC);
 * per-channel requantization by a Q31 multiplier and a shift. */
#ifndef UQ_KERNELS_H
#define UQ_KERNELS_H
#include <stdint.h>

typedef struct {
  int32_t in_zero, out_zero, act_min, act_max;
  const int32_t *multiplier, *shift; /* per output channel */
} uq_requant;

void uq_conv2d(const int8_t *in, int h, int w, int c, const int8_t *weights, const int32_t *bias,
               int out_c, int kh, int kw, int sh, int sw, const uq_requant *q, int8_t *out);
void uq_depthwise(const int8_t *in, int h, int w, int c, const int8_t *weights,
                  const int32_t *bias, int kh, int kw, int sh, int sw, const uq_requant *q,
                  int8_t *out);
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
#endif
