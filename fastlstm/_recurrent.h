/*
 * The per-step recurrent product of one LSTM layer, float32, for CPUs with
 * AVX-512: the whole time loop of the forward pass and of backward-through-
 * time, on a team of threads.
 *
 * Why not one sgemm per step: at mid sizes (N=30, H=300; N=128, H=128) the
 * BLAS repacks W_hh on every call and runs at ~70 GFLOP/s. Here W_hh is packed
 * ONCE per call (64-byte aligned panels) and a register-blocked kernel streams
 * it every step.
 *
 * A batch splits by samples: thread p runs samples [n0, n1) through all units
 * and all steps, with no data from the other threads, so the time loop has no
 * barrier at all:
 *     forward   gates[t][my samples] += h[t-1][my samples] @ W_hh.T ; cell forward
 *     backward  cell backward ; dh[t-1][my samples] += dgates[t][my samples] @ W_hh
 * and in the backward loop, as each chunk of steps is done, one barrier, after
 * which each thread computes its share of their weight gradients (a callback:
 * the caller's, which runs them on the same register tiles, fl_blocked_product,
 * or on BLAS).
 * Splitting by units instead (thread p owns the gate rows of units [j0, j1))
 * needs one barrier per step, since h[t] is complete only when every thread is
 * done; on a batch that lost to the split by samples on every shape measured
 * (2 threads, fwd / bwd, us, by units vs by samples: T=20 N=64 H=64 695 / 801
 * vs 435 / 698; at sine's size, N=32 H=50, the split by units did not pay at
 * all and ran on one thread: 115 / 183 vs 72 / 122). A single sequence (N = 1) can only split
 * by units, and there it pays: its per-step product is bound by cache
 * bandwidth (see the single-sequence loop at the end of this file).
 *
 * Determinism: every output element is one accumulator summed over k = 0..K-1
 * in order, whatever the thread count and the row/column blocking, so results
 * are bit-identical for any number of threads.
 *
 * Portability: only the functions marked FL_AVX512 use AVX-512; the caller
 * checks fl_recurrent_available() at run time and keeps its BLAS loop
 * otherwise. The threads come from _pool.h.
 */
#ifndef FASTLSTM_RECURRENT_H
#define FASTLSTM_RECURRENT_H

/* Included by more than one extension module, each calling a part of it
 * (_cells only fl_blocked_product_f32, through _blas.pxd): the rest of its
 * static functions, and of those of the headers it includes, go unused there. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_gates.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define FL_HAVE_AVX512_CODE 1
#include <immintrin.h>
#define FL_AVX512 __attribute__((target("avx512f")))
#define FL_INLINE_AVX512 static inline __attribute__((always_inline, target("avx512f")))
#else
#define FL_HAVE_AVX512_CODE 0
#endif

#include "_pool.h"

#define FL_LANES 16  /* float32 lanes of one zmm register */
#define FL_NV 2      /* vectors (of 16 columns) per packed panel */
#define FL_MR 12     /* rows per register tile: 12 x 2 accumulators of 32 */
#define FL_MR_MIN 8  /* fewest rows of a tile when there is a choice (fl_tile_rows) */
#define FL_MAX_VEC 512  /* vectors per thread: 4 gates x H up to 2048 */

/* Rows of B per pass of fl_blocked_product: the pass's panels of B stay in L2
 * (256 rows x 32 columns: 32 KB each) and a tile's part of A in L1 across the
 * panels. Charlm's weight gradient, one thread: 103, 104, 102 and 102 GFLOP/s
 * with passes of 64, 128, 192 and 256 rows; its dx, where C goes through
 * memory once a pass, gains from the longer passes (~6.0, ~5.8 and ~5.6 ms
 * with 128, 256 and 400, noisy). */
#define FL_BLOCK_ROWS 256

/* 1 when this CPU (and OS) can run the AVX-512 path. */
static int fl_recurrent_available(void)
{
#if FL_HAVE_AVX512_CODE
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* The columns a thread computes, as vectors of 16: vector v writes output
 * columns col[v] .. col[v] + 15 (lanes off in mask[v] are padding). */
typedef struct {
    int64_t n_vec;
    int64_t K;          /* length of the dot products */
    int64_t col[FL_MAX_VEC];
    uint16_t mask[FL_MAX_VEC];
    float *packed;      /* panels of FL_NV vectors: (n_panels, K, FL_NV * 16), zero padded */
} fl_slice;

/* Vectors of 16 lanes that n columns take (the last one partial). */
static int64_t fl_vectors(int64_t n)
{
    return (n + FL_LANES - 1) / FL_LANES;
}

/* Units [j0, j1) of thread p out of nt: blocks of 16 units dealt out evenly,
 * so only the last thread has a partial vector. */
static void fl_units(int64_t H, int p, int nt, int64_t *j0, int64_t *j1)
{
    int64_t blocks = fl_vectors(H);
    int64_t b0 = blocks * p / nt, b1 = blocks * (p + 1) / nt;
    *j0 = b0 * FL_LANES < H ? b0 * FL_LANES : H;
    *j1 = b1 * FL_LANES < H ? b1 * FL_LANES : H;
}

/* Most vectors a thread can own; the slice arrays are sized for it. */
static int64_t fl_max_vectors(int64_t H)
{
    return 4 * fl_vectors(H);
}

#if FL_HAVE_AVX512_CODE

/* out[j * out_stride + i] = a[i * lda + j] for the rows i in row_mask and the
 * j < n_k (n_k <= 16); lanes i outside row_mask are zero. A 16 x 16 block in
 * four rounds of shuffles: pairs of rows, of pairs, then 128-bit quarters. */
FL_INLINE_AVX512 void fl_transpose_16(float *out, int64_t out_stride, const float *a,
                                     int64_t lda, uint16_t row_mask, int n_k)
{
    __mmask16 k_mask = (__mmask16)((1u << n_k) - 1);
    __m512 r[16], t[16], u[16];
    for (int i = 0; i < 16; i++)
        r[i] = (row_mask >> i) & 1 ? _mm512_maskz_loadu_ps(k_mask, a + i * lda)
                                   : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {   /* t[i]: r[i][j], r[i+1][j] for j = 0, 1 (+ 4L) */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);   /* j = 2, 3 (+ 4L) */
    }
    for (int g = 0; g < 16; g += 4) {   /* u[g + m]: rows g..g+3 at j = m + 4L */
        __m512d a0 = _mm512_castps_pd(t[g]), a1 = _mm512_castps_pd(t[g + 1]);
        __m512d b0 = _mm512_castps_pd(t[g + 2]), b1 = _mm512_castps_pd(t[g + 3]);
        u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
        u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
        u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
        u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
    }
    for (int m = 0; m < 4; m++) {       /* quarters L of u[m], u[4+m], u[8+m], u[12+m] */
        __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
        __m512 o[4] = {_mm512_shuffle_f32x4(v0, v2, 0x88), _mm512_shuffle_f32x4(v1, v3, 0x88),
                       _mm512_shuffle_f32x4(v0, v2, 0xdd), _mm512_shuffle_f32x4(v1, v3, 0xdd)};
        for (int L = 0; L < 4; L++)     /* o[L] is out row j = m + 4L */
            if (m + 4 * L < n_k) _mm512_store_ps(out + (m + 4 * L) * out_stride, o[L]);
    }
}

/* The vectors of s (their col and mask set) packed from the rows of a (., K)
 * matrix w: packed[panel][k][lane] = w[col + lane, k], the product's right
 * operand w.T. 16 rows by 16 k at a time, transposed in registers (a gather
 * of the 16 rows per k took 139 us at H = 300 on Zen 4, where gathers are
 * slow; a scalar loop with a lane test per element 172 us). */
FL_AVX512 static void fl_pack_transposed(fl_slice *s, const float *w, int64_t K)
{
    int64_t stride = FL_NV * FL_LANES;
    s->K = K;
    for (int64_t v = 0; v < s->n_vec; v++) {
        float *panel = s->packed + (v / FL_NV) * K * stride + (v % FL_NV) * FL_LANES;
        const float *first = w + s->col[v] * K;
        for (int64_t k = 0; k < K; k += FL_LANES)
            fl_transpose_16(panel + k * stride, stride, first + k, K, s->mask[v],
                            K - k < FL_LANES ? (int)(K - k) : FL_LANES);
    }
}

/* All rows of a row-major (cols, K) matrix w, as the columns of w.T, one run
 * padded only at its end. */
FL_AVX512 static void fl_pack_columns(fl_slice *s, const float *w, int64_t K, int64_t cols)
{
    s->n_vec = fl_vectors(cols);
    for (int64_t v = 0; v < s->n_vec; v++) {
        s->col[v] = v * FL_LANES;
        s->mask[v] = fl_lane_mask(cols - v * FL_LANES);
    }
    fl_pack_transposed(s, w, K);
}

/* Forward slice of a (4H, K) matrix w (W_hh: K = H; W_ih: K = D): the 4 gate
 * rows of units [j0, j1), vectors gate by gate; all units (one thread) as one
 * run of 4H rows, padded only at its end (H = 50: 13 vectors, not 4 x 4).
 * packed[panel][k][lane] = w[q * H + j, k] for the (q, j) of that lane. */
FL_AVX512 static void fl_pack_forward(fl_slice *s, const float *w, int64_t K, int64_t H,
                            int64_t j0, int64_t j1)
{
    if (j0 == 0 && j1 == H) {
        fl_pack_columns(s, w, K, 4 * H);
        return;
    }
    int64_t per_gate = fl_vectors(j1 - j0);
    s->n_vec = 4 * per_gate;
    for (int64_t q = 0; q < 4; q++)
        for (int64_t b = 0; b < per_gate; b++) {
            int64_t v = q * per_gate + b, j = j0 + b * FL_LANES;
            s->col[v] = q * H + j;
            s->mask[v] = fl_lane_mask(j1 - j);
        }
    fl_pack_transposed(s, w, K);
}

/* All columns of a row-major (K, cols) matrix w, rows ldw apart, over K = the
 * length of the sums: packed[panel][k][lane] = w[k, j] for the j of that lane.
 * The backward loop's W_hh (G, H); FL_BLOCK_ROWS rows of a product's right
 * operand (fl_blocked_product). */
