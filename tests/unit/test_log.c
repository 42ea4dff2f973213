/*  The logger's two formats: JSON lines (keys, fields, bad bytes) and the
    text line as it always was. Each test points stderr at a file for the
    lines it logs and restores it. */
#include "ef_test.h"

#include "embedflow/log.h"

#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Logs what fn logs, with stderr on a temporary file, and returns the
   file's text (caller frees), NULL when it cannot. */
static char *
s_capture (void (*fn) (void), ef_log_format_t format)
{
    char path[] = "/tmp/ef-test-log-XXXXXX";
    int fd = mkstemp (path);
    if (fd < 0)
        return NULL;
    unlink (path);
    int saved = dup (STDERR_FILENO);
    dup2 (fd, STDERR_FILENO);
    ef_log_format_t was = ef_log_format ();
    ef_log_set_format (format);
    fn ();
    ef_log_set_format (was);
    dup2 (saved, STDERR_FILENO);
    close (saved);
    off_t len = lseek (fd, 0, SEEK_END);
    char *text = len >= 0 ? calloc (1, (size_t) len + 1) : NULL;
    if (text && pread (fd, text, (size_t) len, 0) != (ssize_t) len) {
        free (text);
        text = NULL;
    }
    close (fd);
    return text;
}

static void
s_log_fields (void)
{
    ef_log_set_name ("db-writer[3]");
    ef_info_kv (EF_KV (EF_KV_STR ("job_id", "01234567-89ab-7def-8123-4567"),
                       EF_KV_U64 ("rows_written", 1000),
                       EF_KV_I64 ("delta", -2), EF_KV_F64 ("seconds", 1.5),
                       EF_KV_STR ("message", "a field, not the message"),
                       EF_KV_STR ("peer", NULL)),
                "upload %s: %d rows", "x", 1000);
    ef_log_set_name (NULL);
    ef_warn ("plain \"quoted\"\ttab\nnewline");
}

EF_TEST (log_json_keys_and_fields)
{
    char *text = s_capture (s_log_fields, EF_LOG_FORMAT_JSON);
    EF_REQUIRE (text);
    char *second = strchr (text, '\n');
    EF_REQUIRE (second && second[1]);
    EF_CHECK (strchr (second + 1, '\n') == text + strlen (text) - 1);

    json_error_t jerr;
    json_t *a = json_loadb (text, (size_t) (second - text), 0, &jerr);
    EF_REQUIRE (a);
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "level")), "info")
              == 0);
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "actor")),
                      "db-writer[3]")
              == 0);
    EF_CHECK (json_integer_value (json_object_get (a, "instance")) == 3);
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "message")),
                      "upload x: 1000 rows")
              == 0);
    const char *when = json_string_value (json_object_get (a, "time"));
    EF_CHECK (when && strlen (when) == 24 && when[10] == 'T'
              && when[23] == 'Z');
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "job_id")),
                      "01234567-89ab-7def-8123-4567")
              == 0);
    EF_CHECK (json_integer_value (json_object_get (a, "rows_written")) == 1000);
    EF_CHECK (json_integer_value (json_object_get (a, "delta")) == -2);
    EF_CHECK (json_real_value (json_object_get (a, "seconds")) == 1.5);
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "field.message")),
                      "a field, not the message")
              == 0);
    EF_CHECK (json_is_null (json_object_get (a, "peer")));
    json_decref (a);

    json_t *b = json_loads (second + 1, 0, &jerr);
    EF_REQUIRE (b);
    EF_CHECK (strcmp (json_string_value (json_object_get (b, "level")), "warn")
              == 0);
    EF_CHECK (
        strcmp (json_string_value (json_object_get (b, "actor")), "embedflow")
        == 0);
    EF_CHECK (json_object_get (b, "instance") == NULL);
    EF_CHECK (strcmp (json_string_value (json_object_get (b, "message")),
                      "plain \"quoted\"\ttab\nnewline")
              == 0);
    json_decref (b);
    free (text);
}

static void
s_log_bad_bytes (void)
{
    /* a lone continuation byte, a cut 3-byte sequence, an overlong '/' */
    ef_error_kv (EF_KV (EF_KV_STR ("document_id", "doc-\xC0\xAF")),
                 "bad \x80 and \xE2\x82 end");
    /* longer than a line: cut inside a 2-byte character */
    char big[3000];
    for (size_t i = 0; i + 1 < sizeof big; i += 2)
        memcpy (big + i, "\xC3\xA9", 2); /* é */
    big[sizeof big - 1] = '\0';
    ef_info ("x%s", big);
}

EF_TEST (log_json_replaces_bad_utf8)
{
    char *text = s_capture (s_log_bad_bytes, EF_LOG_FORMAT_JSON);
    EF_REQUIRE (text);
    char *nl = strchr (text, '\n');
    EF_REQUIRE (nl);
    json_error_t jerr;
    json_t *a = json_loadb (text, (size_t) (nl - text), 0, &jerr);
    EF_REQUIRE (a);
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "message")),
                      "bad \xEF\xBF\xBD and \xEF\xBF\xBD\xEF\xBF\xBD end")
              == 0);
    EF_CHECK (strcmp (json_string_value (json_object_get (a, "document_id")),
                      "doc-\xEF\xBF\xBD\xEF\xBF\xBD")
              == 0);
    json_decref (a);
    json_t *b = json_loads (nl + 1, 0, &jerr);
    EF_REQUIRE (b); /* cut long line: still one valid JSON object */
    const char *m = json_string_value (json_object_get (b, "message"));
    EF_CHECK (m && m[0] == 'x' && strlen (m) > 2000);
    json_decref (b);
    free (text);
}

static void
s_log_text (void)
{
    ef_log_set_name ("splitter");
    ef_info_kv (EF_KV (EF_KV_U64 ("rows", 5)), "routed %d rows", 5);
    ef_log_set_name (NULL);
}

EF_TEST (log_text_unchanged)
{
    char *text = s_capture (s_log_text, EF_LOG_FORMAT_TEXT);
    EF_REQUIRE (text);
    regex_t rx;
    EF_REQUIRE (
        regcomp (&rx,
                 "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                 "[0-9]{2}\\.[0-9]{3}Z INFO  splitter: routed 5 rows\n$",
                 REG_EXTENDED)
        == 0);
    EF_CHECK (regexec (&rx, text, 0, NULL, 0) == 0);
    regfree (&rx);
    free (text);
}

EF_TEST (log_format_parse)
{
    ef_log_format_t f = EF_LOG_FORMAT_TEXT;
    EF_CHECK (ef_log_format_parse ("json", &f) == 0 && f == EF_LOG_FORMAT_JSON);
    EF_CHECK (ef_log_format_parse ("text", &f) == 0 && f == EF_LOG_FORMAT_TEXT);
    EF_CHECK (ef_log_format_parse ("JSON", &f) == -1);
    EF_CHECK (ef_log_format_parse ("", &f) == -1);
    EF_CHECK (ef_log_format_parse (NULL, &f) == -1);
}
