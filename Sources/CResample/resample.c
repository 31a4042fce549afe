#include "CResample.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define FC_X86 1
#include <immintrin.h>
#endif

// Coefficients are fixed point with PRECISION fractional bits; each output's coefficients
// sum to exactly 1 << PRECISION. A Lanczos-3 weight is at most ~1.3 (|c| < 2^15, int16),
// so samples (0...255) times coefficients summed over any window stay far inside int32, and
// the scalar and SIMD loops compute the same sums.
#define PRECISION 14
#define ROUNDING (1 << (PRECISION - 1))
#define LANCZOS_LOBES 3.0

// Bytes after a horizontal pass's source row that may be read (and multiplied by zero):
// taps are padded to a multiple of 4 and the SIMD loops load 8 or 16 bytes at a time.
#define ROW_SLACK 64

// Output rows filtered horizontally together (one coefficient load for all of them).
#define BATCH 4

/// The filter of one axis: output i reads `taps` inputs from first[i] with coefs[i * taps…].
/// `taps` is a multiple of 4 (the last ones may have zero coefficients); an index past the
/// input is only ever multiplied by zero.
typedef struct {
    int taps;
    int *first;
    int16_t *coefs;
} Axis;

static double lanczos3(double x) {
    if (x < 0) x = -x;
    if (x < 1e-9) return 1.0;
    if (x >= LANCZOS_LOBES) return 0.0;
    double px = M_PI * x;
    return LANCZOS_LOBES * sin(px) * sin(px / LANCZOS_LOBES) / (px * px);
}

static void axis_free(Axis *axis) {
    free(axis->first);
    free(axis->coefs);
    axis->first = NULL;
    axis->coefs = NULL;
}

