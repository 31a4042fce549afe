// CMalloc: glibc's allocator settings (mallopt), imported by Threads only.
#include <malloc.h>
