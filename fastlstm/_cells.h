/*
 * The fused elementwise loops of the plain RNN and GRU cells, one pass over
 * (N, H) per time step. The activations are those of _gates.h (plain-arithmetic
 * exp that gcc vectorises without -ffast-math, finite for any input), compiled
 * for several instruction sets with target_clones.
 *
 * Layout (row-major, one time step): GRU gate buffers (N, 3H) with the blocks of
 * a sample side by side in torch's order r | z | n; h, dh (N, H).
 */
#ifndef FASTLSTM_CELLS_H
#define FASTLSTM_CELLS_H

/* only the activations of _gates.h are used here: not a warning about the rest */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "_gates.h"
#pragma GCC diagnostic pop

/* ---- plain RNN: h = act(a) ------------------------------------------------
 * forward: a (n,) pre-activations in, activations out (in place).
 * backward: da = dh * act'(a), written from the activation h:
 *   tanh: 1 - h^2;   sigmoid: h * (1 - h)
 */
#define FASTLSTM_RNN(SUFFIX, T, SIGMOID, TANH)                                        \
    FASTLSTM_CLONES static void fl_rnn_fwd_##SUFFIX(int64_t n, int sigmoid,           \
                                                    T *restrict a)                    \
    {                                                                                 \
        if (sigmoid)                                                                  \
            for (int64_t k = 0; k < n; k++) a[k] = SIGMOID(a[k]);                     \
        else                                                                          \
            for (int64_t k = 0; k < n; k++) a[k] = TANH(a[k]);                        \
    }                                                                                 \
    FASTLSTM_CLONES static void fl_rnn_bwd_##SUFFIX(int64_t n, int sigmoid,           \
                                                    const T *restrict h,              \
                                                    const T *restrict dh,             \
                                                    T *restrict da)                   \
    {                                                                                 \
        if (sigmoid)                                                                  \
            for (int64_t k = 0; k < n; k++) da[k] = dh[k] * h[k] * (1 - h[k]);        \
        else                                                                          \
            for (int64_t k = 0; k < n; k++) da[k] = dh[k] * (1 - h[k] * h[k]);        \
    }
FASTLSTM_RNN(f32, float, fl_sigmoid_f32, fl_tanh_f32)
FASTLSTM_RNN(f64, double, fl_sigmoid_f64, fl_tanh_f64)

/* ---- GRU ---------------------------------------------------------------------
 *
 * forward, for each sample n and unit j, given the input side ai = x W_ih.T + b_ih
 * and the hidden side ah = h_prev W_hh.T (b_hh not yet added):
 *   ah += b_hh                        (kept: backward needs hn = W_hn h_prev + b_hn)
 *   r = sig(ai_r + ah_r);  z = sig(ai_z + ah_z);  n = tanh(ai_n + r * ah_n)
 *   h = (1 - z) * n + z * h_prev      ai is overwritten by r, z, n
 *
 * backward, given dh (total gradient on h_t), writes the gradients on the input
 * side pre-activations dai = (da_r, da_z, da_n), on the hidden side
 * dah = (da_r, da_z, r * da_n) (r scales the n block's hidden part), and the
 * direct part of the gradient on h_prev, dh * z:
 *   da_n = dh * (1 - z) * (1 - n^2)
 *   da_z = dh * (h_prev - n) * z * (1 - z)
 *   da_r = da_n * hn * r * (1 - r)
 */
#define FASTLSTM_GRU(SUFFIX, T, SIGMOID, TANH)                                        \
    FASTLSTM_CLONES static void fl_gru_cell_fwd_##SUFFIX(                             \
        int64_t N, int64_t H,                                                         \
        T *restrict gates,        /* (N, 3H) in: ai, out: r, z, n */                  \
        T *restrict hproj,        /* (N, 3H) in: h_prev W_hh.T, out: + b_hh */        \
        const T *restrict b_hh,   /* (3H,) */                                         \
        const T *restrict h_prev, /* (N, H) */                                        \
        T *restrict h)            /* (N, H) out */                                    \
    {                                                                                 \
        for (int64_t n = 0; n < N; n++) {                                             \
            T *gr = gates + n * 3 * H, *gz = gr + H, *gn = gz + H;                    \
            T *hr = hproj + n * 3 * H, *hz = hr + H, *hn = hz + H;                    \
            const T *hp = h_prev + n * H;                                             \
            T *ho = h + n * H;                                                        \
            for (int64_t j = 0; j < H; j++) {                                         \
                T ahr = hr[j] + b_hh[j], ahz = hz[j] + b_hh[H + j];                   \
                T ahn = hn[j] + b_hh[2 * H + j];                                      \
                T r = SIGMOID(gr[j] + ahr), z = SIGMOID(gz[j] + ahz);                 \
                T nj = TANH(gn[j] + r * ahn);                                         \
                hr[j] = ahr; hz[j] = ahz; hn[j] = ahn;                                \
                gr[j] = r; gz[j] = z; gn[j] = nj;                                     \
                ho[j] = (1 - z) * nj + z * hp[j];                                     \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    FASTLSTM_CLONES static void fl_gru_cell_bwd_##SUFFIX(                             \
        int64_t N, int64_t H,                                                         \
        const T *restrict gates,  /* (N, 3H) r, z, n */                               \
        const T *restrict hproj,  /* (N, 3H) h_prev W_hh.T + b_hh */                  \
        const T *restrict h_prev, /* (N, H) */                                        \
        const T *restrict dh,     /* (N, H) total gradient on h_t */                  \
        T *restrict dai,          /* (N, 3H) out */                                   \
        T *restrict dah,          /* (N, 3H) out */                                   \
        T *restrict dh_direct)    /* (N, H) out: dh * z */                            \
    {                                                                                 \
        for (int64_t n = 0; n < N; n++) {                                             \
            const T *gr = gates + n * 3 * H, *gz = gr + H, *gn = gz + H;              \
            const T *hn = hproj + n * 3 * H + 2 * H;                                  \
            T *ir = dai + n * 3 * H, *iz = ir + H, *in = iz + H;                      \
            T *hr = dah + n * 3 * H, *hz = hr + H, *hnd = hz + H;                     \
            const T *hp = h_prev + n * H, *dhn = dh + n * H;                          \
            T *dd = dh_direct + n * H;                                                \
            for (int64_t j = 0; j < H; j++) {                                         \
                T r = gr[j], z = gz[j], nj = gn[j], d = dhn[j];                       \
                T da_n = d * (1 - z) * (1 - nj * nj);                                 \
                T da_z = d * (hp[j] - nj) * z * (1 - z);                              \
                T da_r = da_n * hn[j] * r * (1 - r);                                  \
                ir[j] = da_r; iz[j] = da_z; in[j] = da_n;                             \
                hr[j] = da_r; hz[j] = da_z; hnd[j] = da_n * r;                        \
                dd[j] = d * z;                                                        \
            }                                                                         \
        }                                                                             \
    }
FASTLSTM_GRU(f32, float, fl_sigmoid_f32, fl_tanh_f32)
FASTLSTM_GRU(f64, double, fl_sigmoid_f64, fl_tanh_f64)

#endif /* FASTLSTM_CELLS_H */