FL_AVX512 static void fl_pack_rows(fl_slice *s, const float *w, int64_t K, int64_t ldw,
                                   int64_t cols)
{
    int64_t stride = FL_NV * FL_LANES;
    s->K = K;
    s->n_vec = fl_vectors(cols);
    for (int64_t v = 0; v < s->n_vec; v++) {
        s->col[v] = v * FL_LANES;
        s->mask[v] = fl_lane_mask(cols - s->col[v]);
    }
    /* row by row, each vector's 16 columns one masked load (a scalar loop with
     * a lane test per element took 206 us for W_hh at H = 300) */
    for (int64_t k = 0; k < K; k++)
        for (int64_t v = 0; v < s->n_vec; v++)
            _mm512_store_ps(s->packed + ((v / FL_NV) * K + k) * stride + (v % FL_NV) * FL_LANES,
                            _mm512_maskz_loadu_ps(s->mask[v], w + k * ldw + s->col[v]));
}

#endif /* FL_HAVE_AVX512_CODE */

/* Floats of n_vec vectors packed in panels over K (fl_slice.packed). */
static int64_t fl_panel_floats(int64_t n_vec, int64_t K)
{
    return (n_vec + FL_NV - 1) / FL_NV * K * FL_NV * FL_LANES;
}

#if FL_HAVE_AVX512_CODE

/* A second product a tile runs on after its first, into the same sums. */
typedef struct {
    int64_t K, lda;
    const float *A, *panel;   /* A: the tile's first row; panel: its columns' panel */
} fl_then;

/* acc[r][v] += sum over k in [K0, K1) of A[r, k] * panel[k][v], A[r, k] at
 * A[r * LDA + k * AK] (AK = 1: rows of A; LDA = 1: A read down its columns). */
#define FL_TILE_SUM(K0, K1, A, LDA, AK, PANEL)                                      \
    for (int64_t k = (K0); k < (K1); k++) {                                         \
        __m512 b[FL_NV];                                                            \
        for (int v = 0; v < nv; v++)                                                \
            b[v] = _mm512_load_ps((PANEL) + k * FL_NV * FL_LANES + v * FL_LANES);    \
        for (int r = 0; r < mr; r++) {                                              \
            __m512 a = _mm512_set1_ps((A)[r * (LDA) + k * (AK)]);                   \
            for (int v = 0; v < nv; v++)                                            \
                acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);                    \
        }                                                                           \
    }

/* Cache lines for a tile to fetch into L2 as it runs, one every FL_FETCH_EVERY
 * steps of its sum (see fl_ahead). */
typedef struct {
    const char *at;
    int64_t lines;
} fl_fetch;
#define FL_FETCH_EVERY 8

/* FL_TILE_SUM over [0, K), with fetch's lines from `fetched` on asked for along
 * the way, one every FL_FETCH_EVERY steps. */
#define FL_TILE_SUM_FETCHING(K, A, LDA, AK, PANEL)                                    \
    {                                                                               \
        int64_t k0 = 0;                                                             \
        if (fetch)                                                                  \
            for (; fetched < fetch->lines && k0 + FL_FETCH_EVERY <= (K); fetched++) { \
                _mm_prefetch(fetch->at + 64 * fetched, _MM_HINT_T1);                \
                _Pragma("GCC unroll 8")  /* no loop exit to predict every few steps */ \
                FL_TILE_SUM(k0, k0 + FL_FETCH_EVERY, A, LDA, AK, PANEL)             \
                k0 += FL_FETCH_EVERY;                                               \
            }                                                                       \
        FL_TILE_SUM(k0, (K), A, LDA, AK, PANEL)                                     \
    }

/* One register tile: rows [0, mr) of C, the nv vectors of one panel.
 * C[r, col[v] + lane] (+)= sum_k A[r, k] * panel[k][v][lane]; mr and nv are
 * compile-time constants at every call site, so acc lives in registers.
 * start (a row of G values, or NULL): every row's sum starts from it, not from
 * C (accumulate) or zero: a bias, with no pass writing it into C first.
 * then (or NULL): a second product added on before the sums go back to C (a
 * prediction's x[t] @ W_ih.T and h[t-1] @ W_hh.T in one pass: the same sums as
 * one call after the other).
 * fetch (or NULL): lines fetched into L2 along the way (at most (K + then's K)
 * / FL_FETCH_EVERY of them); the sums are the same.
 * A[r, k] is at A[r * lda + k * a_k] (FL_TILE_SUM); then's A has a_k = 1. */
FL_INLINE_AVX512 void fl_tile(const int mr, const int nv, int64_t K,
                              const float *A, int64_t lda, const int64_t a_k,
                              const float *panel,
                              float *C, int64_t ldc, const int64_t *col,
                              const uint16_t *mask, int accumulate, const float *start,
                              const fl_then *then, const fl_fetch *fetch)
{
    __m512 acc[FL_MR][FL_NV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++)
            acc[r][v] = start ? _mm512_maskz_loadu_ps(mask[v], start + col[v])
                        : accumulate ? _mm512_maskz_loadu_ps(mask[v], C + r * ldc + col[v])
                                     : _mm512_setzero_ps();
    int64_t fetched = 0;
    FL_TILE_SUM_FETCHING(K, A, lda, a_k, panel)
    if (then) {
        FL_TILE_SUM_FETCHING(then->K, then->A, then->lda, 1, then->panel)
    }
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(C + r * ldc + col[v], mask[v], acc[r][v]);
}

#define FL_TILE_CASE(MR)                                                                 \
    case MR:                                                                             \
        if (nv == 2) fl_tile(MR, 2, K, A, lda, 1, panel, C, ldc, col, mask, acc, start, then, \
                             fetch);                                                     \
        else fl_tile(MR, 1, K, A, lda, 1, panel, C, ldc, col, mask, acc, start, then,     \
                     fetch);                                                             \
        break;

/* The tile for any mr in 1..FL_MR, nv in 1..2. */
FL_AVX512 static void fl_tile_any(int mr, int nv, int64_t K, const float *A, int64_t lda,
                                  const float *panel, float *C, int64_t ldc,
                                  const int64_t *col, const uint16_t *mask, int acc,
                                  const float *start, const fl_then *then,
                                  const fl_fetch *fetch)
{
    switch (mr) {
        FL_TILE_CASE(1) FL_TILE_CASE(2) FL_TILE_CASE(3) FL_TILE_CASE(4)
        FL_TILE_CASE(5) FL_TILE_CASE(6) FL_TILE_CASE(7) FL_TILE_CASE(8)
        FL_TILE_CASE(9) FL_TILE_CASE(10) FL_TILE_CASE(11) FL_TILE_CASE(12)
    }
}

/* The product of ONE row over k in [k0, k1): C[slice columns] (+)= a[0:k1-k0] @
 * slice[k0:k1], a pointing at the row's element k0. fl_tile with one row has
 * two accumulators, each FMA waiting for the one before (4 cycles), so it
 * streams 128 bytes of panel per 4 cycles, half of what the L2 delivers. Here FL_ROW_PANELS panels run side by side:
 * 2 x FL_ROW_PANELS independent chains. Each output is one sum over k in order
 * (a call over [0, K) gives the same bits as the tiles; calls over [0, m) then
 * [m, K) the same again: the accumulator goes through C unrounded, as float).
 * backwards: the same sums, the panels taken last to first (see
 * fl_alternate_min_bytes). */
#define FL_ROW_PANELS 4

FL_AVX512 static void fl_row_product(const fl_slice *s, const float *a, float *C,
                                     int accumulate, int64_t k0, int64_t k1, int backwards)
{
    int64_t K = s->K, stride = FL_NV * FL_LANES;
    const int group = FL_ROW_PANELS * FL_NV;    /* vectors per pass */
    int64_t n_groups = s->n_vec / group, tail = n_groups * group;
    if (k1 <= k0) return;
    for (int64_t i = 0; i < n_groups; i++) {
        int64_t v = (backwards ? n_groups - 1 - i : i) * group;
        const float *panel = s->packed + (v / FL_NV) * K * stride;
        __m512 acc[FL_ROW_PANELS * FL_NV];
        for (int u = 0; u < group; u++)
            acc[u] = accumulate ? _mm512_maskz_loadu_ps(s->mask[v + u], C + s->col[v + u])
                                : _mm512_setzero_ps();
        for (int64_t k = k0; k < k1; k++) {
            __m512 ak = _mm512_set1_ps(a[k - k0]);
            for (int p = 0; p < FL_ROW_PANELS; p++)
                for (int u = 0; u < FL_NV; u++)
                    acc[p * FL_NV + u] = _mm512_fmadd_ps(
                        ak, _mm512_load_ps(panel + (p * K + k) * stride + u * FL_LANES),
                        acc[p * FL_NV + u]);
        }
        for (int u = 0; u < group; u++)
            _mm512_mask_storeu_ps(C + s->col[v + u], s->mask[v + u], acc[u]);
    }
    for (int64_t v = tail; v < s->n_vec; v += FL_NV) {   /* the last few vectors: one tile each */
        int nv = s->n_vec - v < FL_NV ? (int)(s->n_vec - v) : FL_NV;
        fl_tile_any(1, nv, k1 - k0, a, K, s->packed + ((v / FL_NV) * K + k0) * stride,
                    C, 0, s->col + v, s->mask + v, accumulate, NULL, NULL, NULL);
    }
}

/* Rows of the register tile at row n of N: FL_MR, except that the last two
 * tiles share their rows evenly when the last would have fewer than FL_MR_MIN
 * (15 rows: 8 + 7, not 12 + 3): a tile of few rows has too few accumulators
 * to hide the FMA latency and streams its panel for little work (charlm's
 * layer forward, 15 rows per thread: 4.7 -> 4.0-4.2 ms; its training 540-560
 * -> 584-595 samples/s). Tiles of 11 + 11 + 10 rows were slower than 12 + 12 + 8
 * (large's layer forward: 54.5 vs 51-53 ms), hence not all of equal height. */
static inline int fl_tile_rows(int64_t N, int64_t n)
{
    int64_t left = N - n;
    if (left <= FL_MR) return (int)left;
    if (left < FL_MR + FL_MR_MIN) return (int)((left + 1) / 2);
    return FL_MR;
}

