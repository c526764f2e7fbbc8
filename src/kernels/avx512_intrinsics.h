// <immintrin.h> for the AVX-512 kernels, without GCC 12's false warnings: its AVX-512 intrinsics pass
// _mm512_undefined_*() as the unused merge source and then warn about it at every call site (GCC PR
// 105593, fixed in 12.3); the warning is about the header, not the kernels.
#pragma once
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
