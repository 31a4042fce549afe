// CVipsShim: fixed-arity wrappers for the libvips calls Swift cannot make
// (variadic vips_* functions and the VIPS_INIT macro).
#pragma once
#include <vips/vips.h>

/// VIPS_INIT once per process; returns 0 on success.
int fc_vips_init(const char *argv0);
