// CLibPQ: the C API of libpq, imported by its Swift wrapper only.
#include <libpq-fe.h>
