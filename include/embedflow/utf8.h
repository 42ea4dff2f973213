/*  utf8.h — the one UTF-8 validator.

    Log lines, metric labels, config files and rows all decide what is
    UTF-8 text by the same rule: no overlong forms, no surrogates, no
    code points past U+10FFFF, no sequence cut short.
*/
#ifndef EF_UTF8_H
#define EF_UTF8_H

#include <stddef.h>

#include "embedflow/export.h"

EF_API_BEGIN

/* Length (1..4) of the valid UTF-8 sequence at p, which has n > 0 bytes
   left; 0 when the bytes there are not one (a stray continuation byte,
   an overlong form, a surrogate, a code point past U+10FFFF, or a
   sequence cut short by n). An ASCII byte, NUL included, is 1. */
size_t ef_utf8_seq (const unsigned char *p, size_t n);

EF_API_END

#endif
