// CVipsShim: fixed-arity wrappers for the libvips calls Swift cannot make
// (variadic vips_* functions and the VIPS_INIT macro). Each wrapper fixes the optional
// arguments that Imaging needs; every function returns 0 on success and -1 on error
// (the message is then in vips_error_buffer()), unless its comment says otherwise.
// An `out` image belongs to the caller, who releases it with g_object_unref.
#pragma once
#include <vips/vips.h>

#include "CResample.h"

/// VIPS_INIT (a macro) once per process; returns 0 on success.
int fc_vips_init(const char *argv0);

/// vips_image_new_from_buffer(buf, len, "", "access", SEQUENTIAL, NULL): reads the header
/// only; pixels are decoded on first use. NULL on error. `buf` must outlive the image.
VipsImage *fc_header_from_buffer(const void *buf, size_t len);

/// vips_image_new_from_buffer(buf, len, "", "access", RANDOM, "fail_on", TRUNCATED, NULL):
/// the whole image for random access (used by convert). NULL on error.
VipsImage *fc_image_from_buffer(const void *buf, size_t len);

/// vips_thumbnail_buffer(buf, len, out, width, "height", height, "size", size,
/// "no_rotate", FALSE, "option_string", "fail_on=truncated" [, "export_profile", "srgb"]):
/// decode with shrink-on-load, auto-rotate by EXIF orientation (the tag is removed), and
/// when `export_srgb` is non-zero transform through the embedded ICC profile (or the
/// built-in CMYK profile) to sRGB. A truncated input is an error, not a gray image.
/// `size` is a VipsSize (DOWN never upscales; FORCE gives exactly width×height).
int fc_thumbnail_buffer(void *buf, size_t len, VipsImage **out, int width, int height,
                        VipsSize size, int export_srgb);

/// vips_thumbnail_buffer(buf, len, out, width, "height", height, "size", VIPS_SIZE_DOWN,
/// "crop", crop ? VIPS_INTERESTING_ATTENTION : VIPS_INTERESTING_NONE[, "export_profile",
/// "srgb" when `export_srgb`], NULL): one whole thumbnail pipeline (decode with shrink-on-load, auto-rotate,
/// resize, optional attention crop) per call — what the "one vips_thumbnail per version"
/// benchmark peer does for each version.
int fc_thumbnail_buffer_crop(void *buf, size_t len, VipsImage **out, int width, int height, int crop,
                             int export_srgb);

/// vips_colourspace(in, out, VIPS_INTERPRETATION_sRGB, NULL).
int fc_colourspace_srgb(VipsImage *in, VipsImage **out);

/// vips_cast(in, out, VIPS_FORMAT_UCHAR, NULL).
int fc_cast_uchar(VipsImage *in, VipsImage **out);

/// vips_flatten(in, out, "background", [255...], NULL): alpha composited on white.
int fc_flatten_white(VipsImage *in, VipsImage **out);

/// vips_premultiply(in, out, NULL) / vips_unpremultiply(in, out, NULL): around a resize
/// of an image with alpha, so transparent pixels do not bleed their colour.
int fc_premultiply(VipsImage *in, VipsImage **out);
int fc_unpremultiply(VipsImage *in, VipsImage **out);

/// vips_resize(in, out, hscale, "vscale", vscale, NULL) (lanczos3). The output is
/// rint(width × hscale) × rint(height × vscale).
int fc_resize(VipsImage *in, VipsImage **out, double hscale, double vscale);

/// vips_smartcrop(in, &crop, width, height, "interesting", VIPS_INTERESTING_ATTENTION,
/// "attention_x", attention_x, "attention_y", attention_y, NULL), for where the crop goes, not
/// for its pixels: `*attention_x`, `*attention_y` receive the centre of attention libvips found
/// in `in`, `*left`, `*top` the origin of the width×height crop it chose (read from the crop's
/// xoffset/yoffset, which vips_extract_area sets to -left, -top). The crop itself is dropped.
int fc_smartcrop_attention(VipsImage *in, int width, int height, int *attention_x,
                           int *attention_y, int *left, int *top);

/// vips_extract_area(in, out, left, top, width, height, NULL).
int fc_extract_area(VipsImage *in, VipsImage **out, int left, int top, int width, int height);

/// vips_rot(in, out, angle, NULL).
int fc_rot(VipsImage *in, VipsImage **out, VipsAngle angle);

/// vips_flip(in, out, direction, NULL).
int fc_flip(VipsImage *in, VipsImage **out, VipsDirection direction);

/// vips_copy(in, out, NULL): a new image header over the same pixels, so metadata can be
/// changed without touching `in`.
int fc_copy(VipsImage *in, VipsImage **out);

