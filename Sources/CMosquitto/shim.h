// CMosquitto: the C API of libmosquitto, imported by its Swift wrapper only.
#include <mosquitto.h>
