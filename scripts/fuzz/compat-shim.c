/* Definitions for the three symbols Jazzer.js's prebuilt addon takes from glibc 2.38 and
 * libstdc++ 13 (see native-compat.cjs). Built and preloaded by scripts/fuzz.mjs on Linux when
 * the system's glibc is older than 2.38. */
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }
unsigned long __isoc23_strtoul(const char *s, char **end, int base) { return strtoul(s, end, base); }
/* libstdc++ 13's hook that makes iostreams initialise; libstdc++ 12 does it on its own. */
void _ZSt21ios_base_library_initv(void) {}