/// vips_jpegsave_buffer(in, buf, len, "Q", quality, "strip", strip, "optimize_coding",
/// optimize_coding, "subsample_mode", subsample, "interlace", progressive, NULL). `*buf` is
/// g_malloc'ed: g_free it.
int fc_jpegsave_buffer(VipsImage *in, void **buf, size_t *len, int quality, int strip,
                       int progressive, int optimize_coding, VipsForeignSubsample subsample);

/// vips_webpsave_buffer(in, buf, len, "Q", quality, "effort", effort, "strip", strip, NULL).
int fc_webpsave_buffer(VipsImage *in, void **buf, size_t *len, int quality, int effort,
                       int strip);

/// vips_pngsave_buffer(in, buf, len, "compression", compression, NULL).
int fc_pngsave_buffer(VipsImage *in, void **buf, size_t *len, int compression);

/// vips_heifsave_buffer(in, buf, len, "Q", quality, "compression", HEVC or AV1
/// (`av1` non-zero), NULL).
int fc_heifsave_buffer(VipsImage *in, void **buf, size_t *len, int quality, int av1);

/// vips_tiffsave_buffer(in, buf, len, NULL).
int fc_tiffsave_buffer(VipsImage *in, void **buf, size_t *len);

/// vips_gifsave_buffer(in, buf, len, NULL).
int fc_gifsave_buffer(VipsImage *in, void **buf, size_t *len);

/// 1 if the image carries an embedded ICC profile, else 0 (VIPS_META_ICC_NAME is a macro).
int fc_has_icc_profile(VipsImage *image);

/// The "heif-compression" metadata string ("hevc", "av1"…) or NULL; owned by the image.
const char *fc_heif_compression(VipsImage *image);

/// vips_autorot(in, out, NULL): turn upright by the EXIF orientation, removing the tag.
int fc_autorot(VipsImage *in, VipsImage **out);

/// vips_image_new_from_buffer(buf, len, "", "access", SEQUENTIAL, "fail_on", TRUNCATED
/// [, "shrink", jpeg_shrink] [, "scale", webp_scale] [, "thumbnail", TRUE], NULL): a lazy
/// decode for one pass, shrunk on load. At most one option applies: `jpeg_shrink` (1, 2, 4
/// or 8) is passed only when > 1 and only makes sense for JPEG; `webp_scale` only when in
/// (0, 1) and only for WebP; `heif_thumbnail` (non-zero: the embedded thumbnail instead of
/// the main image) only for HEIF/AVIF. NULL on error.
VipsImage *fc_load_buffer(const void *buf, size_t len, int jpeg_shrink, double webp_scale,
                          int heif_thumbnail);

/// vips_image_new_from_buffer(buf, len, "", "access", SEQUENTIAL, "thumbnail", TRUE, NULL):
/// the header of a HEIF/AVIF's embedded thumbnail (of the main image when it has none), to
/// decide whether the thumbnail is large enough. HEIF/AVIF buffers only. NULL on error.
VipsImage *fc_heif_thumbnail_header(const void *buf, size_t len);

/// vips_icc_transform(in, out, "srgb", "embedded", TRUE [, "input_profile", "cmyk"], NULL):
/// through the embedded ICC profile (else the built-in CMYK profile when `cmyk`) to sRGB.
int fc_icc_to_srgb(VipsImage *in, VipsImage **out, int cmyk);

/// vips_colourspace(in, out, VIPS_INTERPRETATION_CMYK, NULL) (through the built-in CMYK
/// profile): used to make CMYK test images.
int fc_colourspace_cmyk(VipsImage *in, VipsImage **out);

/// The width×height region at (left, top) of `in` resampled by CResample (Lanczos-3; see
/// CResample.h) to out_width×out_height, into a new image in memory with `in`'s
/// interpretation, resolution and metadata (no link to `in`). Shrinking by 16 or more first
/// averages whole factors with vips_shrink, so the filter's window stays small. `in` must be 8-bit, 1 to 4
/// bands, uncoded (alpha is filtered like any band, so premultiply first). An image in memory
/// is read in place; any other is computed strip by strip in row order while it is resampled,
/// never held whole (a sequential decode works). Returns FC_RESAMPLE_OK (0) or an
/// FC_RESAMPLE_* error: FC_RESAMPLE_READ_FAILED when computing `in` failed (a truncated
/// decode: its message is in the error buffer), the others with a message of their own.
int fc_resample(VipsImage *in, VipsImage **out, int left, int top, int width, int height, int out_width,
                int out_height);
