// CProtobufC: the C API of libprotobuf-c, imported by its Swift wrapper only.
#include <protobuf-c/protobuf-c.h>
