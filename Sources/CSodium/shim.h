// CSodium: libsodium (password hashing, SHA-256, random bytes), imported by the gateway only.
#include <sodium.h>
