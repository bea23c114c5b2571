/* uqbench int8 kernels (see uq_kernels.h). Straightforward C: the portable reference, and the
 * oracle the DSP kernels of uq_kernels_dsp.c are tested against. */
#include "uq_kernels.h"

void uq_ref_conv2d(const int8_t *in, int h, int w, int c, const int8_t *weights, const int32_t *bias,
               int out_c, int kh, int kw, int sh, int sw, const uq_requant *q, int8_t *out) {
  int oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1;
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++)
      for (int o = 0; o < out_c; o++) {
        int32_t acc = 0;
        const int8_t *wo = weights + o * kh * kw * c;
        for (int i = 0; i < kh; i++)
          for (int j = 0; j < kw; j++) {
            const int8_t *px = in + ((y * sh + i) * w + (x * sw + j)) * c;
            const int8_t *wk = wo + (i * kw + j) * c;
            for (int k = 0; k < c; k++) acc += (px[k] - q->in_zero) * wk[k];
          }
        acc += bias[o];
        acc = uq_requantize(acc, q->multiplier[o], q->shift[o]) + q->out_zero;
        out[(y * ow + x) * out_c + o] = uq_clamp8(acc, q->act_min, q->act_max);
      }
}

void uq_ref_depthwise(const int8_t *in, int h, int w, int c, const int8_t *weights,
                  const int32_t *bias, int kh, int kw, int sh, int sw, const uq_requant *q,
                  int8_t *out) {
  int oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1;
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++)
      for (int k = 0; k < c; k++) {
        int32_t acc = 0;
        for (int i = 0; i < kh; i++)
          for (int j = 0; j < kw; j++)
            acc += (in[((y * sh + i) * w + (x * sw + j)) * c + k] - q->in_zero) *
                   weights[(i * kw + j) * c + k];
        acc += bias[k];
        acc = uq_requantize(acc, q->multiplier[k], q->shift[k]) + q->out_zero;
        out[(y * ow + x) * c + k] = uq_clamp8(acc, q->act_min, q->act_max);
      }
}

void uq_ref_fully_connected(const int8_t *in, int k, const int8_t *weights, const int32_t *bias,
                        int out_c, const uq_requant *q, int8_t *out) {
  for (int o = 0; o < out_c; o++) {
    int32_t acc = 0;
    for (int i = 0; i < k; i++) acc += (in[i] - q->in_zero) * weights[o * k + i];
    acc += bias[o];
    acc = uq_requantize(acc, q->multiplier[o], q->shift[o]) + q->out_zero;
    out[o] = uq_clamp8(acc, q->act_min, q->act_max);
  }
}

void uq_ref_pad(const int8_t *in, int h, int w, int c, int top, int bottom, int left, int right,
            int8_t value, int8_t *out) {
  int ow = w + left + right, oh = h + top + bottom;
  for (int i = 0; i < oh * ow * c; i++) out[i] = value;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++) out[((y + top) * ow + (x + left)) * c + k] = in[(y * w + x) * c + k];
}

void uq_ref_add(const int8_t *a, const int8_t *b, int n, int32_t a_zero, int32_t a_mult,
            int32_t a_shift, int32_t b_zero, int32_t b_mult, int32_t b_shift, int32_t out_zero,
            int32_t out_mult, int32_t out_shift, int32_t act_min, int32_t act_max, int8_t *out) {
  for (int i = 0; i < n; i++) {
    int32_t sa = uq_rdbpot(uq_srdhm((a[i] - a_zero) * (1 << 20), a_mult), -a_shift);
    int32_t sb = uq_rdbpot(uq_srdhm((b[i] - b_zero) * (1 << 20), b_mult), -b_shift);
    int32_t v = uq_rdbpot(uq_srdhm(sa + sb, out_mult), -out_shift) + out_zero;
    out[i] = uq_clamp8(v, act_min, act_max);
  }
}

