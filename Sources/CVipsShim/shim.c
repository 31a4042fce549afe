#include "CVipsShim.h"

int fc_vips_init(const char *argv0) { return VIPS_INIT(argv0); }
