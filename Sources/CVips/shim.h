// CVips: the C API of libvips, imported by its Swift wrapper only.
#include <vips/vips.h>