/* Memory that the next step reads first, fetched into L2 while this step's
 * tiles run, a share of it by each tile (fl_fetch): the backward cell's inputs
 * (gates, c_prev, tanh_c) and its output dgates, which the forward pass or the
 * last batch left out of cache. Reading them from there, the cell took 45 ns
 * per 16 units against 16 in cache (C microbenchmark, charlm's slice: N = 15,
 * H = 300), and 5.7% of charlm's training against 1.4% with them fetched
 * (perf, both cores). Training, best epoch, samples/s, alternating A/B pairs
 * (without/with): charlm 765/767, 705/786, 816/821, 793/820, 780/818,
 * 782/791, 698/713; large, median epoch, 349/350, 344/354, 352/358, 374/379;
 * medium level. Asked for all at once before each tile instead, the fetches
 * stalled the core about as long as the cell saved (perf: the cell 5.7% ->
 * 2.2% of charlm's training, the product around the tiles 0.4% -> 2.3%); one
 * every 4 steps of the sum instead of 8, or into L1 instead of L2: no better. */
#define FL_AHEAD_REGIONS 4
typedef struct {
    const char *at[FL_AHEAD_REGIONS];
    int64_t lines[FL_AHEAD_REGIONS];   /* cache lines from at[i] on */
    int region;                        /* where the fetching has got to */
    int64_t line;
} fl_ahead;

/* Cache lines that n floats from p on can touch. */
static inline int64_t fl_lines(const float *p, int64_t n)
{
    return ((uintptr_t)p % 64 + n * (int64_t)sizeof(float) + 63) / 64;
}

/* The next lines of `ahead` for one tile: at most `most`, from one region. */
static inline fl_fetch fl_ahead_next(fl_ahead *ahead, int64_t most)
{
    fl_fetch fetch = {NULL, 0};
    while (ahead->region < FL_AHEAD_REGIONS && ahead->line >= ahead->lines[ahead->region]) {
        ahead->region++;
        ahead->line = 0;
    }
    if (ahead->region < FL_AHEAD_REGIONS) {
        int64_t left = ahead->lines[ahead->region] - ahead->line;
        fetch.at = ahead->at[ahead->region] + 64 * ahead->line;
        fetch.lines = left < most ? left : most;
        ahead->line += fetch.lines;
    }
    return fetch;
}

/* Each tile's share of ahead's lines, shared out evenly over `tiles` tiles of
 * K steps: at most the K / FL_FETCH_EVERY a tile has room for. */
static int64_t fl_ahead_share(const fl_ahead *ahead, int64_t tiles, int64_t K)
{
    int64_t lines = 0;
    for (int i = 0; i < FL_AHEAD_REGIONS; i++) lines += ahead->lines[i];
    int64_t share = tiles > 0 ? (lines + tiles - 1) / tiles : 0;
    return share < K / FL_FETCH_EVERY ? share : K / FL_FETCH_EVERY;
}

/* Data of this many bytes or more, gone over once a step, is taken to be out
 * of L2 (1 MB a core here) by the time it comes round again.
 * The backward cell's buffers over all steps (fl_backward_part) are then
 * fetched ahead; smaller, they stay in cache and fetching only costs: sine's
 * 320 KB a thread trained 4-8% slower with them fetched (median epoch, 3 A/B
 * pairs).
 * The forward's packed W_ih and W_hh: smaller, training projects the input
 * step by step (fl_forward_part). */
#define FL_FETCH_MIN_BYTES (1 << 20)

/* C[:, slice columns] (+)= A (N, K) @ slice, A row-major with leading dim lda,
 * with the panels outer: each panel runs over every tile of rows, so it stays
 * in L1 while A's rows come by. The backward's dh[t-1] += dgates[t] @ W_hh
 * (there the rows outer, as the forward's products run, were level or slower:
 * charlm's layer backward 15.9-16.2 vs 16.0-16.5 ms, medium's 10.5-11.6 vs
 * 10.8-11.6). ahead (or NULL): fetched over all the tiles, a share by each.
 * (Prefetching the next tile's rows of C, or the next panel where the panels
 * outgrow L2, measured level here: medium's, charlm's and large's layer
 * backward, and T = 2, N = 24, H = 512, where only the panels are large.) */
FL_AVX512 static void fl_slice_product(const fl_slice *s, int64_t N, const float *A,
                                       int64_t lda, float *C, int64_t ldc, int accumulate,
                                       fl_ahead *ahead)
{
    int64_t stride = FL_NV * FL_LANES, per_tile = 0;
    if (ahead) {
        int64_t row_tiles = 0;
        for (int64_t n = 0; n < N; n += fl_tile_rows(N, n)) row_tiles++;
        per_tile = fl_ahead_share(ahead, row_tiles * ((s->n_vec + FL_NV - 1) / FL_NV), s->K);
    }
    for (int64_t v = 0; v < s->n_vec; v += FL_NV) {
        int nv = s->n_vec - v < FL_NV ? (int)(s->n_vec - v) : FL_NV;
        const float *panel = s->packed + (v / FL_NV) * s->K * stride;
        for (int64_t n = 0, mr; n < N; n += mr) {
            mr = fl_tile_rows(N, n);
            fl_fetch fetch = ahead ? fl_ahead_next(ahead, per_tile) : (fl_fetch){NULL, 0};
            fl_tile_any((int)mr, nv, s->K, A + n * lda, lda, panel, C + n * ldc, ldc,
                        s->col + v, s->mask + v, accumulate, NULL, NULL,
                        fetch.lines ? &fetch : NULL);
        }
    }
    if (ahead)   /* what the tiles had no room for */
        for (fl_fetch rest; (rest = fl_ahead_next(ahead, INT64_MAX)).lines > 0;)
            for (int64_t i = 0; i < rest.lines; i++)
                _mm_prefetch(rest.at + 64 * i, _MM_HINT_T1);
}

/* fl_rows_product: panels of more bytes than this in all run in groups of about
 * FL_PANEL_GROUP_BYTES (half of L2), each over every tile of rows. */
#define FL_ROWS_OUTER_MAX_BYTES (8 << 20)
#define FL_PANEL_GROUP_BYTES (512 << 10)

/* C[:, slice columns] (+)= A (N, K) @ slice (start: see fl_tile), then, if s2
 * is not NULL, C[:, slice columns] += A2 (N, K2) @ s2 in the same tiles: s2 is
 * laid out as s (the same vectors), with its own K. The rows outer: each tile
 * of rows runs over every panel, so its rows of A stay in L1 and its rows of C
 * are written one after the other; the panels come from L2 (or L3). The
 * forward's products: the input projection of all steps before the loop, and
 * each step's, with or without the input's. With the panels outer instead (as
 * fl_slice_product), the tiles read all of A again for every panel: a layer
 * forward, one thread, ms, panels / rows outer: medium's (T = 50, N = 64, D =
 * 32, H = 128) 6.3-6.6 / 5.8-6.0, charlm's first layer (N = 15, D = 40, H =
 * 300) 6.2-6.4 / 6.1-6.2, large's (N = 32) 83.4-84.4 / 81.1-82.9; batched
 * predict, best call, ms: medium 11.5 / 10.9, charlm 137-139 / 135-136, large
 * 314-328 / 307-316, sine 0.46 / 0.42; training, median epoch: medium +2.5%,
 * charlm and large +1.5%, sine and binadd level. */
FL_AVX512 static void fl_rows_product(const fl_slice *s, int64_t N, const float *A,
                                      int64_t lda, const fl_slice *s2, const float *A2,
                                      int64_t lda2, float *C, int64_t ldc, int accumulate,
                                      const float *start)
{
    if (N == 1) {   /* one row: fl_row_product's independent chains */
        if (start)
            for (int64_t v = 0; v < s->n_vec; v++)
                _mm512_mask_storeu_ps(C + s->col[v], s->mask[v],
                                      _mm512_maskz_loadu_ps(s->mask[v], start + s->col[v]));
        fl_row_product(s, A, C, accumulate || start, 0, s->K, 0);
        if (s2) fl_row_product(s2, A2, C, 1, 0, s2->K, 0);
        return;
    }
    int64_t stride = FL_NV * FL_LANES;
    /* Panels beyond the caches (FL_ROWS_OUTER_MAX_BYTES in all): the rows outer
     * would read every panel from memory once per tile of rows; in groups of
     * panels that fit in L2 instead, each group runs over every tile of rows
     * (each tile's sums as before, whole: the same bits). */
    int64_t panel_bytes = (s->K + (s2 ? s2->K : 0)) * stride * (int64_t)sizeof(float);
    int64_t n_panels = (s->n_vec + FL_NV - 1) / FL_NV;
    int64_t group = n_panels * panel_bytes > FL_ROWS_OUTER_MAX_BYTES
                        ? FL_PANEL_GROUP_BYTES / panel_bytes : n_panels;
    if (group < 1) group = 1;
    for (int64_t v0 = 0; v0 < s->n_vec; v0 += group * FL_NV) {
        int64_t v1 = v0 + group * FL_NV < s->n_vec ? v0 + group * FL_NV : s->n_vec;
        for (int64_t n = 0, mr; n < N; n += mr) {
            mr = fl_tile_rows(N, n);
            for (int64_t v = v0; v < v1; v += FL_NV) {
                int nv = s->n_vec - v < FL_NV ? (int)(s->n_vec - v) : FL_NV;
                fl_then then = {s2 ? s2->K : 0, lda2, s2 ? A2 + n * lda2 : NULL,
                                s2 ? s2->packed + (v / FL_NV) * s2->K * stride : NULL};
                fl_tile_any((int)mr, nv, s->K, A + n * lda, lda,
                            s->packed + (v / FL_NV) * s->K * stride, C + n * ldc, ldc,
                            s->col + v, s->mask + v, accumulate, start, s2 ? &then : NULL,
                            NULL);
            }
        }
    }
}

/* The tile of a weight gradient: C[r, col[v] + lane] += sum over k in [0, K) of
 * A[k * a_k + r] * panel[k][v][lane], A read down its columns (rows of dgates,
 * a_k apart: no transposed copy of them). */
