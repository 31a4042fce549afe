// CResample: the resampler behind every resize of Framecast's photo versions.
//
// A separable Lanczos-3 filter for 8-bit interleaved pixels (1 to 4 bands), in 14-bit fixed
// point: each output row is first filtered vertically from the input rows under the filter
// (one row of 8-bit results), then horizontally into the output row. When shrinking, the
// filter is widened by the scale (antialiased, like libvips' reduce and Pillow's resample);
// when enlarging it interpolates. Pixel centres are at +0.5 (libvips' "centre" convention).
// An axis whose size does not change is copied, not filtered.
//
// libvips 8.14 runs the horizontal half of the same filter as a scalar loop; this one uses
// AVX2 or SSE4.1 (chosen at run time; a scalar loop of exactly the same integer arithmetic
// elsewhere, so all give the same bytes), which makes a 4 MP → hd resize several times
// faster. Pure functions of their arguments: safe to call from any number of threads.
#pragma once
#include <stddef.h>
#include <stdint.h>

/// What fc_resample_u8 and fc_resample_u8_rows return.
enum {
    FC_RESAMPLE_OK = 0,
    /// Sizes, bands (1...4), strides or pointers that make no image.
    FC_RESAMPLE_BAD_ARGUMENTS = -1,
    /// The working memory (rows and filter tables) could not be allocated.
    FC_RESAMPLE_NO_MEMORY = -2,
    /// The row reader failed (fc_resample_u8_rows only).
    FC_RESAMPLE_READ_FAILED = -3,
};

/// Resamples the `in_width`×`in_height` image at `in` (rows `in_stride` bytes apart, `bands`
/// interleaved 8-bit samples per pixel, 1...4) to `out_width`×`out_height` at `out` (rows
/// `out_stride` bytes apart). `use_simd` caps the instruction set: 0 the scalar loops, 1
/// SSE4.1, 2 AVX2 (each used only when the CPU has it; all give the same bytes). Returns
/// FC_RESAMPLE_OK or one of the errors above.
int fc_resample_u8(const uint8_t *in, size_t in_stride, int in_width, int in_height,
                   uint8_t *out, size_t out_stride, int out_width, int out_height,
                   int bands, int use_simd);

/// Copies input row `y` (`width` × bands bytes) into `dst`; 0, or non-zero to stop the
/// resample (which then returns FC_RESAMPLE_READ_FAILED). Rows are asked for in order, each
/// once.
typedef int (*fc_resample_row_reader)(void *context, int y, uint8_t *dst);

/// fc_resample_u8 of an image whose rows are read in order, each once, through `read` (for
/// an image that is decoded while it is resampled: only as many rows as the filter has taps
/// are held at once).
int fc_resample_u8_rows(fc_resample_row_reader read, void *context, int in_width, int in_height,
                        uint8_t *out, size_t out_stride, int out_width, int out_height,
                        int bands, int use_simd);

/// The best `use_simd` level this CPU runs: 2 (AVX2), 1 (SSE4.1) or 0.
int fc_resample_simd_level(void);