/// The filter mapping `in_size` samples to `out_size`. 0, or -1 when out of memory.
static int axis_make(Axis *axis, int in_size, int out_size) {
    double scale = (double)in_size / (double)out_size;
    double filterscale = scale > 1.0 ? scale : 1.0;
    double support = LANCZOS_LOBES * filterscale;
    int taps = (int)ceil(support) * 2 + 1;
    if (taps > in_size) taps = in_size;
    taps = (taps + 3) & ~3;
    axis->taps = taps;
    axis->first = malloc(sizeof(int) * (size_t)out_size);
    axis->coefs = calloc((size_t)out_size * (size_t)taps, sizeof(int16_t));
    double *weights = malloc(sizeof(double) * (size_t)taps);
    if (!axis->first || !axis->coefs || !weights) {
        free(weights);
        axis_free(axis);
        return -1;
    }
    for (int i = 0; i < out_size; i++) {
        double centre = ((double)i + 0.5) * scale;
        int lo = (int)floor(centre - support + 0.5);
        int hi = (int)floor(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        if (hi - lo > taps) hi = lo + taps;  // rounding at the edges only; weights there are ~0
        if (hi <= lo) {                       // cannot happen for sane sizes; keep one tap
            lo = (int)floor(centre);
            if (lo >= in_size) lo = in_size - 1;
            hi = lo + 1;
        }
        double sum = 0;
        int n = hi - lo;
        for (int k = 0; k < n; k++) {
            weights[k] = lanczos3(((double)(lo + k) - centre + 0.5) / filterscale);
            sum += weights[k];
        }
        // Place the window so that all `taps` reads stay inside the input when it can.
        int first = lo;
        if (first + taps > in_size) first = in_size - taps;
        if (first < 0) first = 0;
        axis->first[i] = first;
        int16_t *c = axis->coefs + (size_t)i * (size_t)taps;
        int total = 0, largest = lo - first;
        for (int k = 0; k < n; k++) {
            double w = sum != 0 ? weights[k] / sum : (k == 0 ? 1.0 : 0.0);
            long q = lrint(w * (double)(1 << PRECISION));
            if (q > INT16_MAX) q = INT16_MAX;
            if (q < INT16_MIN) q = INT16_MIN;
            c[lo - first + k] = (int16_t)q;
            total += (int)q;
            if (q > c[largest]) largest = lo - first + k;
        }
        // Flat areas stay exactly flat: the coefficients sum to one.
        c[largest] = (int16_t)(c[largest] + ((1 << PRECISION) - total));
    }
    free(weights);
    return 0;
}

static inline uint8_t clamp_u8(int32_t v) {
    v >>= PRECISION;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

// MARK: scalar

static void vertical_scalar(const uint8_t *const *rows, const int16_t *c, int taps, uint8_t *dst,
                            int from, int n) {
    for (int i = from; i < n; i++) {
        int32_t acc = ROUNDING;
        for (int k = 0; k < taps; k++) acc += (int32_t)c[k] * rows[k][i];
        dst[i] = clamp_u8(acc);
    }
}

static void horizontal_scalar(const uint8_t *src, uint8_t *dst, int out_width, int bands, const Axis *axis) {
    int taps = axis->taps;
    for (int x = 0; x < out_width; x++) {
        const uint8_t *p = src + (size_t)axis->first[x] * (size_t)bands;
        const int16_t *c = axis->coefs + (size_t)x * (size_t)taps;
        for (int b = 0; b < bands; b++) {
            int32_t acc = ROUNDING;
            for (int k = 0; k < taps; k++) acc += (int32_t)c[k] * p[k * bands + b];
            dst[x * bands + b] = clamp_u8(acc);
        }
    }
}

// MARK: SSE4.1

#ifdef FC_X86
__attribute__((target("sse4.1")))
static void vertical_sse41(const uint8_t *const *rows, const int16_t *c, int taps, uint8_t *dst, int n) {
    const __m128i rounding = _mm_set1_epi32(ROUNDING);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a0 = rounding, a1 = rounding, a2 = rounding, a3 = rounding;
        for (int k = 0; k < taps; k += 2) {
            // Two rows' bytes interleaved, widened to 16 bits: (row k, row k+1) pairs that
            // one multiply-add turns into c[k] * row k + c[k+1] * row k+1.
            __m128i coef = _mm_set1_epi32((int32_t)(((uint32_t)(uint16_t)c[k + 1] << 16) | (uint16_t)c[k]));
            __m128i r0 = _mm_loadu_si128((const __m128i *)(rows[k] + i));
            __m128i r1 = _mm_loadu_si128((const __m128i *)(rows[k + 1] + i));
            __m128i lo = _mm_unpacklo_epi8(r0, r1);
            __m128i hi = _mm_unpackhi_epi8(r0, r1);
            a0 = _mm_add_epi32(a0, _mm_madd_epi16(_mm_cvtepu8_epi16(lo), coef));
            a1 = _mm_add_epi32(a1, _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(lo, 8)), coef));
            a2 = _mm_add_epi32(a2, _mm_madd_epi16(_mm_cvtepu8_epi16(hi), coef));
            a3 = _mm_add_epi32(a3, _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(hi, 8)), coef));
        }
        a0 = _mm_srai_epi32(a0, PRECISION);
        a1 = _mm_srai_epi32(a1, PRECISION);
        a2 = _mm_srai_epi32(a2, PRECISION);
        a3 = _mm_srai_epi32(a3, PRECISION);
        __m128i packed = _mm_packus_epi16(_mm_packs_epi32(a0, a1), _mm_packs_epi32(a2, a3));
        _mm_storeu_si128((__m128i *)(dst + i), packed);
    }
    vertical_scalar(rows, c, taps, dst, i, n);
}

