/*
 * The fused LSTM cell loops: the four gate nonlinearities, the cell update and
 * their backward, one pass over (N, H) per time step.
 *
 * Why C and not Cython: these loops are where the transcendentals are, and they
 * only run fast when the compiler vectorises exp over contiguous rows. libm's
 * expf/tanhf are scalar calls without -ffast-math, and fast-math would also drop
 * the inf/NaN guarantees of the whole module. So exp is written here in plain
 * arithmetic (Cody-Waite range reduction + minimax polynomial + exponent bits),
 * which gcc vectorises at any -O2/-O3 without fast-math. Inputs are clamped
 * first, so sigmoid and tanh stay finite for |x| up to inf (NaN stays NaN).
 *
 * Portability: on x86-64 with gcc each loop is compiled three times
 * (target_clones: AVX-512, AVX2+FMA, baseline SSE2) and the loader picks the
 * best one for the running CPU, so the wheel never needs -march=native.
 *
 * Layout (row-major, one time step): gates (N, 4H) with the gate blocks of a
 * sample side by side in torch's order i | f | g | o; c, tanh_c, h (N, H).
 */
#ifndef FASTLSTM_GATES_H
#define FASTLSTM_GATES_H

#include <stdint.h>
#include <string.h>

#ifndef restrict
#define restrict __restrict
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTLSTM_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTLSTM_CLONES
#endif

/* ---- exp, sigmoid, tanh: float32 ---------------------------------------- */

/* The range reduction of the float32 exp, shared by fl_exp_f32 and the AVX-512
 * loops below (which give the same bits): x = k ln2 + r. */
#define FL_EXP_ROUND_F32 12582912.0f    /* 1.5 * 2^23: added and taken off, rounds */
#define FL_LOG2E_F32 1.44269504088896341f
#define FL_LN2_HI_F32 0.693359375f      /* ln2 split high/low */
#define FL_LN2_LO_F32 -2.12194440e-4f

/* exp(x) for x already clamped to [-80, 80]: result normal, never inf. */
static inline float fl_exp_f32(float x)
{
    const float round_magic = FL_EXP_ROUND_F32;
    float t = x * FL_LOG2E_F32 + round_magic;         /* k = round(x / ln2) */
    float k = t - round_magic;
    float r = x - k * FL_LN2_HI_F32;
    r = r - k * FL_LN2_LO_F32;                        /* |r| <= ln2 / 2 */
    /* exp(r) on |r| <= 0.35 by 1 + r + (minimax degree 5 in r): relative error
     * 1.0e-7, 1.6e-7 (1.3 ulp) once rounded in float (Taylor to degree 7 was
     * within 0.5 ulp; its two more steps in every exponential cost the AVX-512
     * cell about 8%) */
    float p = 0.008314745500683784f;
    p = p * r + 0.04189043864607811f;
    p = p * r + 0.16667090356349945f;
    p = p * r + 0.499992311000824f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t t_bits, magic_bits;
    memcpy(&t_bits, &t, 4);
    memcpy(&magic_bits, &round_magic, 4);
    int32_t scale_bits = (t_bits - magic_bits + 127) << 23; /* 2^k */
    float scale;
    memcpy(&scale, &scale_bits, 4);
    return p * scale;
}

static inline float fl_clamp80_f32(float x)
{
    x = x < -80.0f ? -80.0f : x;
    return x > 80.0f ? 80.0f : x;
}

static inline float fl_sigmoid_f32(float x)
{
    return 1.0f / (1.0f + fl_exp_f32(fl_clamp80_f32(-x)));
}

static inline float fl_tanh_f32(float x)
{
    /* tanh(x) = 1 - 2 / (exp(2x) + 1); exact 1.0 from |x| = 40 on */
    return 1.0f - 2.0f / (fl_exp_f32(fl_clamp80_f32(2.0f * x)) + 1.0f);
}

/* ---- exp, sigmoid, tanh: float64 ---------------------------------------- */

/* exp(x) for x already clamped to [-700, 700]. */
static inline double fl_exp_f64(double x)
{
    const double round_magic = 6755399441055744.0;   /* 1.5 * 2^52 */
    double t = x * 1.4426950408889634074 + round_magic;
    double k = t - round_magic;
    double r = x - k * 6.93145751953125e-1;
    r = r - k * 1.42860682030941723212e-6;
    /* Taylor to degree 13: error < 2e-17 on |r| <= 0.35 */
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t t_bits, magic_bits;
    memcpy(&t_bits, &t, 8);
    memcpy(&magic_bits, &round_magic, 8);
    int64_t scale_bits = (t_bits - magic_bits + 1023) << 52;
    double scale;
    memcpy(&scale, &scale_bits, 8);
    return p * scale;
}

