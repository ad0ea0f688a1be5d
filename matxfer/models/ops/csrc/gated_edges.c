/* Fused row kernels of matxfer's edge-gated update (float32, CPU).
 *
 * For each edge row r = (i -> j) with m_r = W y_r computed by BLAS before, the
 * forward kernel does in one pass over the row
 *
 *   m_r += s[i] + d[j]                      (in place: the pre-activation kept for backward)
 *   num[j] += sigmoid(m_r) * v[i],  den[j] += sigmoid(m_r)
 *   y'_r = y_r + SiLU(Norm(m_r))            -> y_new[r]
 *
 * and the backward kernel dL/dm_r from dL/dy'_r and from the gated mean (dL/dnum,
 * dL/dden at j), adding its node terms into dL/ds[i], dL/dv[i] and dL/dd[j] in the
 * same pass. The callers do the matmuls. Norm is LayerNorm (per-row statistics,
 * recorded in mean/rstd; weight and bias given) or an affine map a = m * scale + shift
 * per column (BatchNorm with statistics over all rows; scale 1, shift 0 for none).
 * Rows run in parallel (OpenMP, static schedule). Sums over rows into node tables
 * go to thread 0's table (the output) or to one private table per further thread,
 * which the caller adds up afterwards; so do the LayerNorm weight and bias
 * gradients. Results depend on the thread count only through those sums.
 * Compiled at first use by matxfer/models/kernels.py; the torch code in
 * gated_edges.py is the fallback and the reference in tests.
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

/* The calling thread's number in its OpenMP team (0 without OpenMP). */
static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The node table of the calling thread: the output for thread 0, else its own part. */
static inline float *thread_table(float *out, float *parts, int64_t size) {
    const int thread = thread_id();
    return thread == 0 ? out : parts + (int64_t)(thread - 1) * size;
}

/* m [rows, width] (in/out); s, d, value [nodes, width]; sums [nodes, 2 width]
 * (num | den, accumulated), sums_parts [threads - 1, nodes, 2 width] zeroed. s and d
 * may be NULL (m complete); sums NULL skips the gates; y_new NULL skips the output. */
void gate_forward(int64_t rows, int64_t width, int64_t nodes, float *m, const float *s_term,
                  const float *d_term, const float *value, const int64_t *src,
                  const int64_t *dst, float *sums, float *sums_parts, int norm,
                  const float *weight, const float *bias, float eps, const float *residual,
                  float *y_new, float *mean_out, float *rstd_out, int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *A = (float *)malloc(sizeof(float) * 2 * (size_t)width);
        float *B = A + width;
        float *table = sums ? thread_table(sums, sums_parts, nodes * 2 * width) : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            float *mr = m + r * width;
            if (s_term) {
                const float *si = s_term + src[r] * width, *dj = d_term + dst[r] * width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) mr[f] += si[f] + dj[f];
            }
            if (table) {
                const float *vr = value + src[r] * width;
                float *num = table + dst[r] * 2 * width, *den = num + width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float s = sigmoid(mr[f]);
                    den[f] += s;
                    num[f] += s * vr[f];
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

/* grad_m = dL/dm of each row. grad_out may be NULL (y' unused); dnum/dden may be NULL
 * (h unused). node_grads [nodes, 3 width] (accumulated; node_parts [threads - 1, nodes,
 * 3 width] zeroed) receives per node n: dL/ds[n] = sum of grad_m over rows from n,
 * dL/dv[n] = sum of dnum[dst_r] * sigma_r over rows from n, and dL/dd[n] = sum of
 * grad_m over rows into n; NULL skips them (then dnum must be NULL too).
 * grad_out_copy (may be NULL) receives a copy of grad_out: the caller's residual
 * gradient, to which it then adds dL/dm W in place.
 * Affine mode: dL/dm = coef0 + coef1 * m + scale * dL/da (coef0 = coef1 = 0 except
 * for BatchNorm in training, whose statistics depend on every row). */
void gate_backward(int64_t rows, int64_t width, int64_t nodes, const float *m,
                   const float *grad_out, int norm, const float *weight, const float *bias,
                   const float *coef0, const float *coef1, const float *mean, const float *rstd,
                   const float *dnum, const float *dden, const float *value, const int64_t *src,
                   const int64_t *dst, float *grad_m, float *node_grads, float *node_parts,
                   float *grad_weight_parts, float *grad_bias_parts, float *grad_out_copy,
                   int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *ga = (float *)malloc(sizeof(float) * 2 * (size_t)width);
        float *xhat = ga + width;
        const int thread = thread_id();
        float *gw = grad_weight_parts ? grad_weight_parts + thread * width : NULL;
        float *gb = grad_bias_parts ? grad_bias_parts + thread * width : NULL;
        float *table =
            node_grads ? thread_table(node_grads, node_parts, nodes * 3 * width) : NULL;
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
            float *to_src = table ? table + src[r] * 3 * width : NULL;
            if (dnum) {
                const float *nr = dnum + dst[r] * width;
                const float *dr = dden + dst[r] * width;
                const float *vr = value + src[r] * width;
                float *gv = to_src + width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    const float s = sigmoid(mr[f]);
                    gm[f] += (dr[f] + nr[f] * vr[f]) * s * (1.0f - s);
                    gv[f] += nr[f] * s;
                }
            }
            if (table) {
                float *to_dst = table + dst[r] * 3 * width + 2 * width;
#pragma omp simd
                for (int64_t f = 0; f < width; ++f) {
                    to_src[f] += gm[f];
                    to_dst[f] += gm[f];
                }
            }
        }
        free(ga);
    }
}

/* BatchNorm's column statistics over a block of rows: sums of (m - shift) and of
 * (m - shift)^2 per column, added into parts[thread] ([threads, 2, width]). */
void column_moments(int64_t rows, int64_t width, const float *m, const float *shift,
                    float *parts, int threads) {
#pragma omp parallel num_threads(threads)
    {
        const int thread = thread_id();
        float *s1 = parts + (int64_t)thread * 2 * width, *s2 = s1 + width;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *mr = m + r * width;
#pragma omp simd
            for (int64_t f = 0; f < width; ++f) {
                const float d = mr[f] - shift[f];
                s1[f] += d;
                s2[f] += d * d;
            }
        }
    }
}

/* BatchNorm's backward sums over a block of rows: with a = m * scale + shift and
 * g = dL/dSiLU(a) * SiLU'(a), the column sums of g and of g * m, added into
 * parts[thread] ([threads, 2, width]). */
void silu_grad_sums(int64_t rows, int64_t width, const float *m, const float *grad_out,
                    const float *scale, const float *shift, float *parts, int threads) {
#pragma omp parallel num_threads(threads)
    {
        const int thread = thread_id();
        float *sg = parts + (int64_t)thread * 2 * width, *sgm = sg + width;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *mr = m + r * width, *go = grad_out + r * width;
#pragma omp simd
            for (int64_t f = 0; f < width; ++f) {
                const float a = mr[f] * scale[f] + shift[f];
                const float s = sigmoid(a);
                const float g = go[f] * s * (1.0f + a * (1.0f - s));
                sg[f] += g;
                sgm[f] += g * mr[f];
            }
        }
    }
}