/// The horizontal pass over `count` (1...4) rows at once: each coefficient pair is loaded
/// once for all of them. `src` always has 4 rows (unused ones are read, not written).
__attribute__((target("sse4.1")))
static void horizontal_sse41(uint8_t *const *src, uint8_t *const *dst, int count, int out_width, int bands,
                             const Axis *axis) {
    // Two neighbouring pixels' samples (8 bytes loaded) spread into 16-bit pairs per band:
    // (p0.band0, p1.band0, p0.band1, p1.band1, ...), unused lanes zero.
    static const int8_t masks[4][16] = {
        {0, -1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
        {0, -1, 2, -1, 1, -1, 3, -1, -1, -1, -1, -1, -1, -1, -1, -1},
        {0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1},
        {0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1},
    };
    const __m128i mask = _mm_loadu_si128((const __m128i *)masks[bands - 1]);
    const __m128i rounding = _mm_set1_epi32(ROUNDING);
    int taps = axis->taps;
    for (int x = 0; x < out_width; x++) {
        size_t offset = (size_t)axis->first[x] * (size_t)bands;
        const int16_t *c = axis->coefs + (size_t)x * (size_t)taps;
        __m128i a0 = rounding, a1 = rounding, a2 = rounding, a3 = rounding;
        const uint8_t *p0 = src[0] + offset, *p1 = src[1] + offset, *p2 = src[2] + offset, *p3 = src[3] + offset;
        for (int k = 0; k < taps; k += 2) {
            int32_t pair;
            memcpy(&pair, c + k, sizeof pair);  // c[k] in the low half, c[k + 1] in the high
            __m128i coef = _mm_set1_epi32(pair);
            size_t at = (size_t)k * (size_t)bands;
            a0 = _mm_add_epi32(a0, _mm_madd_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(p0 + at)), mask), coef));
            a1 = _mm_add_epi32(a1, _mm_madd_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(p1 + at)), mask), coef));
            a2 = _mm_add_epi32(a2, _mm_madd_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(p2 + at)), mask), coef));
            a3 = _mm_add_epi32(a3, _mm_madd_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(p3 + at)), mask), coef));
        }
        __m128i packed = _mm_packus_epi16(_mm_packs_epi32(_mm_srai_epi32(a0, PRECISION), _mm_srai_epi32(a1, PRECISION)),
                                          _mm_packs_epi32(_mm_srai_epi32(a2, PRECISION), _mm_srai_epi32(a3, PRECISION)));
        // Byte 4j + b is row j's band b.
        uint32_t samples[4];
        _mm_storeu_si128((__m128i *)samples, packed);
        size_t out_at = (size_t)x * (size_t)bands;
        for (int j = 0; j < count; j++) memcpy(dst[j] + out_at, &samples[j], (size_t)bands);
    }
}

__attribute__((target("avx2")))
static void vertical_avx2(const uint8_t *const *rows, const int16_t *c, int taps, uint8_t *dst, int n) {
    const __m256i rounding = _mm256_set1_epi32(ROUNDING);
    const __m256i zero = _mm256_setzero_si256();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a0 = rounding, a1 = rounding, a2 = rounding, a3 = rounding;
        for (int k = 0; k < taps; k += 2) {
            int32_t pair;
            memcpy(&pair, c + k, sizeof pair);
            __m256i coef = _mm256_set1_epi32(pair);
            __m256i r0 = _mm256_loadu_si256((const __m256i *)(rows[k] + i));
            __m256i r1 = _mm256_loadu_si256((const __m256i *)(rows[k + 1] + i));
            // Within each 128-bit lane: (row k, row k+1) byte pairs, widened to 16 bits. The
            // packs below undo the lane order, so the output bytes come out in place.
            __m256i lo = _mm256_unpacklo_epi8(r0, r1);
            __m256i hi = _mm256_unpackhi_epi8(r0, r1);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi8(lo, zero), coef));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, zero), coef));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_unpacklo_epi8(hi, zero), coef));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_unpackhi_epi8(hi, zero), coef));
        }
        a0 = _mm256_srai_epi32(a0, PRECISION);
        a1 = _mm256_srai_epi32(a1, PRECISION);
        a2 = _mm256_srai_epi32(a2, PRECISION);
        a3 = _mm256_srai_epi32(a3, PRECISION);
        __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
        _mm256_storeu_si256((__m256i *)(dst + i), packed);
    }
    vertical_scalar(rows, c, taps, dst, i, n);
}