static inline double fl_clamp700_f64(double x)
{
    x = x < -700.0 ? -700.0 : x;
    return x > 700.0 ? 700.0 : x;
}

static inline double fl_sigmoid_f64(double x)
{
    return 1.0 / (1.0 + fl_exp_f64(fl_clamp700_f64(-x)));
}

static inline double fl_tanh_f64(double x)
{
    return 1.0 - 2.0 / (fl_exp_f64(fl_clamp700_f64(2.0 * x)) + 1.0);
}

/* ---- elementwise over a buffer (used by tests and by the dense activations) */

#define FASTLSTM_MAP(NAME, T, FN)                                   \
    FASTLSTM_CLONES static void NAME(int64_t n, const T *x, T *out) \
    {                                                               \
        for (int64_t k = 0; k < n; k++) out[k] = FN(x[k]);          \
    }
FASTLSTM_MAP(fl_sigmoid_map_f32, float, fl_sigmoid_f32)
FASTLSTM_MAP(fl_tanh_map_f32, float, fl_tanh_f32)
FASTLSTM_MAP(fl_sigmoid_map_f64, double, fl_sigmoid_f64)
FASTLSTM_MAP(fl_tanh_map_f64, double, fl_tanh_f64)

/* ---- the LSTM cell, forward and backward side by side --------------------
 *
 * forward, for each sample n and unit j (pre-activations in, activations out):
 *   i, f, g, o = sig(a_i), sig(a_f), tanh(a_g), sig(a_o)
 *   c = f * c_prev + i * g;   tanh_c = tanh(c);   h = o * tanh_c
 *
 * backward, given dh (total gradient on h_t) and dc (gradient on c_t from step
 * t+1), writes dgates (gradients on the pre-activations) and replaces dc with
 * the gradient on c_{t-1}:
 *   dc_t  = dc + dh * o * (1 - tanh_c^2)       backprop through h = o * tanh(c)
 *   da_o  = dh * tanh_c * o * (1 - o)
 *   da_i  = dc_t * g * i * (1 - i)             backprop through c = f c' + i g
 *   da_g  = dc_t * i * (1 - g^2)
 *   da_f  = dc_t * c_prev * f * (1 - f)
 *   dc    = dc_t * f
 */
