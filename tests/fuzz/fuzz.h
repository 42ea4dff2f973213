/*  fuzz.h — what the fuzz targets share.

    Every target is a libFuzzer entry point, LLVMFuzzerTestOneInput, that
    feeds its bytes to the code embedflow runs on that kind of untrusted
    input. Built with -DEF_FUZZ=ON (clang) the targets link libFuzzer
    (scripts/fuzz.sh runs them); in every other build they link
    replay.c instead, and ctest replays the checked-in corpus through
    them (fuzz.NAME), under the sanitizers in scripts/test.sh --sanitize.

    A target reports a broken promise with EF_FUZZ_ASSERT, which aborts
    like a crash so that the fuzzer keeps the input.
*/
#ifndef EF_FUZZ_H
#define EF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define EF_FUZZ_ASSERT(cond)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf (stderr, "%s:%d: broken: %s\n", __FILE__, __LINE__,        \
                     #cond);                                                   \
            abort ();                                                          \
        }                                                                      \
    } while (0)

/* A path of this process under TMPDIR for a file named after what,
   holding data[0..size) when data is not NULL. The path is static and
   the same on every call with the same what. Aborts when it cannot
   write the file: that is the machine, not the input. */
const char *ef_fuzz_file (const char *what, const uint8_t *data, size_t size);

#endif
