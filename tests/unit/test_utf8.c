/*  The one UTF-8 rule, and the text checks built on it. */
#include "ef_test.h"

#include "embedflow/utf8.h"
#include "rows/validate.h"

#include <string.h>

static size_t
s_seq (const char *s, size_t n)
{
    return ef_utf8_seq ((const unsigned char *) s, n);
}

EF_TEST (utf8_sequences)
{
    EF_CHECK (s_seq ("a", 1) == 1);
    EF_CHECK (s_seq ("\0", 1) == 1);
    EF_CHECK (s_seq ("\xC3\xA9", 2) == 2);         /* é */
    EF_CHECK (s_seq ("\xE2\x82\xAC", 3) == 3);     /* € */
    EF_CHECK (s_seq ("\xF0\x9F\x98\x80", 4) == 4); /* U+1F600 */
    EF_CHECK (s_seq ("\xF4\x8F\xBF\xBF", 4) == 4); /* U+10FFFF */
    /* cut short, whether by n or by a byte that does not continue */
    EF_CHECK (s_seq ("\xC3\xA9", 1) == 0);
    EF_CHECK (s_seq ("\xE2\x82", 2) == 0);
    EF_CHECK (s_seq ("\xE2\x82x", 3) == 0);
    /* a stray continuation byte, bytes that never start a sequence */
    EF_CHECK (s_seq ("\x80", 1) == 0);
    EF_CHECK (s_seq ("\xFF", 1) == 0);
    /* overlong forms */
    EF_CHECK (s_seq ("\xC0\xAF", 2) == 0);
    EF_CHECK (s_seq ("\xC1\xBF", 2) == 0);
    EF_CHECK (s_seq ("\xE0\x80\xAF", 3) == 0);
    EF_CHECK (s_seq ("\xF0\x80\x80\xAF", 4) == 0);
    /* surrogates, past U+10FFFF */
    EF_CHECK (s_seq ("\xED\xA0\x80", 3) == 0);
    EF_CHECK (s_seq ("\xED\xBF\xBF", 3) == 0);
    EF_CHECK (s_seq ("\xF4\x90\x80\x80", 4) == 0);
    EF_CHECK (s_seq ("\xF5\x80\x80\x80", 4) == 0);
}

EF_TEST (utf8_text_for_postgres)
{
    const char ok[] = "caf\xC3\xA9 \xE2\x82\xAC";
    EF_CHECK (ef_text_invalid_at (ok, strlen (ok)) == strlen (ok));
    EF_CHECK (ef_text_valid (ok, strlen (ok)));
    /* PostgreSQL text holds no NUL, though it is valid UTF-8 */
    EF_CHECK (ef_text_invalid_at ("ab\0cd", 5) == 2);
    EF_CHECK (ef_text_invalid_at ("ab\xED\xA0\x80", 5) == 2);
    EF_CHECK (ef_text_invalid_at ("abc\xC3", 4) == 3);
    EF_CHECK (!ef_text_valid ("\xC0\xAF", 2));
}