#define FASTLSTM_CELL(SUFFIX, T, SIGMOID, TANH)                                       \
    FASTLSTM_CLONES static void fl_lstm_cell_fwd_units_##SUFFIX(                      \
        int64_t N, int64_t H, int64_t j0, int64_t j1, /* units j0 <= j < j1 only */   \
        T *restrict gates,        /* (N, 4H) in: pre-activations, out: activations */ \
        const T *restrict c_prev, /* (N, H) */                                        \
        T *restrict c, T *restrict tanh_c, T *restrict h) /* (N, H) each */           \
    {                                                                                 \
        for (int64_t n = 0; n < N; n++) {                                             \
            T *gi = gates + n * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;      \
            const T *cp = c_prev + n * H;                                             \
            T *cn = c + n * H, *tc = tanh_c + n * H, *hn = h + n * H;                 \
            for (int64_t j = j0; j < j1; j++) {                                       \
                T i = SIGMOID(gi[j]), f = SIGMOID(gf[j]);                             \
                T g = TANH(gg[j]), o = SIGMOID(go[j]);                                \
                T cj = f * cp[j] + i * g;                                             \
                T tcj = TANH(cj);                                                     \
                gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;                           \
                cn[j] = cj; tc[j] = tcj; hn[j] = o * tcj;                             \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    FASTLSTM_CLONES static void fl_lstm_cell_bwd_units_##SUFFIX(                      \
        int64_t N, int64_t H, int64_t j0, int64_t j1, /* units j0 <= j < j1 only */   \
        const T *restrict gates,  /* (N, 4H) activations i, f, g, o */               \
        const T *restrict c_prev, const T *restrict tanh_c, /* (N, H) */              \
        const T *restrict dh,     /* (N, H) total gradient on h_t */                  \
        T *restrict dc,           /* (N, H) in: dc_t from step t+1, out: dc_{t-1} */  \
        T *restrict dgates)       /* (N, 4H) out */                                   \
    {                                                                                 \
        for (int64_t n = 0; n < N; n++) {                                             \
            const T *gi = gates + n * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H; \
            T *di = dgates + n * 4 * H, *df = di + H, *dg = df + H, *dout = dg + H;   \
            const T *cp = c_prev + n * H, *tc = tanh_c + n * H, *dhn = dh + n * H;    \
            T *dcn = dc + n * H;                                                      \
            for (int64_t j = j0; j < j1; j++) {                                       \
                T i = gi[j], f = gf[j], g = gg[j], o = go[j], tcj = tc[j];            \
                T dct = dcn[j] + dhn[j] * o * (1 - tcj * tcj);                        \
                dout[j] = dhn[j] * tcj * o * (1 - o);                                 \
                di[j] = dct * g * i * (1 - i);                                        \
                dg[j] = dct * i * (1 - g * g);                                        \
                df[j] = dct * cp[j] * f * (1 - f);                                    \
                dcn[j] = dct * f;                                                     \
            }                                                                         \
        }                                                                             \
    }
FASTLSTM_CELL(f32_portable, float, fl_sigmoid_f32, fl_tanh_f32)
FASTLSTM_CELL(f64, double, fl_sigmoid_f64, fl_tanh_f64)

/* ---- the float32 cell loops with AVX-512 --------------------------------
 *
 * The forward cell is where the five transcendentals of a unit are, and at
 * small sizes it took a third of a layer's forward (sine, N = 32, H = 50: 4.6
 * us a step of a 12 us step). Written with intrinsics it does, per 16 units,
 *  - one masked pass for the ragged end of a row (H = 50: 16 + 16 + 16 + 2),
 *    where the vectorised C loop finishes the last units one by one;
 *  - 2^k by vscalefps: the same exp as fl_exp_f32 (same reduction, same
 *    polynomial) in fewer instructions. k is rounded as there, by adding
 *    1.5 * 2^23 in one fma (gcc contracts fl_exp_f32's t to that fma on CPUs
 *    with one); vrndscaleps after a vmulps, one instruction more, made these
 *    cells 5% slower (C microbenchmark, N = 128, H = 128 and N = 15, H = 300).
 * vdivps stays: vrcp14ps with a Newton step was no faster here. The results
 * match the portable loop's AVX-512 build bit for bit (6.4M random gates up to
 * |x| = 50, with inf and NaN). */
/* Lanes on of a 16-lane vector whose first n lanes are real (all for n >= 16). */
static inline uint16_t fl_lane_mask(int64_t n)
{
    return n >= 16 ? 0xFFFF : (uint16_t)((1u << n) - 1);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define FL_GATES_AVX512 1
#include <immintrin.h>
#define FL_GATES_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* exp(k ln2 + r), |r| <= ln2 / 2, 16 lanes: fl_exp_f32's polynomial and scale. */
FL_GATES_INLINE __m512 fl_exp_reduced16(__m512 k, __m512 r)
{
    __m512 p = _mm512_set1_ps(0.008314745500683784f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04189043864607811f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16667090356349945f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.499992311000824f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

/* exp(x) for x in [-80, 80], 16 lanes: fl_exp_f32's steps. */
FL_GATES_INLINE __m512 fl_exp16(__m512 x)
{
    __m512 magic = _mm512_set1_ps(FL_EXP_ROUND_F32);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(FL_LOG2E_F32), magic);
    __m512 k = _mm512_sub_ps(t, magic);                  /* round(x / ln2) */
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(FL_LN2_HI_F32), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(FL_LN2_LO_F32), r);
    return fl_exp_reduced16(k, r);
}

/* exp(-x), the same bits as fl_exp16(-x) without the negation: the reduction's
 * constants take the sign (-k ln2_hi - x is one rounding of -x - k ln2_hi) */
FL_GATES_INLINE __m512 fl_exp_neg16(__m512 x)
{
    __m512 magic = _mm512_set1_ps(FL_EXP_ROUND_F32);
    __m512 t = _mm512_fnmadd_ps(x, _mm512_set1_ps(FL_LOG2E_F32), magic);
    __m512 k = _mm512_sub_ps(t, magic);                  /* round(-x / ln2) */
    __m512 r = _mm512_fnmsub_ps(k, _mm512_set1_ps(FL_LN2_HI_F32), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(FL_LN2_LO_F32), r);
    return fl_exp_reduced16(k, r);
}

/* clamp to [-limit, limit]; NaN stays NaN (vmaxps/vminps return their second
 * operand when either is NaN, so x goes second; vrangeps, one instruction for
 * both sides, returns the limit for a NaN) */
FL_GATES_INLINE __m512 fl_clamp16(__m512 x, float limit)
{
    return _mm512_min_ps(_mm512_set1_ps(limit), _mm512_max_ps(_mm512_set1_ps(-limit), x));
}

FL_GATES_INLINE __m512 fl_sigmoid16(__m512 x)
{
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = fl_exp_neg16(fl_clamp16(x, 80.0f));
    return _mm512_div_ps(one, _mm512_add_ps(one, e));
}

FL_GATES_INLINE __m512 fl_tanh16(__m512 x)
{
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = fl_exp16(fl_clamp16(_mm512_add_ps(x, x), 80.0f));
    return _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
}

__attribute__((target("avx512f"))) static void fl_lstm_cell_fwd_units_f32_avx512(
    int64_t N, int64_t H, int64_t j0, int64_t j1, float *restrict gates,
    const float *restrict c_prev, float *restrict c, float *restrict tanh_c, float *restrict h)
{
    /* Two passes over a row: the gates and c, then tanh(c) and h. In one pass
     * each vector's chain (the gates' exp and division, then c, then tanh(c)'s)
     * is about twice as long, and fewer vectors overlap in the core: 26-29 ns
     * a vector of 16 units against 22-25 so (N = 128, H = 128 to 512; the same
     * bits), both measured with the degree-7 exp fl_exp_f32 had before; this
     * loop with the present one: 19.3-20.7 ns. */
    for (int64_t n = 0; n < N; n++) {
        float *gi = gates + n * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;
        const float *cp = c_prev + n * H;
        float *cn = c + n * H, *tc = tanh_c + n * H, *hn = h + n * H;
        for (int64_t j = j0; j < j1; j += 16) {
            __mmask16 m = fl_lane_mask(j1 - j);
            __m512 i = fl_sigmoid16(_mm512_maskz_loadu_ps(m, gi + j));
            __m512 f = fl_sigmoid16(_mm512_maskz_loadu_ps(m, gf + j));
            __m512 g = fl_tanh16(_mm512_maskz_loadu_ps(m, gg + j));
            __m512 o = fl_sigmoid16(_mm512_maskz_loadu_ps(m, go + j));
            _mm512_mask_storeu_ps(gi + j, m, i);
            _mm512_mask_storeu_ps(gf + j, m, f);
            _mm512_mask_storeu_ps(gg + j, m, g);
            _mm512_mask_storeu_ps(go + j, m, o);
            _mm512_mask_storeu_ps(cn + j, m, _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, cp + j),
                                                             _mm512_mul_ps(i, g)));
        }
        for (int64_t j = j0; j < j1; j += 16) {
            __mmask16 m = fl_lane_mask(j1 - j);
            __m512 tcj = fl_tanh16(_mm512_maskz_loadu_ps(m, cn + j));
            _mm512_mask_storeu_ps(tc + j, m, tcj);
            _mm512_mask_storeu_ps(hn + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, go + j), tcj));
        }
    }
}