FL_AVX512 static void fl_tile_gradient(int mr, int nv, int64_t K, const float *A, int64_t a_k,
                                       const float *panel, float *C, int64_t ldc,
                                       const int64_t *col, const uint16_t *mask)
{
#define FL_GRADIENT_TILE_CASE(MR)                                                           \
    case MR:                                                                                \
        if (nv == 2) fl_tile(MR, 2, K, A, 1, a_k, panel, C, ldc, col, mask, 1, NULL, NULL,  \
                             NULL);                                                         \
        else fl_tile(MR, 1, K, A, 1, a_k, panel, C, ldc, col, mask, 1, NULL, NULL, NULL);   \
        break;
    switch (mr) {
        FL_GRADIENT_TILE_CASE(1) FL_GRADIENT_TILE_CASE(2) FL_GRADIENT_TILE_CASE(3)
        FL_GRADIENT_TILE_CASE(4) FL_GRADIENT_TILE_CASE(5) FL_GRADIENT_TILE_CASE(6)
        FL_GRADIENT_TILE_CASE(7) FL_GRADIENT_TILE_CASE(8) FL_GRADIENT_TILE_CASE(9)
        FL_GRADIENT_TILE_CASE(10) FL_GRADIENT_TILE_CASE(11) FL_GRADIENT_TILE_CASE(12)
    }
#undef FL_GRADIENT_TILE_CASE
}

/* sums (mr,) += A's rows k in [0, K) (A[k * lda + r], r < mr <= 16), in order:
 * the bias gradient of a tile of gate rows, db += dgates.sum(rows), read right
 * after the tile read the same values (still in L1 or L2), instead of in the
 * pass of its own over all of dgates that the BLAS path makes (_blas.sum_rows;
 * the same bits, each a sum over k in order). Charlm's training: that pass
 * took 0.86% of the CPU, this 0.57% (perf); epochs level within their noise.
 * Not summed inside the tile's loop: gcc then kept the tile's accumulators in
 * memory (layer backward 0.7 ms slower). */
FL_AVX512 static void fl_row_sums(int mr, int64_t K, const float *A, int64_t lda, float *sums)
{
    __mmask16 lanes = (__mmask16)((1u << mr) - 1);
    __m512 sum = _mm512_maskz_loadu_ps(lanes, sums);
    for (int64_t k = 0; k < K; k++)
        sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(lanes, A + k * lda));
    _mm512_mask_storeu_ps(sums, lanes, sum);
}

/* C (M, cols) (+)= op(A) @ B with B (K, cols) row-major, rows ldb apart, C's
 * rows ldc apart, and op(A)[m, k] = A[m * lda + k] (a_down = 0) or A[k * lda +
 * m] (a_down = 1: A read down its columns, as dgates in a weight gradient
 * dW += dgates.T @ x; always accumulated; row_sums (M,), or NULL: row_sums +=
 * op(A)'s sums over k, the bias gradient (fl_row_sums)). s->packed: fl_panel_floats(
 * fl_vectors(cols), FL_BLOCK_ROWS) floats, 64-byte aligned, scratch.
 * Each pass packs FL_BLOCK_ROWS rows of B (a plain copy of rows, where BLAS's
 * gemm for a weight gradient copies the far larger dgates transposed) and runs
 * tiles of 12 rows of C over them. Each output is one sum over k in order: the
 * same bits for any split of the rows of C between threads. One thread, cold
 * operands, GFLOP/s against OpenBLAS's sgemm: charlm's weight gradient (K =
 * 750, M = 1200, cols = 300) 99-103 vs 86-89; cols = 40: 72 vs 43; large's
 * (K = 3200, M = 2048, cols = 512) 97 vs 95. */
FL_AVX512 static void fl_blocked_product(int64_t K, int64_t M, int64_t cols, const float *A,
                                         int64_t lda, int a_down, const float *B, int64_t ldb,
                                         float *C, int64_t ldc, int accumulate,
                                         float *row_sums, fl_slice *s)
{
    int64_t stride = FL_NV * FL_LANES;
    for (int64_t k0 = 0; k0 < K; k0 += FL_BLOCK_ROWS) {
        int64_t kn = K - k0 < FL_BLOCK_ROWS ? K - k0 : FL_BLOCK_ROWS;
        fl_pack_rows(s, B + k0 * ldb, kn, ldb, cols);
        for (int64_t m = 0, mr; m < M; m += mr) {
            mr = fl_tile_rows(M, m);
            for (int64_t v = 0; v < s->n_vec; v += FL_NV) {
                int nv = s->n_vec - v < FL_NV ? (int)(s->n_vec - v) : FL_NV;
                const float *panel = s->packed + (v / FL_NV) * kn * stride;
                if (a_down) {
                    fl_tile_gradient((int)mr, nv, kn, A + k0 * lda + m, lda, panel, C + m * ldc,
                                     ldc, s->col + v, s->mask + v);
                    if (row_sums && v == 0)
                        fl_row_sums((int)mr, kn, A + k0 * lda + m, lda, row_sums + m);
                } else
                    fl_tile_any((int)mr, nv, kn, A + m * lda + k0, lda, panel, C + m * ldc, ldc,
                                s->col + v, s->mask + v, accumulate || k0 > 0, NULL, NULL, NULL);
            }
        }
    }
}

#endif /* FL_HAVE_AVX512_CODE */

/* n floats (at least one) at a 64-byte boundary, for the aligned panel loads. */
static float *fl_alloc_floats(int64_t n)
{
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes);
}

/* Floats of one thread's packed weights in a time loop over a batch, where
 * each thread packs all the columns (fl_forward_part, fl_backward_part):
 * forward, W_hh then W_ih, 4H columns over K = H + D; backward, W_hh's H
 * columns over K = 4H. A multiple of 32 floats: each thread's part stays
 * 64-byte aligned. */
static int64_t fl_loop_thread_floats(int64_t D, int64_t H, int forward)
{
    return forward ? fl_panel_floats(fl_vectors(4 * H), H + D)
                   : fl_panel_floats(fl_vectors(H), 4 * H);
}

/* The weight gradients (and dx) of steps [t0, t1) of a backward loop, thread p's
 * share of nt (fl_backward_part calls it as chunks of steps are done). */
typedef void (*fl_steps_fn)(void *arg, int p, int nt, int64_t t0, int64_t t1);

/* Steps per chunk of a layer's weight gradients and dx, which the backward
 * loops compute as soon as a chunk's dgates are done, still in L2, instead of
 * reading all of dgates back from memory after the loop: whole steps of
 * FL_BLOCK_ROWS rows or more (the passes of fl_blocked_product), or all T
 * steps in one chunk where dgates stays in L2 anyway (float_bytes a float:
 * under FL_FETCH_MIN_BYTES). The chunks depend on T, N and G alone, so the sums
 * (over the chunks' rows, the last chunk first) are the same on any number of
 * threads. Training, median epoch, alternating in one process: medium 6,537
 * -> 7,098 samples/s; charlm (550 -> 554) and large (250 -> 247) level, with
 * chunks of 96 to 512 rows too. The caller (lstm_layer_backward) works it out
 * once, for its BLAS loop and for fl_recurrent_backward_f32's chunk, and may
 * size dgates by it. */
static int64_t fl_gradient_steps(int64_t T, int64_t N, int64_t G, int64_t float_bytes)
{
    if (N <= 0 || T * N * G * float_bytes < FL_FETCH_MIN_BYTES) return T > 0 ? T : 1;
    return (FL_BLOCK_ROWS + N - 1) / N;
}

/* Everything one time loop needs, shared by the team. */
typedef struct {
    int64_t T, N, H, D;
    int64_t Tg;                     /* forward: steps gates and tanh_c hold, T or 1 */
    const float *x, *w_ih, *bias;   /* forward: (T, N, D), (4H, D), (4H) b_ih + b_hh */
    int64_t x_step, x_row;          /* forward: floats from x[t, n] to x[t + 1, n], x[t, n + 1] */
    fl_slice *slices_ih;            /* forward: one per thread, W_ih packed */
    const float *w_hh, *h0, *c0, *gates_in, *c_in, *tanh_c;
    float *gates, *c, *h, *dh, *dc, *dh0, *dgates;
    int64_t dg_steps;   /* backward: steps dgates holds, step t at t % dg_steps */
    int64_t chunk;      /* backward: steps per chunk of the weight gradients */
    fl_steps_fn after;  /* backward: run by every thread on each chunk of steps done, or NULL */
    void *after_arg;
    fl_slice *slices;
} fl_loop;

/* Samples [n0, n1) of thread p out of nt: contiguous, sizes differing by at most one. */
static void fl_samples(int64_t N, int p, int nt, int64_t *n0, int64_t *n1)
{
    *n0 = N * p / nt;
    *n1 = N * (p + 1) / nt;
}

#if FL_HAVE_AVX512_CODE

/* Thread p of nt, forward, samples [n0, n1), every step:
 *     gates[t][my samples] = b_ih + b_hh + x[t][my samples] @ W_ih.T
 *     gates[t][my samples] += h[t-1][my samples] @ W_hh.T ;  cell forward
 * Fused: where no backward follows (a prediction), and in training where W_ih
 * and W_hh packed together stay in L2 (under FL_FETCH_MIN_BYTES: medium,
 * binadd, sine), the first line runs step by step, in the pass of the second
 * (fl_rows_product, each row's sums starting from the bias): gates[t] goes
 * from the bias to the preactivations in registers and is written once, where
 * a product before the loop writes all T steps out (tens of MB) and each step's
 * tiles read them back from memory. Batched predict, samples/s, alternating A/B
 * runs: medium 25.1-25.3K -> 26.1-26.2K, charlm 2277-2307 -> 2434, large
 * 968-1016 -> 1085-1140; there gates and tanh_c hold one step (Tg = 1), reused,
 * and the cell makes c and h only (fl_lstm_cell_predict_units_f32). Training,
 * samples/s, median of 6-8 epochs alternating in one process: medium 5,972 ->
 * 6,321, binadd 522,772 -> 555,856, sine level (130,582 -> 132,255).
 * Otherwise (training with larger weights: charlm, large), the first line runs
 * for all steps before the loop (fl_rows_product), over all T*N rows at once when
 * one thread has every sample (its rows of all steps are then contiguous): fused
 * there, large's median epoch read 240 against 250 samples/s and charlm's 546
 * against 553, the panels of both matrices coming from L3 at every step. That
 * product writes each row of gates once, where a BLAS gemm needed the bias
 * written into every row first and read the rows back (that pass alone took
 * 1.8% of large's training; best epoch, alternating A/B pairs against the gemm:
 * large +2.4%, sine +5-10%, charlm +2%, medium level).
 * gates (Tg, N, 4H) out: activations (Tg = T), scratch (Tg = 1); tanh_c (Tg, N, H)
 * the same; c, h (T, N, H) out; h0 (N, H) or NULL for zeros; c0 (N, H). */