/// horizontal_sse41 with four taps per multiply-add: 16 bytes (four pixels) loaded into both
/// 128-bit lanes, pixels 0 and 1 spread in the low lane, 2 and 3 in the high one.
__attribute__((target("avx2")))
static void horizontal_avx2(uint8_t *const *src, uint8_t *const *dst, int count, int out_width, int bands,
                            const Axis *axis) {
    static const int8_t masks[4][32] = {
        {0, -1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
         2, -1, 3, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
        {0, -1, 2, -1, 1, -1, 3, -1, -1, -1, -1, -1, -1, -1, -1, -1,
         4, -1, 6, -1, 5, -1, 7, -1, -1, -1, -1, -1, -1, -1, -1, -1},
        {0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
         6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1},
        {0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1,
         8, -1, 12, -1, 9, -1, 13, -1, 10, -1, 14, -1, 11, -1, 15, -1},
    };
    const __m256i mask = _mm256_loadu_si256((const __m256i *)masks[bands - 1]);
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i rounding = _mm256_setr_epi32(ROUNDING, ROUNDING, ROUNDING, ROUNDING, 0, 0, 0, 0);
    int taps = axis->taps;
    for (int x = 0; x < out_width; x++) {
        size_t offset = (size_t)axis->first[x] * (size_t)bands;
        const int16_t *c = axis->coefs + (size_t)x * (size_t)taps;
        __m256i a0 = rounding, a1 = rounding, a2 = rounding, a3 = rounding;
        const uint8_t *p0 = src[0] + offset, *p1 = src[1] + offset, *p2 = src[2] + offset, *p3 = src[3] + offset;
        for (int k = 0; k < taps; k += 4) {
            // (c[k], c[k+1]) in every 32 bits of the low lane, (c[k+2], c[k+3]) in the high.
            __m256i coef = _mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(c + k))), spread);
            size_t at = (size_t)k * (size_t)bands;
#define FC_TAPS4(acc, p) \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_shuffle_epi8( \
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)((p) + at))), mask), coef))
            FC_TAPS4(a0, p0);
            FC_TAPS4(a1, p1);
            FC_TAPS4(a2, p2);
            FC_TAPS4(a3, p3);
#undef FC_TAPS4
        }
#define FC_FOLD(acc) _mm_srai_epi32(_mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1)), PRECISION)
        __m128i packed = _mm_packus_epi16(_mm_packs_epi32(FC_FOLD(a0), FC_FOLD(a1)), _mm_packs_epi32(FC_FOLD(a2), FC_FOLD(a3)));
#undef FC_FOLD
        uint32_t samples[4];
        _mm_storeu_si128((__m128i *)samples, packed);
        size_t out_at = (size_t)x * (size_t)bands;
        for (int j = 0; j < count; j++) memcpy(dst[j] + out_at, &samples[j], (size_t)bands);
    }
}

static int cpu_simd_level(void) {
    static int cached = -1;
    int value = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("avx2") ? 2 : __builtin_cpu_supports("sse4.1") ? 1 : 0;
        __atomic_store_n(&cached, value, __ATOMIC_RELAXED);
    }
    return value;
}
#endif

int fc_resample_simd_level(void) {
#ifdef FC_X86
    return cpu_simd_level();
#else
    return 0;
#endif
}

/// Where the vertical pass finds input rows: a buffer, or rows read in order into a ring of
/// as many rows as the filter has taps (each row read once).
typedef struct {
    const uint8_t *base;
    size_t stride;
    fc_resample_row_reader read;
    void *context;
    uint8_t *ring;
    size_t line;
    int ring_rows;
    int next;
} Source;

/// Input row `y`; rows are asked for in windows that only move forward (NULL on a read error).
static const uint8_t *source_row(Source *source, int y) {
    if (source->base) return source->base + (size_t)y * source->stride;
    if (y < source->next - source->ring_rows) return NULL;  // already dropped from the ring
    while (source->next <= y) {
        uint8_t *slot = source->ring + (size_t)(source->next % source->ring_rows) * source->line;
        if (source->read(source->context, source->next, slot)) return NULL;
        source->next += 1;
    }
    return source->ring + (size_t)(y % source->ring_rows) * source->line;
}