/* The backward of the cell above (see FASTLSTM_CELL), one masked pass for the
 * ragged end of a row as well. */
__attribute__((target("avx512f"))) static void fl_lstm_cell_bwd_units_f32_avx512(
    int64_t N, int64_t H, int64_t j0, int64_t j1, const float *restrict gates,
    const float *restrict c_prev, const float *restrict tanh_c, const float *restrict dh,
    float *restrict dc, float *restrict dgates)
{
    __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t n = 0; n < N; n++) {
        const float *gi = gates + n * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;
        float *di = dgates + n * 4 * H, *df = di + H, *dg = df + H, *dout = dg + H;
        const float *cp = c_prev + n * H, *tc = tanh_c + n * H, *dhn = dh + n * H;
        float *dcn = dc + n * H;
        for (int64_t j = j0; j < j1; j += 16) {
            __mmask16 m = fl_lane_mask(j1 - j);
            __m512 i = _mm512_maskz_loadu_ps(m, gi + j), f = _mm512_maskz_loadu_ps(m, gf + j);
            __m512 g = _mm512_maskz_loadu_ps(m, gg + j), o = _mm512_maskz_loadu_ps(m, go + j);
            __m512 tcj = _mm512_maskz_loadu_ps(m, tc + j), dhj = _mm512_maskz_loadu_ps(m, dhn + j);
            __m512 dho = _mm512_mul_ps(dhj, o);
            /* dct = dc + dh * o * (1 - tanh_c^2) */
            __m512 dct = _mm512_fmadd_ps(dho, _mm512_fnmadd_ps(tcj, tcj, one),
                                         _mm512_maskz_loadu_ps(m, dcn + j));
            _mm512_mask_storeu_ps(dout + j, m,
                                  _mm512_mul_ps(_mm512_mul_ps(dho, tcj), _mm512_sub_ps(one, o)));
            _mm512_mask_storeu_ps(di + j, m, _mm512_mul_ps(_mm512_mul_ps(dct, g),
                                  _mm512_mul_ps(i, _mm512_sub_ps(one, i))));
            _mm512_mask_storeu_ps(dg + j, m,
                                  _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(g, g, one)));
            _mm512_mask_storeu_ps(df + j, m,
                                  _mm512_mul_ps(_mm512_mul_ps(dct, _mm512_maskz_loadu_ps(m, cp + j)),
                                                _mm512_mul_ps(f, _mm512_sub_ps(one, f))));
            _mm512_mask_storeu_ps(dcn + j, m, _mm512_mul_ps(dct, f));
        }
    }
}

