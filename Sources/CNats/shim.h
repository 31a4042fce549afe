// CNats: the C API of libnats, imported by its Swift wrapper only.
#include <nats/nats.h>