FL_AVX512 static void fl_forward_part(void *arg, int p, int nt)
{
    fl_loop *L = arg;
    int64_t N = L->N, H = L->H, D = L->D, G = 4 * H, n0, n1;
    fl_samples(N, p, nt, &n0, &n1);
    int64_t M = n1 - n0;
    if (M <= 0) return;
    fl_slice *s = &L->slices[p], *ih = L->slices_ih ? &L->slices_ih[p] : NULL;
    fl_pack_forward(s, L->w_hh, H, H, 0, H);
    int predict = L->Tg < L->T;   /* gates of one step: no backward follows */
    if (D > 0) fl_pack_forward(ih, L->w_ih, D, H, 0, H);
    /* the input projection step by step, in the recurrent product's pass (see above) */
    int fused = predict || fl_panel_floats(s->n_vec, H + D) * (int64_t)sizeof(float)
                               < FL_FETCH_MIN_BYTES;
    if (!fused && D > 0) {   /* every step's x @ W_ih.T + bias, before the loop (x dense) */
        int64_t rows = M == N ? L->T * N : M, steps = M == N ? 1 : L->T;
        for (int64_t t = 0; t < steps; t++)
            fl_rows_product(ih, rows, L->x + (t * N + n0) * D, D, NULL, NULL, 0,
                            L->gates + (t * N + n0) * G, G, 0, L->bias);
    }
    for (int64_t t = 0; t < L->T; t++) {   /* no data from the other threads: no sync */
        int64_t tg = predict ? 0 : t;
        float *g = L->gates + (tg * N + n0) * G;
        const float *h_prev = t > 0 ? L->h + ((t - 1) * N + n0) * H
                                    : (L->h0 ? L->h0 + n0 * H : NULL);
        const float *c_prev = t > 0 ? L->c + ((t - 1) * N + n0) * H : L->c0 + n0 * H;
        int64_t at = (t * N + n0) * H;
        if (fused && D > 0)   /* each row's sums start from the bias; h[t-1] in the same pass */
            fl_rows_product(ih, M, L->x + t * L->x_step + n0 * L->x_row, L->x_row,
                            h_prev ? s : NULL, h_prev, H, g, G, 0, L->bias);
        else {
            if (D == 0)   /* no input: the bias alone */
                for (int64_t n = 0; n < M; n++)
                    memcpy(g + n * G, L->bias, (size_t)G * sizeof(float));
            if (h_prev)
                fl_rows_product(s, M, h_prev, H, NULL, NULL, 0, g, G, 1, NULL);
        }
        float *tanh_c = (float *)L->tanh_c + (tg * N + n0) * H;
        if (predict)   /* c and h will do */
            fl_lstm_cell_predict_units_f32(M, H, 0, H, g, c_prev, L->c + at, tanh_c, L->h + at);
        else
            fl_lstm_cell_fwd_units_f32(M, H, 0, H, g, c_prev, L->c + at, tanh_c, L->h + at);
    }
}

/* Thread p of nt, backward, samples [n0, n1): dh (T, N, H) in: gradient from
 * above, added to; dc (N, H) in: dL/dc_T, out: dL/dc0; dh0 (N, H) out (or NULL:
 * none); dgates (dg_steps, N, 4H) out, step t at t % dg_steps; and as each
 * chunk of L->chunk steps is done by every thread (a barrier), its
 * share of their weight gradients (L->after). */
FL_AVX512 static void fl_backward_part(void *arg, int p, int nt)
{
    fl_loop *L = arg;
    int64_t T = L->T, N = L->N, H = L->H, G = 4 * H, NG = N * G, NH = N * H, n0, n1;
    fl_samples(N, p, nt, &n0, &n1);
    int64_t M = n1 - n0;
    fl_slice *s = &L->slices[p];
    fl_pack_rows(s, L->w_hh, G, H, H);   /* W_hh (G, H) */
    /* fetch the next step's cell data where the cell's gates, c_prev, tanh_c and
     * dgates over all steps outgrow L2 */
    int fetch = T * M * (2 * G + 2 * H) * (int64_t)sizeof(float) >= FL_FETCH_MIN_BYTES;
    int64_t chunk = L->chunk;
    for (int64_t t = T - 1; t >= 0; t--) {
        const float *dg = L->dgates + t % L->dg_steps * NG + n0 * G;
        /* dgates[t][my samples], dc[my samples] <- dc_{t-1}, through the cell */
        fl_lstm_cell_bwd_units_f32(M, H, 0, H, L->gates_in + t * NG + n0 * G,
                                   (t > 0 ? L->c_in + (t - 1) * NH : L->c0) + n0 * H,
                                   L->tanh_c + t * NH + n0 * H, L->dh + t * NH + n0 * H,
                                   L->dc + n0 * H, (float *)dg);
        if (t > 0) {   /* dh[t-1][my samples] += dgates[t][my samples] @ W_hh */
            /* meanwhile, what the cell reads and writes at t - 1 */
            const float *gates = L->gates_in + (t - 1) * NG + n0 * G,
                        *c_prev = (t > 1 ? L->c_in + (t - 2) * NH : L->c0) + n0 * H,
                        *tanh_c = L->tanh_c + (t - 1) * NH + n0 * H,
                        *dgates = L->dgates + (t - 1) % L->dg_steps * NG + n0 * G;
            fl_ahead next = {{(const char *)gates, (const char *)c_prev, (const char *)tanh_c,
                              (const char *)dgates},
                             {fl_lines(gates, M * G), fl_lines(c_prev, M * H),
                              fl_lines(tanh_c, M * H), fl_lines(dgates, M * G)}, 0, 0};
            fl_slice_product(s, M, dg, G, L->dh + (t - 1) * NH + n0 * H, H, 1,
                             fetch ? &next : NULL);
        } else if (L->dh0) {   /* dh0[my samples] = dgates[0][my samples] @ W_hh */
            fl_slice_product(s, M, dg, G, L->dh0 + n0 * H, H, 0, NULL);
        }
        if (L->after && t % chunk == 0) {   /* steps [t, t + chunk) done here */
            fl_team_barrier(nt);            /* ... and by every thread */
            L->after(L->after_arg, p, nt, t, t + chunk < T ? t + chunk : T);
            if (L->dg_steps < T)   /* the next chunk's dgates go where all threads read */
                fl_team_barrier(nt);
        }
    }
}

/* Threads worth using: each needs FL_MIN_SAMPLES samples, or FL_MIN_SAMPLES_WIDE
 * from FL_WIDE_H units, where a sample's product per step (4H x H multiply-adds,
 * 256K at H = 256) is worth a thread of its own. */
#define FL_MIN_SAMPLES 8
#define FL_MIN_SAMPLES_WIDE 1
#define FL_WIDE_H 256

static int fl_useful_threads(int64_t N, int64_t H, int n_threads)
{
    int64_t most = N / (H >= FL_WIDE_H ? FL_MIN_SAMPLES_WIDE : FL_MIN_SAMPLES);
    int64_t nt = n_threads < most ? n_threads : most;
    return nt > 1 ? (int)nt : 1;
}

/* Run one time loop (part = fl_forward_part or fl_backward_part) on the threads
 * worth using, each with its own copy of W_hh packed (and of W_ih, forward),
 * all in one allocation of the exact size (fl_loop_thread_floats each):
 * 0, or -1 if memory is missing. */
static int fl_run_loop(fl_loop *L, int n_threads, fl_team_fn part)
{
    if (fl_max_vectors(L->H) > FL_MAX_VEC) return -1;   /* H beyond the descriptor arrays */
    int nt = fl_useful_threads(L->N, L->H, n_threads), forward = L->bias != NULL;
    int64_t each = fl_loop_thread_floats(L->D, L->H, forward);
    float *packed = fl_alloc_floats(nt * each);
    fl_slice *slices = calloc((size_t)(forward ? 2 * nt : nt), sizeof(fl_slice));
    if (!packed || !slices) {
        free(packed);
        free(slices);
        return -1;
    }
    for (int p = 0; p < nt; p++) {
        slices[p].packed = packed + p * each;
        if (forward)   /* W_ih after W_hh */
            slices[nt + p].packed = slices[p].packed + fl_panel_floats(fl_vectors(4 * L->H), L->H);
    }
    L->slices = slices;
    L->slices_ih = forward ? slices + nt : NULL;
    fl_team_run(nt, part, L);
    free(slices);
    free(packed);
    return 0;
}

#endif /* FL_HAVE_AVX512_CODE */

/*
 * Forward of one layer over a batch, input projection included:
 *   x (T, N, D) (NULL if D = 0), x[t, n, :] at x + t * x_step + n * x_row: any
 *   such layout where Tg = 1 (a prediction's batch-major input needs no copy),
 *   contiguous (x_step = N * D, x_row = D) where Tg = T
 *   w_ih (4H, D); w_hh (4H, H); b_ih, b_hh (4H)
 *   gates (Tg, N, 4H) out: activations; tanh_c (Tg, N, H) out: every step's
 *   (Tg = T), or scratch for one step, contents unspecified after (Tg = 1 < T:
 *   a prediction)
 *   c, h (T, N, H) out; h0 (N, H) or NULL for zeros; c0 (N, H)
 * Returns 0, or -1 (nothing computed) if AVX-512 or memory is missing.
 */