/* TFLite's int8 MUL of two tensors of the same shape (MC dropout's masks: a constant factor). */
void uq_mul(const int8_t *a, const int8_t *b, int n, int32_t a_zero, int32_t b_zero,
            int32_t out_zero, int32_t mult, int32_t shift, int32_t act_min, int32_t act_max,
            int8_t *out) {
  for (int i = 0; i < n; i++) {
    int32_t v = uq_requantize((a[i] - a_zero) * (b[i] - b_zero), mult, shift) + out_zero;
    out[i] = uq_clamp8(v, act_min, act_max);
  }
}

/* uq_mul by MC dropout's mask of one site and pass, regenerated rather than stored
 * (uqbench.dropout_masks): element (y, x, k) of the h x w x c map is kept when
 * mix(i * 0x9E3779B9 + stream) < threshold, i = (k * h + y) * w + x its index in NCHW order;
 * a kept element is multiplied by the mask's one nonzero value (`kept` above its zero point),
 * a dropped one by zero. A kept element's result depends on its input byte alone: for long
 * maps it is looked up in a 256-entry table computed first. */
static inline uint32_t uq_mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}

void uq_mul_dropout(const int8_t *a, int h, int w, int c, uint32_t stream, uint32_t threshold,
                    int32_t a_zero, int32_t kept, int32_t out_zero, int32_t mult, int32_t shift,
                    int32_t act_min, int32_t act_max, int8_t *out) {
  int8_t dropped = uq_clamp8(out_zero, act_min, act_max), table[256];
  int tabled = h * w * c > 512;
  for (int v = -128; tabled && v < 128; v++)
    table[v + 128] = uq_clamp8(uq_requantize((v - a_zero) * kept, mult, shift) + out_zero,
                               act_min, act_max);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++, a++, out++) {
        uint32_t i = (uint32_t)((k * h + y) * w + x);
        if (uq_mix(i * 0x9E3779B9u + stream) >= threshold) {
          *out = dropped;
        } else if (tabled) {
          *out = table[*a + 128];
        } else {
          *out = uq_clamp8(uq_requantize((*a - a_zero) * kept, mult, shift) + out_zero, act_min,
                           act_max);
        }
      }
}

void uq_average_pool(const int8_t *in, int h, int w, int c, int kh, int kw, int sh, int sw,
                     int32_t act_min, int32_t act_max, int8_t *out) {
  int oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1, count = kh * kw;
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++)
      for (int k = 0; k < c; k++) {
        int32_t sum = 0;
        for (int i = 0; i < kh; i++)
          for (int j = 0; j < kw; j++) sum += in[((y * sh + i) * w + (x * sw + j)) * c + k];
        sum = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
        out[(y * ow + x) * c + k] = uq_clamp8(sum, act_min, act_max);
      }
}

void uq_max_pool(const int8_t *in, int h, int w, int c, int kh, int kw, int sh, int sw,
                 int32_t act_min, int32_t act_max, int8_t *out) {
  int oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1;
  for (int y = 0; y < oh; y++)
    for (int x = 0; x < ow; x++)
      for (int k = 0; k < c; k++) {
        int32_t best = -128;
        for (int i = 0; i < kh; i++)
          for (int j = 0; j < kw; j++) {
            int32_t v = in[((y * sh + i) * w + (x * sw + j)) * c + k];
            if (v > best) best = v;
          }
        out[(y * ow + x) * c + k] = uq_clamp8(best, act_min, act_max);
      }
}

/* Without the DSP extension (or with -DUQ_REFERENCE_KERNELS) these are the kernels; otherwise
 * uq_kernels_dsp.c defines them and uses the reference ones only as fallbacks. */
#if !UQ_DSP
__typeof__(uq_ref_conv2d) uq_conv2d __attribute__((alias("uq_ref_conv2d")));
__typeof__(uq_ref_depthwise) uq_depthwise __attribute__((alias("uq_ref_depthwise")));
__typeof__(uq_ref_fully_connected) uq_fully_connected __attribute__((alias("uq_ref_fully_connected")));
__typeof__(uq_ref_pad) uq_pad __attribute__((alias("uq_ref_pad")));
__typeof__(uq_ref_add) uq_add __attribute__((alias("uq_ref_add")));
#endif