/* 1 + exp(-x) for x clamped to [-40, 40], 16 lanes: sigmoid(x) = 1 / that, and
 * tanh(x / 2) = (2 - that) / that. Two of them multiply to at most 5.5e34, in
 * range: the cell below divides once by such a product. */
FL_GATES_INLINE __m512 fl_one_plus_exp_neg16(__m512 x)
{
    return _mm512_add_ps(_mm512_set1_ps(1.0f), fl_exp_neg16(fl_clamp16(x, 40.0f)));
}

/* The forward cell where no backward follows (a prediction): c and h only, the
 * activations neither stored nor divided out one by one. With
 * S(x) = 1 + exp(-x), sigmoid(x) = 1 / S(x) and tanh(x) = (2 - S(2x)) / S(2x):
 *     c = c_prev / S(f) + (2 - S(2g)) / (S(i) S(2g))
 *     h = (2 - S(2c)) / (S(o) S(2c))
 * three divisions a unit, not five, and no stores of gates or tanh(c): 16.8-
 * 17.8 ns per 16 units against 19.3-21.0 for fl_lstm_cell_fwd_units_f32_avx512
 * (C microbenchmark, N = 128, H = 128 to 512), which is bound by its divisions
 * and by the execution ports the exp's instructions share with them.
 * The clamp at +-40, not 80, keeps each product in range. It moves
 * sigmoid(x) for x < -40 (below 4.3e-18) up to 4.3e-18, and nothing else:
 * sigmoid(40) and tanh(20) are 1 in float32. NaN still comes through.
 * gates (N, 4H) in, c_prev (N, H) in, c and h (N, H) out. */
__attribute__((target("avx512f"))) static void fl_lstm_cell_predict_units_f32_avx512(
    int64_t N, int64_t H, int64_t j0, int64_t j1, const float *restrict gates,
    const float *restrict c_prev, float *restrict c, float *restrict h)
{
    __m512 two = _mm512_set1_ps(2.0f);
    /* two passes, as in the full cell: c, then h (one pass: 21-22 ns) */
    for (int64_t n = 0; n < N; n++) {
        const float *gi = gates + n * 4 * H, *gf = gi + H, *gg = gf + H, *go = gg + H;
        const float *cp = c_prev + n * H;
        float *cn = c + n * H, *hn = h + n * H;
        for (int64_t j = j0; j < j1; j += 16) {
            __mmask16 m = fl_lane_mask(j1 - j);
            __m512 s_i = fl_one_plus_exp_neg16(_mm512_maskz_loadu_ps(m, gi + j));
            __m512 s_f = fl_one_plus_exp_neg16(_mm512_maskz_loadu_ps(m, gf + j));
            __m512 g = _mm512_maskz_loadu_ps(m, gg + j);
            __m512 s_2g = fl_one_plus_exp_neg16(_mm512_add_ps(g, g));
            __m512 ig = _mm512_div_ps(_mm512_sub_ps(two, s_2g), _mm512_mul_ps(s_i, s_2g));
            __m512 fc = _mm512_div_ps(_mm512_maskz_loadu_ps(m, cp + j), s_f);
            _mm512_mask_storeu_ps(cn + j, m, _mm512_add_ps(fc, ig));
        }
        for (int64_t j = j0; j < j1; j += 16) {
            __mmask16 m = fl_lane_mask(j1 - j);
            __m512 s_o = fl_one_plus_exp_neg16(_mm512_maskz_loadu_ps(m, go + j));
            __m512 cj = _mm512_maskz_loadu_ps(m, cn + j);
            __m512 s_2c = fl_one_plus_exp_neg16(_mm512_add_ps(cj, cj));
            _mm512_mask_storeu_ps(hn + j, m, _mm512_div_ps(_mm512_sub_ps(two, s_2c),
                                                           _mm512_mul_ps(s_o, s_2c)));
        }
    }
}
#else
#define FL_GATES_AVX512 0
#endif

