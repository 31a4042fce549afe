#include "CVipsShim.h"

#include <string.h>

#include "CResample.h"

int fc_vips_init(const char *argv0) { return VIPS_INIT(argv0); }

VipsImage *fc_header_from_buffer(const void *buf, size_t len) {
    return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_SEQUENTIAL, NULL);
}

VipsImage *fc_image_from_buffer(const void *buf, size_t len) {
    return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_RANDOM,
                                      "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
}

int fc_thumbnail_buffer(void *buf, size_t len, VipsImage **out, int width, int height,
                        VipsSize size, int export_srgb) {
    if (export_srgb)
        return vips_thumbnail_buffer(buf, len, out, width, "height", height, "size", size,
                                     "no_rotate", FALSE, "option_string", "fail_on=truncated",
                                     "export_profile", "srgb", NULL);
    return vips_thumbnail_buffer(buf, len, out, width, "height", height, "size", size,
                                 "no_rotate", FALSE, "option_string", "fail_on=truncated",
                                 NULL);
}

int fc_thumbnail_buffer_crop(void *buf, size_t len, VipsImage **out, int width, int height, int crop,
                             int export_srgb) {
    VipsInteresting interesting = crop ? VIPS_INTERESTING_ATTENTION : VIPS_INTERESTING_NONE;
    if (export_srgb)
        return vips_thumbnail_buffer(buf, len, out, width, "height", height, "size", VIPS_SIZE_DOWN,
                                     "crop", interesting, "export_profile", "srgb",
                                     "option_string", "fail_on=truncated", NULL);
    return vips_thumbnail_buffer(buf, len, out, width, "height", height, "size", VIPS_SIZE_DOWN,
                                 "crop", interesting, "option_string", "fail_on=truncated", NULL);
}

int fc_colourspace_srgb(VipsImage *in, VipsImage **out) {
    return vips_colourspace(in, out, VIPS_INTERPRETATION_sRGB, NULL);
}

int fc_cast_uchar(VipsImage *in, VipsImage **out) {
    return vips_cast(in, out, VIPS_FORMAT_UCHAR, NULL);
}

int fc_flatten_white(VipsImage *in, VipsImage **out) {
    // flatten needs one background value per non-alpha band; 255 for each of up to 4.
    double white[4] = {255, 255, 255, 255};
    int bands = vips_image_get_bands(in) - 1;
    if (bands < 1) bands = 1;
    if (bands > 4) bands = 4;
    VipsArrayDouble *background = vips_array_double_new(white, bands);
    int status = vips_flatten(in, out, "background", background, NULL);
    vips_area_unref(VIPS_AREA(background));
    return status;
}

int fc_premultiply(VipsImage *in, VipsImage **out) { return vips_premultiply(in, out, NULL); }

int fc_unpremultiply(VipsImage *in, VipsImage **out) { return vips_unpremultiply(in, out, NULL); }

int fc_resize(VipsImage *in, VipsImage **out, double hscale, double vscale) {
    return vips_resize(in, out, hscale, "vscale", vscale, NULL);
}

int fc_smartcrop_attention(VipsImage *in, int width, int height, int *attention_x,
                           int *attention_y, int *left, int *top) {
    VipsImage *crop = NULL;
    int x = 0, y = 0;
    // The attention search runs while the operation is built; the crop is a lazy
    // vips_extract_area of `in`, never computed here.
    if (vips_smartcrop(in, &crop, width, height, "interesting", VIPS_INTERESTING_ATTENTION,
                       "attention_x", &x, "attention_y", &y, NULL)) {
        if (crop) g_object_unref(crop);
        return -1;
    }
    *attention_x = x;
    *attention_y = y;
    *left = -vips_image_get_xoffset(crop);
    *top = -vips_image_get_yoffset(crop);
    g_object_unref(crop);
    return 0;
}

int fc_extract_area(VipsImage *in, VipsImage **out, int left, int top, int width, int height) {
    return vips_extract_area(in, out, left, top, width, height, NULL);
}

int fc_rot(VipsImage *in, VipsImage **out, VipsAngle angle) { return vips_rot(in, out, angle, NULL); }

int fc_flip(VipsImage *in, VipsImage **out, VipsDirection direction) {
    return vips_flip(in, out, direction, NULL);
}

int fc_copy(VipsImage *in, VipsImage **out) { return vips_copy(in, out, NULL); }

int fc_jpegsave_buffer(VipsImage *in, void **buf, size_t *len, int quality, int strip,
                       int progressive, int optimize_coding, VipsForeignSubsample subsample) {
    return vips_jpegsave_buffer(in, buf, len, "Q", quality, "strip", strip ? TRUE : FALSE,
                                "optimize_coding", optimize_coding ? TRUE : FALSE,
                                "subsample_mode", subsample,
                                "interlace", progressive ? TRUE : FALSE, NULL);
}

