/* Fused row kernels of matxfer's edge-gated update (float32, CPU).
 *
 * For each edge row r with gate pre-activation m_r (the matmul W y_r + s_i + d_j is
 * done by BLAS before), the forward kernel computes in one pass over the row
 *
 *   sigma_r = sigmoid(m_r)                 -> gate[r, F:2F]
 *   sigma_r * v[src_r]                     -> gate[r, 0:F]
 *   y'_r = y_r + SiLU(Norm(m_r))           -> y_new[r]
 *
 * and the backward kernel the gradient of m_r from dL/dy'_r and from the gated mean
 * (dL/dnum, dL/dden at dst_r), again in one pass. The callers do the scatter sums
 * (index_add_) and the matmuls. Norm is LayerNorm (per-row statistics, recorded in
 * mean/rstd; weight and bias given) or an affine map a = m * scale + shift per
 * column (BatchNorm with statistics over all rows; scale 1, shift 0 for none).
 * Rows run in parallel (OpenMP, static schedule); the LayerNorm weight and bias
 * gradients are summed per thread, so results depend on the thread count only
 * through those sums. Compiled at first use by
 * matxfer/models/kernels.py; the torch code in gated_edges.py is the fallback and
 * the reference in tests.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NORM_LAYER 1

/* -ffast-math assumes finite values, and its vector expf returns NaN, not inf, past
 * expf's range (x < -88.7): clamping keeps sigmoid(x) at ~1e-35 there instead. */
static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(fminf(-x, 80.0f))); }

/* Per-row LayerNorm statistics, and the row's affine map a = m * A + B. */
static inline void layer_affine(const float *mr, int64_t width, const float *weight,
                                const float *bias, float eps, float *mu_out, float *rs_out,
                                float *A, float *B) {
    float sum = 0.0f, sq = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t f = 0; f < width; ++f) sum += mr[f];
    const float mu = sum / (float)width;
#pragma omp simd reduction(+ : sq)
    for (int64_t f = 0; f < width; ++f) sq += (mr[f] - mu) * (mr[f] - mu);
    const float rs = 1.0f / sqrtf(sq / (float)width + eps);
#pragma omp simd
    for (int64_t f = 0; f < width; ++f) {
        A[f] = rs * weight[f];
        B[f] = bias[f] - mu * A[f];
    }
    *mu_out = mu;
    *rs_out = rs;
}

void gate_forward(int64_t rows, int64_t width, const float *m, const float *value,
                  const int64_t *src, float *gate, int norm, const float *weight,
                  const float *bias, float eps, const float *residual, float *y_new,
                  float *mean_out, float *rstd_out, int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *A = (float *)malloc(sizeof(float) * 2 * (size_t)width);
        float *B = A + width;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *mr = m + r * width;
            if (gate) {
                const float *vr = value + src[r] * width;
                float *gp = gate + r * 2 * width, *gs = gp + width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float s = sigmoid(mr[f]);
                    gs[f] = s;
                    gp[f] = s * vr[f];
                }
            }
            if (!y_new) continue;
            const float *sa = weight, *sb = bias; /* affine: scale, shift */
            if (norm == NORM_LAYER) {
                layer_affine(mr, width, weight, bias, eps, mean_out + r, rstd_out + r, A, B);
                sa = A;
                sb = B;
            }
            float *out = y_new + r * width;
            if (residual) {
                const float *res = residual + r * width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float a = mr[f] * sa[f] + sb[f];
                    out[f] = res[f] + a * sigmoid(a);
                }
            } else {
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float a = mr[f] * sa[f] + sb[f];
                    out[f] = a * sigmoid(a);
                }
            }
        }
        free(A);
    }
}

/* grad_m = dL/dm of each row; gval[r] = dnum[dst_r] * sigma_r (summed into dL/dv by
 * the caller). grad_out may be NULL (y' unused); dnum/dden may be NULL (h unused).
 * grad_out_copy (may be NULL) receives a copy of grad_out: the caller's residual
 * gradient, to which it then adds dL/dm W in place.
 * Affine mode: dL/dm = coef0 + coef1 * m + scale * dL/da (coef0 = coef1 = 0 except
 * for BatchNorm in training, whose statistics depend on every row). */
void gate_backward(int64_t rows, int64_t width, const float *m, const float *grad_out,
                   int norm, const float *weight, const float *bias, const float *coef0,
                   const float *coef1, const float *mean, const float *rstd, const float *dnum,
                   const float *dden, const float *value, const int64_t *src,
                   const int64_t *dst, float *grad_m, float *gval, float *grad_weight_parts,
                   float *grad_bias_parts, float *grad_out_copy, int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *ga = (float *)malloc(sizeof(float) * 2 * (size_t)width);
        float *xhat = ga + width;
#ifdef _OPENMP
        const int thread = omp_get_thread_num();
#else
        const int thread = 0;
#endif
        float *gw = grad_weight_parts ? grad_weight_parts + thread * width : NULL;
        float *gb = grad_bias_parts ? grad_bias_parts + thread * width : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *mr = m + r * width;
            float *gm = grad_m + r * width;
            if (grad_out && grad_out_copy) { /* the residual's gradient, while in cache */
                const float *go = grad_out + r * width;
                float *copy = grad_out_copy + r * width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) copy[f] = go[f];
            }
            if (grad_out && norm == NORM_LAYER) {
                const float *go = grad_out + r * width;
                const float mu = mean[r], rs = rstd[r];
                float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
                for (int64_t f = 0; f < width; ++f) {
                    const float x = (mr[f] - mu) * rs;
                    const float a = x * weight[f] + bias[f];
                    const float s = sigmoid(a);
                    const float g = go[f] * s * (1.0f + a * (1.0f - s)); /* SiLU'(a) */
                    const float d = g * weight[f];
                    ga[f] = g;
                    xhat[f] = x;
                    s1 += d;
                    s2 += d * x;
                }
                s1 /= (float)width;
                s2 /= (float)width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f)
                    gm[f] = rs * (ga[f] * weight[f] - s1 - xhat[f] * s2);
                if (gw) {
#pragma omp simd
                    for (int64_t f = 0; f < width; ++f) gw[f] += ga[f] * xhat[f];
                }
                if (gb) {
#pragma omp simd
                    for (int64_t f = 0; f < width; ++f) gb[f] += ga[f];
                }
            } else if (grad_out) {
                const float *go = grad_out + r * width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float a = mr[f] * weight[f] + bias[f];
                    const float s = sigmoid(a);
                    const float g = go[f] * s * (1.0f + a * (1.0f - s));
                    gm[f] = coef0[f] + coef1[f] * mr[f] + g * weight[f];
                }
            } else {
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) gm[f] = 0.0f;
            }
            if (dnum) {
                const float *nr = dnum + dst[r] * width;
                const float *dr = dden + dst[r] * width;
                const float *vr = value + src[r] * width;
                float *gv = gval + r * width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float s = sigmoid(mr[f]);
                    gm[f] += (dr[f] + nr[f] * vr[f]) * s * (1.0f - s);
                    gv[f] = nr[f] * s;
                }
            }
        }
        free(ga);
    }
}