static int fl_recurrent_forward_f32(int64_t T, int64_t Tg, int64_t N, int64_t D, int64_t H,
                                    const float *x, int64_t x_step, int64_t x_row,
                                    const float *w_ih, const float *w_hh,
                                    const float *b_ih, const float *b_hh, const float *h0,
                                    const float *c0, float *gates, float *c, float *tanh_c,
                                    float *h, int n_threads)
{
#if FL_HAVE_AVX512_CODE
    if (!fl_recurrent_available()) return -1;
    float *bias = fl_alloc_floats(4 * H);
    if (!bias) return -1;
    for (int64_t k = 0; k < 4 * H; k++)
        bias[k] = b_ih[k] + b_hh[k];
    fl_loop L = {.T = T, .N = N, .H = H, .D = D, .Tg = Tg, .x = x, .x_step = x_step,
                 .x_row = x_row, .w_ih = w_ih, .bias = bias,
                 .w_hh = w_hh, .h0 = h0, .c0 = c0, .tanh_c = tanh_c, .gates = gates, .c = c,
                 .h = h};
    int status = fl_run_loop(&L, n_threads, fl_forward_part);
    free(bias);
    return status;
#else
    (void)T; (void)Tg; (void)N; (void)D; (void)H; (void)x; (void)x_step; (void)x_row;
    (void)w_ih; (void)w_hh; (void)b_ih;
    (void)b_hh; (void)h0; (void)c0; (void)gates; (void)c; (void)tanh_c; (void)h;
    (void)n_threads;
    return -1;
#endif
}

/*
 * Backward time loop; the weight gradients are left to after(after_arg, p, nt,
 * t0, t1), which every thread of the team calls on each chunk of `chunk` steps
 * [t0, t1) once their dgates are complete (fl_gradient_steps; NULL: none).
 *   gates (T, N, 4H) activations; c, tanh_c (T, N, H); c0 (N, H)
 *   dh (T, N, H) in: gradient from above, accumulated into (clobbered)
 *   dc (N, H) in: dL/dc_T, out: dL/dc0;  dh0 (N, H) out, or NULL to skip
 *   dgates (dg_steps, N, 4H) out: step t at t % dg_steps (dg_steps = T: all of
 *   them; = chunk: scratch the chunks reuse)
 * Returns 0, or -1 (nothing computed) if AVX-512 or memory is missing.
 */
static int fl_recurrent_backward_f32(int64_t T, int64_t N, int64_t H, const float *w_hh,
                                     const float *c0, const float *gates, const float *c,
                                     const float *tanh_c, float *dh, float *dc, float *dh0,
                                     float *dgates, int64_t dg_steps, int64_t chunk,
                                     int n_threads, fl_steps_fn after, void *after_arg)
{
#if FL_HAVE_AVX512_CODE
    if (!fl_recurrent_available()) return -1;
    fl_loop L = {.T = T, .N = N, .H = H, .w_hh = w_hh, .c0 = c0, .gates_in = gates,
                 .c_in = c, .tanh_c = tanh_c, .dh = dh, .dc = dc, .dh0 = dh0, .dgates = dgates,
                 .dg_steps = dg_steps, .chunk = chunk, .after = after,
                 .after_arg = after_arg};
    return fl_run_loop(&L, n_threads, fl_backward_part);
#else
    (void)T; (void)N; (void)H; (void)w_hh; (void)c0; (void)gates; (void)c; (void)tanh_c;
    (void)dh; (void)dc; (void)dh0; (void)dgates; (void)dg_steps; (void)chunk; (void)n_threads;
    (void)after; (void)after_arg;
    return -1;
#endif
}

/* 0: fl_blocked_product_f32 declines every call (tests, A/B timing). */
static int fl_blocked_product_enabled = 1;

/*
 * C (M, cols) (+)= op(A) @ B, float32, through the register tiles (see
 * fl_blocked_product): a layer's weight gradients (a_down = 1: dW += dg.T @ x)
 * and input gradient (dx = dg @ W_ih); with row_sums (a_down only, else NULL),
 * the bias gradient too. Returns 0, or -1 (nothing computed) if AVX-512 or
 * memory is missing or cols is beyond the descriptor arrays (or is 0, with
 * row_sums: no tiles to sum them beside).
 */
static int fl_blocked_product_f32(int64_t K, int64_t M, int64_t cols, const float *A,
                                  int64_t lda, int a_down, const float *B, int64_t ldb,
                                  float *C, int64_t ldc, int accumulate, float *row_sums)
{
#if FL_HAVE_AVX512_CODE
    if (!fl_blocked_product_enabled || !fl_recurrent_available() || fl_vectors(cols) > FL_MAX_VEC
        || (a_down && !accumulate) || (row_sums && (!a_down || cols <= 0)))
        return -1;
    if (M <= 0 || cols <= 0) return 0;
    if (K <= 0) {
        if (!accumulate)
            for (int64_t m = 0; m < M; m++) memset(C + m * ldc, 0, (size_t)cols * sizeof(float));
        return 0;
    }
    fl_slice *s = malloc(sizeof(fl_slice));
    float *packed = fl_alloc_floats(fl_panel_floats(fl_vectors(cols), FL_BLOCK_ROWS));
    if (!s || !packed) {
        free(s);
        free(packed);
        return -1;
    }
    s->packed = packed;
    fl_blocked_product(K, M, cols, A, lda, a_down, B, ldb, C, ldc, accumulate, row_sums, s);
    free(packed);
    free(s);
    return 0;
#else
    (void)K; (void)M; (void)cols; (void)A; (void)lda; (void)a_down; (void)B; (void)ldb;
    (void)C; (void)ldc; (void)accumulate; (void)row_sums;
    return -1;
#endif
}

/*
 * A recurrent weight matrix packed once for all the steps of a BLAS loop (the
 * GRU's and the plain RNN's time loops, and the LSTM's over a padded batch),
 * whose products per step then run on the register tiles, where each sgemm
 * call packed W_hh again (OpenBLAS's copy routines took 26% of a GRU charlm
 * epoch, perf, both cores). transposed: w is (cols, K) and the products take
 * w.T, the forward's h[t-1] @ W_hh.T, with the rows outer (fl_rows_product);
 * else w is (K, cols), the backward's dh[t-1] += dgates[t] @ W_hh, with the
 * panels outer (fl_slice_product), each as the LSTM's packed loop runs them.
 */
typedef struct {
    fl_slice slice;
    int transposed;
} fl_step_matrix;

/* 0: fl_step_matrix_new_f32 declines every call (tests, A/B timing). */
static int fl_step_matrix_enabled = 1;

/* w packed (see fl_step_matrix), or NULL (nothing to free: the caller runs
 * BLAS) without AVX-512 or memory, or beyond the descriptor arrays. */
static fl_step_matrix *fl_step_matrix_new_f32(const float *w, int64_t K, int64_t cols,
                                              int transposed)
{
#if FL_HAVE_AVX512_CODE
    if (!fl_step_matrix_enabled || !fl_recurrent_available() || K <= 0 || cols <= 0
        || fl_vectors(cols) > FL_MAX_VEC)
        return NULL;
    fl_step_matrix *m = malloc(sizeof(fl_step_matrix));
    float *packed = fl_alloc_floats(fl_panel_floats(fl_vectors(cols), K));
    if (!m || !packed) {
        free(m);
        free(packed);
        return NULL;
    }
    m->slice.packed = packed;
    m->transposed = transposed;
    if (transposed)
        fl_pack_columns(&m->slice, w, K, cols);
    else
        fl_pack_rows(&m->slice, w, K, cols, cols);
    return m;
#else
    (void)w; (void)K; (void)cols; (void)transposed;
    return NULL;
#endif
}

static void fl_step_matrix_free(fl_step_matrix *m)
{
    if (m) free(m->slice.packed);
    free(m);
}

/* C (N, cols) (+)= A (N, K) @ the packed matrix (w.T or w); rows of A lda
 * apart, of C ldc. */
static void fl_step_product_f32(const fl_step_matrix *m, int64_t N, const float *A,
                                int64_t lda, float *C, int64_t ldc, int accumulate)
{
#if FL_HAVE_AVX512_CODE
    if (m->transposed)
        fl_rows_product(&m->slice, N, A, lda, NULL, NULL, 0, C, ldc, accumulate, NULL);
    else
        fl_slice_product(&m->slice, N, A, lda, C, ldc, accumulate, NULL);
#else
    (void)m; (void)N; (void)A; (void)lda; (void)C; (void)ldc; (void)accumulate;
#endif
}

/*
 * One sequence (N = 1), forward only: what a single-sequence predict, step,
 * forecast and generate run. Each step's product is then a matrix-vector
 * product streaming all of W_hh from cache, and two things pay that do not at
 * N > 1:
 *  - packing once per model, not once per call: the packed weights live in an
 *    fl_single the network keeps between calls. Every call compares the
 *    weights with those it packed and repacks the rows that changed (an
 *    optimizer step, a load, an edit in place), so stale weights are never used;
 *    the comparison reads W_hh once, the time loop T times. A loop of calls
 *    that writes no weights (forecast, generate: one step a call) compares on
 *    its first call only.
 *  - threads for wide layers: each core streams its share of W_hh from its
 *    own L2, where one core alone is bound by its L2 bandwidth. The layer's
 *    units are cut into slices (one per 64 units, at most one per CPU of the
 *    machine: fl_single_threads), each thread runs some of them, and waits on
 *    the others once per step.
 * Forward of one layer, us, 2-core Zen 4, BLAS loop / packed per call / packed
 * once, 1 thread / the same, 2 threads: T = 50, H = 128: 209 / 157 / 157 / 110;
 * T = 50, H = 300: 1256 / 905 / ~1000 / 544-780; T = 100, H = 512: 7283 / 5719
 * / 6056 / 3537-3655.
 * The input projection runs in the same team (each thread its gate rows of
 * x @ W_ih.T, a window of steps at a time: fl_slice_rows), so the path makes no
 * BLAS call: a BLAS worker left spinning after a threaded call would take the
 * core the team needs.
 *
 * The order of a step's sums: slice s sums h[t-1] @ W_hh.T over its own units'
 * k first (h[t-1] of those is its thread's own work, there without waiting),
 * then over the other k in increasing order. A thread does the first part of
 * all its slices, then waits for the other threads' h[t-1] (their step flags,
 * not a barrier), then the rest: the exchange between the cores overlaps work
 * instead of adding to every step (medium's single-sequence predict on two
 * threads, with a barrier per step after the whole sum: 122-124 us; this way:
 * 103-107 us). The order depends on the slices alone, which depend on H and the
 * machine, not on the threads a call runs on: the same bits on one thread or
 * on a team of any size. (Slices fixed by H alone, up to one per 64 units
 * whatever the machine, cost charlm's 2-thread single-sequence predict 4%:
 * two slices a thread, their ragged ends twice.)
 */