int fc_webpsave_buffer(VipsImage *in, void **buf, size_t *len, int quality, int effort,
                       int strip) {
    return vips_webpsave_buffer(in, buf, len, "Q", quality, "effort", effort,
                                "strip", strip ? TRUE : FALSE, NULL);
}

int fc_pngsave_buffer(VipsImage *in, void **buf, size_t *len, int compression) {
    return vips_pngsave_buffer(in, buf, len, "compression", compression, NULL);
}

int fc_heifsave_buffer(VipsImage *in, void **buf, size_t *len, int quality, int av1) {
    return vips_heifsave_buffer(in, buf, len, "Q", quality, "compression",
                                av1 ? VIPS_FOREIGN_HEIF_COMPRESSION_AV1
                                    : VIPS_FOREIGN_HEIF_COMPRESSION_HEVC,
                                NULL);
}

int fc_tiffsave_buffer(VipsImage *in, void **buf, size_t *len) {
    return vips_tiffsave_buffer(in, buf, len, NULL);
}

int fc_gifsave_buffer(VipsImage *in, void **buf, size_t *len) {
    return vips_gifsave_buffer(in, buf, len, NULL);
}

int fc_has_icc_profile(VipsImage *image) {
    return vips_image_get_typeof(image, VIPS_META_ICC_NAME) != 0 ? 1 : 0;
}

const char *fc_heif_compression(VipsImage *image) {
    const char *value = NULL;
    if (vips_image_get_typeof(image, "heif-compression") == 0) return NULL;
    if (vips_image_get_string(image, "heif-compression", &value) != 0) return NULL;
    return value;
}

int fc_autorot(VipsImage *in, VipsImage **out) { return vips_autorot(in, out, NULL); }

VipsImage *fc_load_buffer(const void *buf, size_t len, int jpeg_shrink, double webp_scale,
                          int heif_thumbnail) {
    if (heif_thumbnail)
        return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_SEQUENTIAL,
                                          "fail_on", VIPS_FAIL_ON_TRUNCATED,
                                          "thumbnail", TRUE, NULL);
    if (jpeg_shrink > 1)
        return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_SEQUENTIAL,
                                          "fail_on", VIPS_FAIL_ON_TRUNCATED,
                                          "shrink", jpeg_shrink, NULL);
    if (webp_scale > 0 && webp_scale < 1)
        return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_SEQUENTIAL,
                                          "fail_on", VIPS_FAIL_ON_TRUNCATED,
                                          "scale", webp_scale, NULL);
    return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_SEQUENTIAL,
                                      "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
}

VipsImage *fc_heif_thumbnail_header(const void *buf, size_t len) {
    return vips_image_new_from_buffer(buf, len, "", "access", VIPS_ACCESS_SEQUENTIAL,
                                      "thumbnail", TRUE, NULL);
}

int fc_icc_to_srgb(VipsImage *in, VipsImage **out, int cmyk) {
    if (cmyk)
        return vips_icc_transform(in, out, "srgb", "embedded", TRUE, "input_profile", "cmyk", NULL);
    return vips_icc_transform(in, out, "srgb", "embedded", TRUE, NULL);
}

int fc_colourspace_cmyk(VipsImage *in, VipsImage **out) {
    return vips_colourspace(in, out, VIPS_INTERPRETATION_CMYK, NULL);
}

// MARK: resampling through CResample

/// Input rows of a lazily computed image, read through one region in strips of this many
/// rows, in order (a sequential decode is computed as it is resampled).
#define FC_RESAMPLE_STRIP 16

typedef struct {
    VipsRegion *region;
    VipsRect rect;
    int left, top, width, height;
    size_t line;
} FcRowReader;

static int fc_read_row(void *context, int y, uint8_t *dst) {
    FcRowReader *reader = context;
    int row = reader->top + y;
    if (reader->rect.height == 0 || row < reader->rect.top || row >= reader->rect.top + reader->rect.height) {
        int rows = reader->height - y < FC_RESAMPLE_STRIP ? reader->height - y : FC_RESAMPLE_STRIP;
        VipsRect rect = {reader->left, row, reader->width, rows};
        if (vips_region_prepare(reader->region, &rect)) return -1;
        reader->rect = rect;
    }
    memcpy(dst, VIPS_REGION_ADDR(reader->region, reader->left, row), reader->line);
    return 0;
}

/// The header fields vips_image_map reports before the metadata: set by init_fields, not copied.
static const char *const fc_header_fields[] = {"width", "height", "bands", "format", "coding", "interpretation",
                                              "xoffset", "yoffset", "xres", "yres", "filename"};

static void *fc_copy_metadata(VipsImage *image, const char *name, GValue *value, void *target) {
    (void)image;
    for (size_t i = 0; i < sizeof fc_header_fields / sizeof fc_header_fields[0]; i++)
        if (!strcmp(name, fc_header_fields[i])) return NULL;
    // The output is in memory: it is no longer a sequential read.
    if (!strcmp(name, VIPS_META_SEQUENTIAL)) return NULL;
    vips_image_set(target, name, value);
    return NULL;
}