/* 0 runs the portable loop on AVX-512 CPUs too (tests cover it that way). */
static int fl_cell_avx512_enabled = 1;

/* The float32 cell forward: the AVX-512 loop where the CPU has it. */
static void fl_lstm_cell_fwd_units_f32(int64_t N, int64_t H, int64_t j0, int64_t j1,
                                       float *gates, const float *c_prev, float *c,
                                       float *tanh_c, float *h)
{
#if FL_GATES_AVX512
    if (fl_cell_avx512_enabled && __builtin_cpu_supports("avx512f")) {
        fl_lstm_cell_fwd_units_f32_avx512(N, H, j0, j1, gates, c_prev, c, tanh_c, h);
        return;
    }
#endif
    fl_lstm_cell_fwd_units_f32_portable(N, H, j0, j1, gates, c_prev, c, tanh_c, h);
}

/* The float32 cell forward where no backward follows: c and h out; gates (in:
 * preactivations) and tanh_c are scratch, their contents unspecified after it
 * (the AVX-512 loop leaves them as they were, the portable one fills them). */
static void fl_lstm_cell_predict_units_f32(int64_t N, int64_t H, int64_t j0, int64_t j1,
                                           float *gates, const float *c_prev, float *c,
                                           float *tanh_c, float *h)
{
#if FL_GATES_AVX512
    if (fl_cell_avx512_enabled && __builtin_cpu_supports("avx512f")) {
        fl_lstm_cell_predict_units_f32_avx512(N, H, j0, j1, gates, c_prev, c, h);
        return;
    }
#endif
    fl_lstm_cell_fwd_units_f32_portable(N, H, j0, j1, gates, c_prev, c, tanh_c, h);
}

static void fl_lstm_cell_bwd_units_f32(int64_t N, int64_t H, int64_t j0, int64_t j1,
                                       const float *gates, const float *c_prev,
                                       const float *tanh_c, const float *dh, float *dc,
                                       float *dgates)
{
#if FL_GATES_AVX512
    if (fl_cell_avx512_enabled && __builtin_cpu_supports("avx512f")) {
        fl_lstm_cell_bwd_units_f32_avx512(N, H, j0, j1, gates, c_prev, tanh_c, dh, dc, dgates);
        return;
    }
#endif
    fl_lstm_cell_bwd_units_f32_portable(N, H, j0, j1, gates, c_prev, tanh_c, dh, dc, dgates);
}

/* ---- the cell over all units of a step ---------------------------------- */
#define FASTLSTM_CELL_ALL_UNITS(SUFFIX, T)                                            \
    static void fl_lstm_cell_fwd_##SUFFIX(int64_t N, int64_t H, T *gates,             \
                                          const T *c_prev, T *c, T *tanh_c, T *h)     \
    {                                                                                 \
        fl_lstm_cell_fwd_units_##SUFFIX(N, H, 0, H, gates, c_prev, c, tanh_c, h);     \
    }                                                                                 \
    static void fl_lstm_cell_bwd_##SUFFIX(int64_t N, int64_t H, const T *gates,       \
                                          const T *c_prev, const T *tanh_c,           \
                                          const T *dh, T *dc, T *dgates)              \
    {                                                                                 \
        fl_lstm_cell_bwd_units_##SUFFIX(N, H, 0, H, gates, c_prev, tanh_c, dh, dc,    \
                                        dgates);                                      \
    }
FASTLSTM_CELL_ALL_UNITS(f32, float)
FASTLSTM_CELL_ALL_UNITS(f64, double)

#endif /* FASTLSTM_GATES_H */