/* Units per slice, at least: a step of a narrow layer is short enough that the
 * exchange between cores decides, and on this shared machine its cost swings
 * from run to run: at H = 128 (T = 50) two threads took 100-135 us most of the
 * time but 230-290 in some runs, against 155-190 on one; H = 256: 590-620 vs
 * 680-820, and H = 50 lost outright (17 vs 9 us). So layers of 128 units or
 * more are cut into slices for several threads, and the caller picks per call
 * whether a team or the calling thread alone runs them, by the times it
 * measured (_kernels.pyx, PackedWeights). */
#define FL_SINGLE_MIN_UNITS 64

/* Where a slice's steps are computed: rows of its own, not the caller's gates,
 * c, tanh_c and h, whose rows every slice writes a part of. With the slices
 * of two threads writing alternate parts of the same rows, the loop took
 * 1.50-1.52 us a step, against 1.29 for one thread running one slice alone and
 * 1.34-1.36 with rows of their own (medium's layer, H = 128, C harness; the
 * same two threads with no exchange at all but the shared rows: 1.43). Each
 * core's prefetchers, we take it, fetch lines next to its own that the other
 * core is about to write. A slice's rows hold a window of steps, reused round
 * from window to window; each window's rows go to the caller's arrays once its
 * steps are done, gates and tanh_c only where the caller keeps them. Medium's
 * layer, best of 5000 calls: 88.1-89.2 us before, 85.8-86.7 with all four
 * copied out, 80.5-80.8 with c and h only (a prediction). Per slice of U units:
 *   bias (4U): b_ih + b_hh of its gate rows
 *   gates (window, 4U), c, tanh_c, h (window, U): step t in row t % window */
typedef struct {
    float *bias, *gates, *c, *tanh_c, *h;
} fl_slice_rows;

/* Steps in a window for slices of at most U units: gate rows of about 128 KB
 * a slice, a multiple of the projection's 12-row tiles, 12 to 96 steps. */
static int64_t fl_single_window(int64_t U)
{
    int64_t steps = 32768 / (4 * (U > 0 ? U : 1));
    steps = steps < 12 ? 12 : steps > 96 ? 96 : steps;
    return steps / 12 * 12;
}

typedef struct {
    int n_slices;
    int64_t H, D;
    int64_t window;             /* steps a slice's rows hold */
    fl_slice *hh, *ih;          /* n_slices each: gate rows of W_hh, of W_ih, their
                                   columns those of the slice's rows (fl_local_columns) */
    float *hh_seen, *ih_seen;   /* (4H, H), (4H, D): the weights the slices hold */
    float *rows_memory[FL_MAX_TEAM];
    fl_slice_rows rows[FL_MAX_TEAM];
    int valid[FL_MAX_TEAM];     /* slice s holds its rows of *_seen */
} fl_single;

/* Threads worth using for one sequence through a layer of H units: the slices
 * to cut it into for a machine of n_threads CPUs. */
static int fl_single_threads(int64_t H, int n_threads)
{
    int64_t nt = H / FL_SINGLE_MIN_UNITS;
    if (nt > n_threads) nt = n_threads;
    if (nt > FL_MAX_TEAM) nt = FL_MAX_TEAM;
    return nt > 1 ? (int)nt : 1;
}

static void fl_single_free(fl_single *S)
{
    if (!S) return;
    for (int p = 0; p < S->n_slices; p++) {
        if (S->hh) free(S->hh[p].packed);
        if (S->ih) free(S->ih[p].packed);
    }
    free(S->hh);
    free(S->ih);
    free(S->hh_seen);
    free(S->ih_seen);
    for (int p = 0; p < S->n_slices; p++) free(S->rows_memory[p]);
    free(S);
}

/* Space for a layer of H units and D inputs in n_slices slices (nothing packed
 * yet), or NULL if memory is missing or H is beyond the slice descriptors. */
static fl_single *fl_single_new(int n_slices, int64_t H, int64_t D)
{
    if (n_slices < 1 || n_slices > FL_MAX_TEAM || fl_max_vectors(H) > FL_MAX_VEC) return NULL;
    fl_single *S = calloc(1, sizeof *S);
    if (!S) return NULL;
    S->n_slices = n_slices;
    S->H = H;
    S->D = D;
    S->hh = calloc((size_t)S->n_slices, sizeof(fl_slice));
    S->ih = calloc((size_t)S->n_slices, sizeof(fl_slice));
    S->hh_seen = fl_alloc_floats(4 * H * H);
    S->ih_seen = fl_alloc_floats(4 * H * D);
    int ok = S->hh && S->ih && S->hh_seen && S->ih_seen;
    int64_t widest = 0;
    for (int p = 0; p < S->n_slices; p++) {
        int64_t j0, j1;
        fl_units(H, p, S->n_slices, &j0, &j1);
        if (j1 - j0 > widest) widest = j1 - j0;
    }
    S->window = fl_single_window(widest);
    for (int p = 0; ok && p < S->n_slices; p++) {
        int64_t j0, j1;
        fl_units(H, p, S->n_slices, &j0, &j1);
        int64_t n_vec = 4 * fl_vectors(j1 - j0), U = j1 - j0, W = S->window;
        S->hh[p].packed = fl_alloc_floats(fl_panel_floats(n_vec, H));
        S->ih[p].packed = fl_alloc_floats(fl_panel_floats(n_vec, D));
        /* each part on its own lines; 64 floats more at the end, so that no
         * other slice's rows follow on the next lines */
        int64_t at_bias = 0, at_gates = at_bias + (4 * U + 15) / 16 * 16,
                at_c = at_gates + (4 * U * W + 15) / 16 * 16,
                at_tanh_c = at_c + (U * W + 15) / 16 * 16,
                at_h = at_tanh_c + (U * W + 15) / 16 * 16, end = at_h + U * W + 64;
        float *m = S->rows_memory[p] = fl_alloc_floats(end);
        ok = S->hh[p].packed && S->ih[p].packed && m;
        if (ok)
            S->rows[p] = (fl_slice_rows){m + at_bias, m + at_gates, m + at_c, m + at_tanh_c,
                                         m + at_h};
    }
    if (!ok) {
        fl_single_free(S);
        return NULL;
    }
    return S;
}

/* 1 if the gate rows of units [j0, j1) of w (4H, K) differ from seen's. */
static int fl_rows_differ(const float *w, const float *seen, int64_t K, int64_t H,
                          int64_t j0, int64_t j1)
{
    for (int64_t q = 0; q < 4; q++) {
        int64_t at = (q * H + j0) * K;
        if (memcmp(w + at, seen + at, (size_t)((j1 - j0) * K) * sizeof(float)))
            return 1;
    }
    return 0;
}

static void fl_rows_copy(const float *w, float *seen, int64_t K, int64_t H,
                         int64_t j0, int64_t j1)
{
    for (int64_t q = 0; q < 4; q++) {
        int64_t at = (q * H + j0) * K;
        memcpy(seen + at, w + at, (size_t)((j1 - j0) * K) * sizeof(float));
    }
}

typedef struct {
    fl_single *S;
    int64_t T;
    const float *x, *w_ih, *w_hh, *b_ih, *b_hh, *h0, *c0;
    float *gates, *c, *tanh_c, *h;
    int compare;                      /* 0: packed slices taken as current (see below) */
    fl_step_flag done[FL_MAX_TEAM];   /* steps each thread of the team has finished */
} fl_single_loop;

#if FL_HAVE_AVX512_CODE

/* The columns of slice s's outputs that vector v writes, made those of its
 * own gate rows (fl_slice_rows: 4U wide, gate q's units at q * U) from those
 * of rows 4H wide. Vectors never straddle two gates: the units [j0, j1) of a
 * slice are whole blocks of 16 (fl_units), or all H of them (then the columns
 * stay as they are). */
static void fl_local_columns(fl_slice *s, int64_t H, int64_t j0, int64_t j1)
{
    for (int64_t v = 0; v < s->n_vec; v++) {
        int64_t q = s->col[v] / H, j = s->col[v] % H;
        s->col[v] = q * (j1 - j0) + (j - j0);
    }
}

/* Slice s of S, units [j0, j1) (fl_units; none empty): its rows repacked if the
 * weights changed since it packed them (or, with L->compare = 0, only if it
 * holds none yet), and its bias row b_ih + b_hh. */
FL_AVX512 static void fl_single_prepare(fl_single_loop *L, int s, int64_t j0, int64_t j1)
{
    fl_single *S = L->S;
    int64_t H = S->H, D = S->D;
    fl_slice *hh = &S->hh[s], *ih = &S->ih[s];
    if (!S->valid[s] || (L->compare && (fl_rows_differ(L->w_hh, S->hh_seen, H, H, j0, j1)
                                        || fl_rows_differ(L->w_ih, S->ih_seen, D, H, j0, j1)))) {
        fl_rows_copy(L->w_hh, S->hh_seen, H, H, j0, j1);
        fl_rows_copy(L->w_ih, S->ih_seen, D, H, j0, j1);
        fl_pack_forward(hh, S->hh_seen, H, H, j0, j1);
        fl_pack_forward(ih, S->ih_seen, D, H, j0, j1);
        fl_local_columns(hh, H, j0, j1);
        fl_local_columns(ih, H, j0, j1);
        S->valid[s] = 1;
    }
    int64_t U = j1 - j0;
    for (int64_t q = 0; q < 4; q++)
        for (int64_t j = j0; j < j1; j++)
            S->rows[s].bias[q * U + j - j0] = L->b_ih[q * H + j] + L->b_hh[q * H + j];
}

/* Slice s's gate rows (U units) of steps [t0, t0 + n) of one window: b_ih +
 * b_hh + x[t] @ W_ih[its rows].T. The sums start from the bias row (fl_tile's start)
 * rather than from a pass writing the bias into every step first: the same
 * bits, without writing the rows twice (medium's layer on two threads, C
 * harness, best of 3000 calls: 97 -> 91 us). */