/// A new image in memory of out_width×out_height, `in`'s bands, interpretation, resolution and
/// metadata, with no link to `in` (so either may be freed first).
static VipsImage *fc_memory_like(VipsImage *in, int out_width, int out_height) {
    VipsImage *image = vips_image_new_memory();
    vips_image_init_fields(image, out_width, out_height, vips_image_get_bands(in), VIPS_FORMAT_UCHAR,
                           VIPS_CODING_NONE, vips_image_get_interpretation(in), vips_image_get_xres(in),
                           vips_image_get_yres(in));
    vips_image_map(in, fc_copy_metadata, image);
    if (vips_image_write_prepare(image)) {
        g_object_unref(image);
        return NULL;
    }
    return image;
}

/// The resample of a region of `in`: in place when its pixels are in memory, else read in
/// strips through a region. An FC_RESAMPLE_* status; vips_error is set for all but a failed
/// read, which leaves the reader's own message.
static int fc_resample_into(VipsImage *in, int left, int top, int width, int height, VipsImage *result) {
    int bands = vips_image_get_bands(in);
    uint8_t *pixels = VIPS_IMAGE_ADDR(result, 0, 0);
    size_t out_stride = VIPS_IMAGE_SIZEOF_LINE(result);
    int status;
    if ((in->dtype == VIPS_IMAGE_SETBUF || in->dtype == VIPS_IMAGE_SETBUF_FOREIGN) && in->data) {
        status = fc_resample_u8(VIPS_IMAGE_ADDR(in, left, top), VIPS_IMAGE_SIZEOF_LINE(in), width, height, pixels,
                                out_stride, result->Xsize, result->Ysize, bands, 2);
    } else {
        FcRowReader reader = {.region = vips_region_new(in), .left = left, .top = top, .width = width,
                              .height = height, .line = (size_t)width * (size_t)bands};
        if (!reader.region) return FC_RESAMPLE_READ_FAILED;
        status = fc_resample_u8_rows(fc_read_row, &reader, width, height, pixels, out_stride, result->Xsize,
                                     result->Ysize, bands, 2);
        g_object_unref(reader.region);
    }
    if (status == FC_RESAMPLE_NO_MEMORY) vips_error("fc_resample", "%s", "out of memory");
    if (status == FC_RESAMPLE_BAD_ARGUMENTS) vips_error("fc_resample", "%s", "invalid sizes");
    return status;
}

int fc_resample(VipsImage *in, VipsImage **out, int left, int top, int width, int height, int out_width,
                int out_height) {
    *out = NULL;
    int bands = vips_image_get_bands(in);
    if (vips_image_get_format(in) != VIPS_FORMAT_UCHAR || vips_image_get_coding(in) != VIPS_CODING_NONE ||
        bands < 1 || bands > 4) {
        vips_error("fc_resample", "%s", "needs 8-bit pixels of 1 to 4 bands");
        return FC_RESAMPLE_BAD_ARGUMENTS;
    }
    if (left < 0 || top < 0 || width < 1 || height < 1 || width > in->Xsize - left || height > in->Ysize - top ||
        out_width < 1 || out_height < 1) {
        vips_error("fc_resample", "%s", "region outside the image");
        return FC_RESAMPLE_BAD_ARGUMENTS;
    }
    VipsImage *result = fc_memory_like(in, out_width, out_height);
    if (!result) return FC_RESAMPLE_NO_MEMORY;
    // Shrinking by 16 or more: whole factors averaged first (vips_shrink, a box filter) down to
    // a residual of 8 to 16, so the Lanczos window (the rows held for a lazy input: 6 × the
    // factor) stays under ~100 rows for any size. Below that the filter alone is both sharper
    // and faster (a shrink through a region costs more than the wider window).
    double hfactor = (double)width / out_width, vfactor = (double)height / out_height;
    int hshrink = hfactor >= 16 ? (int)(hfactor / 8) : 1, vshrink = vfactor >= 16 ? (int)(vfactor / 8) : 1;
    int status;
    if (hshrink > 1 || vshrink > 1) {
        VipsImage *cut = NULL, *shrunk = NULL;
        if (hshrink < 1) hshrink = 1;
        if (vshrink < 1) vshrink = 1;
        if (vips_extract_area(in, &cut, left, top, width, height, NULL) ||
            vips_shrink(cut, &shrunk, hshrink, vshrink, NULL))
            status = FC_RESAMPLE_BAD_ARGUMENTS;  // libvips said why
        else
            status = fc_resample_into(shrunk, 0, 0, shrunk->Xsize, shrunk->Ysize, result);
        if (shrunk) g_object_unref(shrunk);
        if (cut) g_object_unref(cut);
    } else {
        status = fc_resample_into(in, left, top, width, height, result);
    }
    if (status != FC_RESAMPLE_OK) {
        g_object_unref(result);
        return status;
    }
    *out = result;
    return FC_RESAMPLE_OK;
}