static int resample(Source *source, int in_width, int in_height, uint8_t *out, size_t out_stride,
                    int out_width, int out_height, int bands, int use_simd) {
    if (!out || bands < 1 || bands > 4 || in_width < 1 || in_height < 1 || out_width < 1 || out_height < 1 ||
        out_stride < (size_t)out_width * (size_t)bands || (size_t)in_width * (size_t)bands > INT_MAX)
        return FC_RESAMPLE_BAD_ARGUMENTS;
#ifdef FC_X86
    int level = fc_resample_simd_level();
    int simd = use_simd <= 0 ? 0 : use_simd < level ? use_simd : level;
#else
    (void)use_simd;
#endif
    int vertical = in_height != out_height, horizontal = in_width != out_width;
    Axis rows_axis = {0}, cols_axis = {0};
    size_t line = (size_t)in_width * (size_t)bands;
    // The vertical pass's results (or input rows): the horizontal pass's sources, BATCH rows
    // of one allocation, each followed by its slack.
    uint8_t *row = NULL, *rows[BATCH];
    const uint8_t **taps_rows = NULL;
    int status = FC_RESAMPLE_NO_MEMORY;
    if (vertical && axis_make(&rows_axis, in_height, out_height)) goto done;
    if (horizontal && axis_make(&cols_axis, in_width, out_width)) goto done;
    size_t row_size = line + ROW_SLACK + (size_t)cols_axis.taps * (size_t)bands;
    if (horizontal && !(row = calloc(row_size, BATCH))) goto done;
    for (int j = 0; j < BATCH; j++) rows[j] = row ? row + (size_t)j * row_size : NULL;
    if (vertical && !(taps_rows = malloc(sizeof(uint8_t *) * (size_t)rows_axis.taps))) goto done;
    if (!source->base) {
        source->line = line;
        source->ring_rows = vertical ? rows_axis.taps : 1;
        source->next = 0;
        if (!(source->ring = malloc(line * (size_t)source->ring_rows))) goto done;
    }

    for (int y0 = 0; y0 < out_height; y0 += BATCH) {
        int count = out_height - y0 < BATCH ? out_height - y0 : BATCH;
        uint8_t *targets[BATCH], *rows_in[BATCH];
        for (int j = 0; j < count; j++) {
            int y = y0 + j;
            targets[j] = out + (size_t)y * out_stride;
            uint8_t *vertical_out = horizontal ? rows[j] : targets[j];
            rows_in[j] = rows[j];
            if (vertical) {
                int first = rows_axis.first[y];
                for (int k = 0; k < rows_axis.taps; k++) {
                    int r = first + k < in_height ? first + k : in_height - 1;  // zero-weighted
                    if (!(taps_rows[k] = source_row(source, r))) {
                        status = FC_RESAMPLE_READ_FAILED;
                        goto done;
                    }
                }
                const int16_t *c = rows_axis.coefs + (size_t)y * (size_t)rows_axis.taps;
#ifdef FC_X86
                if (simd == 2) vertical_avx2(taps_rows, c, rows_axis.taps, vertical_out, (int)line);
                else if (simd == 1) vertical_sse41(taps_rows, c, rows_axis.taps, vertical_out, (int)line);
                else
#endif
                    vertical_scalar(taps_rows, c, rows_axis.taps, vertical_out, 0, (int)line);
            } else {
                const uint8_t *input = source_row(source, y);
                if (!input) {
                    status = FC_RESAMPLE_READ_FAILED;
                    goto done;
                }
                memcpy(vertical_out, input, line);
            }
        }
        if (horizontal) {
#ifdef FC_X86
            if (simd) {
                for (int j = count; j < BATCH; j++) rows_in[j] = rows[0];
                if (simd == 2) horizontal_avx2(rows_in, targets, count, out_width, bands, &cols_axis);
                else horizontal_sse41(rows_in, targets, count, out_width, bands, &cols_axis);
            } else
#endif
                for (int j = 0; j < count; j++) horizontal_scalar(rows[j], targets[j], out_width, bands, &cols_axis);
        }
    }
    status = FC_RESAMPLE_OK;
done:
    free(row);
    free(taps_rows);
    if (!source->base) {
        free(source->ring);
        source->ring = NULL;
    }
    axis_free(&rows_axis);
    axis_free(&cols_axis);
    return status;
}

int fc_resample_u8(const uint8_t *in, size_t in_stride, int in_width, int in_height,
                   uint8_t *out, size_t out_stride, int out_width, int out_height,
                   int bands, int use_simd) {
    if (!in || in_width < 1 || bands < 1 || in_stride < (size_t)in_width * (size_t)bands)
        return FC_RESAMPLE_BAD_ARGUMENTS;
    Source source = {.base = in, .stride = in_stride};
    return resample(&source, in_width, in_height, out, out_stride, out_width, out_height, bands, use_simd);
}

int fc_resample_u8_rows(fc_resample_row_reader read, void *context, int in_width, int in_height,
                        uint8_t *out, size_t out_stride, int out_width, int out_height,
                        int bands, int use_simd) {
    if (!read) return FC_RESAMPLE_BAD_ARGUMENTS;
    Source source = {.read = read, .context = context};
    return resample(&source, in_width, in_height, out, out_stride, out_width, out_height, bands, use_simd);
}