FL_AVX512 static void fl_single_project(fl_single_loop *L, int s, int64_t U, int64_t t0,
                                        int64_t n)
{
    fl_single *S = L->S;
    int64_t D = S->D;
    const fl_slice_rows *r = &S->rows[s];
    if (D > 0) {
        fl_rows_product(&S->ih[s], n, L->x + t0 * D, D, NULL, NULL, 0, r->gates, 4 * U, 0,
                        r->bias);
        return;
    }
    for (int64_t t = 0; t < n; t++)
        memcpy(r->gates + t * 4 * U, r->bias, (size_t)(4 * U) * sizeof(float));
}

/* Slice s's rows (units [j0, j1)) of steps [t0, t0 + n) of one window into the
 * caller's arrays: gates and tanh_c unless NULL, c and h. */
static void fl_single_copy_out(fl_single_loop *L, int s, int64_t j0, int64_t j1, int64_t t0,
                               int64_t n)
{
    fl_single *S = L->S;
    int64_t H = S->H, W = S->window, U = j1 - j0;
    const fl_slice_rows *r = &S->rows[s];
    size_t row = (size_t)U * sizeof(float);
    for (int64_t t = t0; t < t0 + n; t++) {
        int64_t at = t % W;
        if (L->gates)
            for (int64_t q = 0; q < 4; q++)
                memcpy(L->gates + t * 4 * H + q * H + j0, r->gates + at * 4 * U + q * U, row);
        if (L->tanh_c) memcpy(L->tanh_c + t * H + j0, r->tanh_c + at * U, row);
        memcpy(L->c + t * H + j0, r->c + at * U, row);
        memcpy(L->h + t * H + j0, r->h + at * U, row);
    }
}

/* A thread whose slices hold half the L2 or more of W_hh (FL_ALTERNATE_MIN_BYTES
 * where the size is unknown) reads them in alternate directions step by step
 * (fl_row_product's backwards), so each step starts on the panels the last one
 * read last, still in cache. Read in one direction, panels a little larger than
 * the L2 are all evicted just before they are read again. A step's product,
 * one thread, us, one way vs alternating, with an L2 of 2 MB: 0.13 MB 0.88 vs
 * 0.90, 0.77 MB 5.3 vs 5.2, 1.18 MB 8.4 vs 8.4, 1.61 MB 18.2 vs 14.7, 2.1 MB
 * (H = 512 on two threads) 33 vs 25, 4.2 MB (H = 512 on one) 134 vs 89, 8.4 MB
 * 282 vs 279; large's single-sequence predict 4.4 -> 3.4 ms. Below the bound,
 * charlm's single-sequence predict (0.72 MB a thread) read 4% slower
 * alternating, hence the bound. */
#define FL_ALTERNATE_MIN_BYTES (1 << 20)

static int64_t fl_alternate_min_bytes(void)
{
    static int64_t bound = 0;   /* computed once; any thread may, all alike */
    int64_t b = __atomic_load_n(&bound, __ATOMIC_RELAXED);
    if (b == 0) {
        long l2 = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
        l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        b = l2 > 0 ? l2 / 2 : FL_ALTERNATE_MIN_BYTES;
        __atomic_store_n(&bound, b, __ATOMIC_RELAXED);
    }
    return b;
}

/* h[t-1] of the units [j0, j0 + U) of slice q: its row of step t - 1, or at t = 0
 * h0's (NULL: zeros, and no product). */
static const float *fl_single_h_prev(const fl_single_loop *L, int q, int64_t t, int64_t j0,
                                     int64_t U)
{
    if (t == 0) return L->h0 ? L->h0 + j0 : NULL;
    return L->S->rows[q].h + ((t - 1) % L->S->window) * U;
}

/* gates[t][slice s's rows] += h[t-1][slice q's units] @ W_hh[those rows, those units].T */
FL_AVX512 static void fl_single_product(fl_single_loop *L, int s, int q, int64_t t,
                                        const int64_t *j0, const int64_t *j1, int backwards)
{
    fl_single *S = L->S;
    float *g = S->rows[s].gates + (t % S->window) * 4 * (j1[s] - j0[s]);
    fl_row_product(&S->hh[s], fl_single_h_prev(L, q, t, j0[q], j1[q] - j0[q]), g, 1, j0[q],
                   j1[q], backwards);
}

/* Thread p of a team of nt (or the calling thread alone: p = 0, nt = 1) runs
 * slices [s0, s1) through every step, in the order of the sums described above:
 *     gates[t][its rows] += h[t-1][its units] @ W_hh[its rows, its units].T
 *     wait for the other threads' h[t-1]
 *     gates[t][its rows] += h[t-1][other units] @ W_hh[its rows, other units].T
 *     cell forward (its units); flag step t done
 * all in the slices' own rows (fl_slice_rows), a window of steps at a time: the
 * window's input projection first, its rows copied out after.
 * Alone, it sums each slice's parts one after the other (the same sums in the
 * same order: the slices' outputs are apart), so a slice's panels are read in
 * one run, and on alternate steps (fl_alternate_min_bytes) the slices are
 * taken last to first (large, one thread: 13.4-13.8 -> 9.4-10.3 ms). */
FL_AVX512 static void fl_single_slices_run(fl_single_loop *L, int p, int nt, int s0, int s1)
{
    fl_single *S = L->S;
    int n_slices = S->n_slices;
    int64_t H = S->H, W = S->window, j0[FL_MAX_TEAM], j1[FL_MAX_TEAM];
    int64_t bytes = 0;
    for (int s = 0; s < n_slices; s++)
        fl_units(H, s, n_slices, &j0[s], &j1[s]);
    for (int s = s0; s < s1; s++)
        if (j1[s] > j0[s]) {
            fl_single_prepare(L, s, j0[s], j1[s]);
            bytes += S->hh[s].n_vec * FL_LANES * H * (int64_t)sizeof(float);
        }
    int alternate = bytes >= fl_alternate_min_bytes();
    for (int64_t t0 = 0; t0 < L->T; t0 += W) {
        int64_t n = L->T - t0 < W ? L->T - t0 : W;
        for (int s = s0; s < s1; s++)
            if (j1[s] > j0[s]) fl_single_project(L, s, j1[s] - j0[s], t0, n);
        for (int64_t t = t0; t < t0 + n; t++) {
            int backwards = alternate && (t & 1);   /* slices and panels last to first */
            if (t > 0 || L->h0) {
                for (int i = 0; i < s1 - s0; i++) {
                    int s = backwards ? s1 - 1 - i : s0 + i;
                    if (j1[s] <= j0[s]) continue;
                    fl_single_product(L, s, s, t, j0, j1, backwards);
                    for (int q = 0; q < n_slices && nt == 1; q++)   /* nothing to wait for */
                        if (q != s && j1[q] > j0[q]) fl_single_product(L, s, q, t, j0, j1, backwards);
                }
                for (int q = 0; q < nt && t > 0; q++)
                    if (q != p) fl_step_wait(&L->done[q], (unsigned)t);
                for (int i = 0; i < s1 - s0 && nt > 1; i++) {
                    int s = backwards ? s1 - 1 - i : s0 + i;
                    if (j1[s] <= j0[s]) continue;
                    for (int q = 0; q < n_slices; q++)
                        if (q != s && j1[q] > j0[q]) fl_single_product(L, s, q, t, j0, j1, backwards);
                }
            }
            for (int s = s0; s < s1; s++) {
                int64_t U = j1[s] - j0[s];
                if (U <= 0) continue;
                const fl_slice_rows *r = &S->rows[s];
                const float *c_prev = t > 0 ? r->c + ((t - 1) % W) * U : L->c0 + j0[s];
                fl_lstm_cell_fwd_units_f32(1, U, 0, U, r->gates + (t % W) * 4 * U, c_prev,
                                           r->c + (t % W) * U, r->tanh_c + (t % W) * U,
                                           r->h + (t % W) * U);
            }
            if (nt > 1) fl_step_done(&L->done[p]);
        }
        for (int s = s0; s < s1; s++)
            if (j1[s] > j0[s]) fl_single_copy_out(L, s, j0[s], j1[s], t0, n);
    }
}

/* Thread p of the team: its share of the slices. */
FL_AVX512 static void fl_single_part(void *arg, int p, int nt)
{
    fl_single_loop *L = arg;
    int n = L->S->n_slices;
    fl_single_slices_run(L, p, nt, n * p / nt, n * (p + 1) / nt);
}

#endif /* FL_HAVE_AVX512_CODE */

/*
 * Forward of one layer over one sequence, with the weights packed in S (made by
 * fl_single_new for this H and D), on run_nt threads (at most S's slices) if
 * run_nt > 1 and the team is free, else on the calling thread: the same bits
 * either way. compare: 1 compares the packed rows with w_ih and w_hh and repacks
 * what changed; 0 takes them as current (the caller knows the weights are those
 * of its last call on S), which spares reading the weights and their copy: for
 * one step a call, more than the step (generate with a 2 x LSTM(300), a
 * character: 279-286 -> 93-98 us).
 *   x (T, D); w_ih (4H, D); w_hh (4H, H); b_ih, b_hh (4H)
 *   h0 (H) or NULL for zeros; c0 (H)
 *   gates (T, 4H) out: activations; c, tanh_c, h (T, H) out; gates and tanh_c
 *   may be NULL (not wanted: no backward follows)
 * Returns the threads it ran on, or -1 (nothing computed) if AVX-512 is missing.
 */
static int fl_single_forward_f32(fl_single *S, int run_nt, int64_t T, const float *x,
                                 const float *w_ih, const float *w_hh, const float *b_ih,
                                 const float *b_hh, const float *h0, const float *c0,
                                 float *gates, float *c, float *tanh_c, float *h, int compare)
{
#if FL_HAVE_AVX512_CODE
    if (!fl_recurrent_available()) return -1;
    fl_single_loop L = {S, T, x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, tanh_c, h, compare};
    if (run_nt > S->n_slices) run_nt = S->n_slices;
    if (run_nt > 1 && fl_team_run_exact(run_nt, fl_single_part, &L) == 0)
        return run_nt;
    fl_single_slices_run(&L, 0, 1, 0, S->n_slices);
    return 1;
#else
    (void)S; (void)run_nt; (void)T; (void)x; (void)w_ih; (void)w_hh; (void)b_ih; (void)b_hh;
    (void)h0; (void)c0; (void)gates; (void)c; (void)tanh_c; (void)h; (void)compare;
    return -1;
#endif
}

#pragma GCC diagnostic pop

#endif /* FASTLSTM_RECURRENT_H */
