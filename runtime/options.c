/*  options.c — the one loader for declarative option tables. */
#include "embedflow/options.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Compares keys treating '-' and '_' as the same character. */
static bool
s_key_eq (const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char ca = *a == '-' ? '_' : *a;
        char cb = *b == '-' ? '_' : *b;
        if (ca != cb)
            return false;
    }
    return *a == *b;
}

const ef_option_t *
ef_options_find (const ef_option_t *table, const char *key)
{
    for (const ef_option_t *o = table; o && o->key; o++)
        if (s_key_eq (o->key, key))
            return o;
    return NULL;
}

/* Parses an integer with an optional unit suffix scaled by the table
   given. Returns 0 or -1 when the text is not such a number. */
static int
s_parse_scaled (const char *text, const char *const *units,
                const int64_t *scales, int64_t *out)
{
    errno = 0;
    char *end;
    long long v = strtoll (text, &end, 10);
    if (end == text || errno == ERANGE)
        return -1;
    while (isspace ((unsigned char) *end))
        end++;
    int64_t scale = 1;
    if (*end) {
        int i;
        for (i = 0; units[i]; i++)
            if (strcasecmp (end, units[i]) == 0)
                break;
        if (!units[i])
            return -1;
        scale = scales[i];
    }
    if (v != 0 && (v > INT64_MAX / scale || v < INT64_MIN / scale))
        return -1;
    *out = (int64_t) v * scale;
    return 0;
}

static const char *const s_size_units[] = {"b",   "k", "kb", "kib", "m", "mb",
                                           "mib", "g", "gb", "gib", NULL};
static const int64_t s_size_scales[] = {
    1, 1024, 1024, 1024, 1 << 20, 1 << 20, 1 << 20, 1 << 30, 1 << 30, 1 << 30};
static const char *const s_ms_units[] = {"ms", "s", "m", "h", NULL};
static const int64_t s_ms_scales[] = {1, 1000, 60000, 3600000};
static const char *const s_no_units[] = {NULL};

static int
s_parse_bool (const char *text, bool *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"};
    static const char *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp (text, yes[i]) == 0)
            return *out = true, 0;
        if (strcasecmp (text, no[i]) == 0)
            return *out = false, 0;
    }
    return -1;
}

/* Stores value into the field of row o in obj. */
static int
s_store (const ef_option_t *o, void *obj, const char *value, char *err,
         size_t errlen)
{
    char *field = (char *) obj + o->offset;
    switch (o->type) {
    case EF_OPT_INT:
    case EF_OPT_SIZE:
    case EF_OPT_MS: {
        int64_t v = 0;
        const char *const *units = o->type == EF_OPT_SIZE ? s_size_units
                                   : o->type == EF_OPT_MS ? s_ms_units
                                                          : s_no_units;
        const int64_t *scales = o->type == EF_OPT_SIZE ? s_size_scales
                                : o->type == EF_OPT_MS ? s_ms_scales
                                                       : NULL;
        if (value && s_parse_scaled (value, units, scales, &v) != 0) {
            snprintf (err, errlen, "'%s' is not %s", value,
                      o->type == EF_OPT_SIZE ? "a size (e.g. 4M, 512k)"
                      : o->type == EF_OPT_MS ? "a duration (e.g. 250ms, 5s)"
                                             : "an integer");
            return -1;
        }
        if ((o->min || o->max) && (v < o->min || v > o->max)) {
            snprintf (err, errlen,
                      "%" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
                      v, o->min, o->max);
            return -1;
        }
        memcpy (field, &v, sizeof v);
        return 0;
    }
    case EF_OPT_BOOL: {
        bool b = false;
        if (value && s_parse_bool (value, &b) != 0) {
            snprintf (err, errlen, "'%s' is not a boolean (true/false)", value);
            return -1;
        }
        memcpy (field, &b, sizeof b);
        return 0;
    }
    case EF_OPT_STRING:
    case EF_OPT_SECRET: {
        char *copy = NULL;
        if (value && !(copy = strdup (value))) {
            snprintf (err, errlen, "out of memory");
            return -1;
        }
        char *old;
        memcpy (&old, field, sizeof old);
        free (old);
        memcpy (field, &copy, sizeof copy);
        return 0;
    }
    }
    snprintf (err, errlen, "bad option type");
    return -1;
}

int
ef_options_defaults (const ef_option_t *table, void *obj, char *err,
                     size_t errlen)
{
    for (const ef_option_t *o = table; o && o->key; o++) {
        char why[256];
        if (s_store (o, obj, o->default_value, why, sizeof why) != 0) {
            snprintf (err, errlen, "default of %s: %s", o->key, why);
            return -1;
        }
    }
    return 0;
}

int
ef_options_set (const ef_option_t *table, void *obj, const char *key,
                const char *value, char *err, size_t errlen)
{
    const ef_option_t *o = ef_options_find (table, key);
    if (!o) {
        size_t used = (size_t) snprintf (err, errlen, "unknown key (known:");
        for (const ef_option_t *k = table; k && k->key && used < errlen; k++)
            used += (size_t) snprintf (err + used, errlen - used, "%s %s",
                                       k == table ? "" : ",", k->key);
        if (used < errlen)
            snprintf (err + used, errlen - used, ")");
        return -1;
    }
    if (!value) {
        snprintf (err, errlen, "a value is required");
        return -1;
    }
    return s_store (o, obj, value, err, errlen);
}

void
ef_options_free (const ef_option_t *table, void *obj)
{
    for (const ef_option_t *o = table; o && o->key; o++) {
        if (o->type == EF_OPT_STRING || o->type == EF_OPT_SECRET) {
            char **field = (char **) ((char *) obj + o->offset);
            free (*field);
            *field = NULL;
        }
    }
}

void
ef_options_print_help (const ef_option_t *table, const char *prefix,
                       void *stream)
{
    FILE *out = stream;
    for (const ef_option_t *o = table; o && o->key; o++) {
        char flag[128];
        snprintf (flag, sizeof flag, "--%s%s", prefix ? prefix : "", o->key);
        for (char *c = flag + 2; *c; c++)
            if (*c == '_')
                *c = '-';
        fprintf (out, "  %-40s %s", flag, o->description);
        if (o->default_value && o->type != EF_OPT_SECRET)
            fprintf (out, " (default: %s)", o->default_value);
        fputc ('\n', out);
    }
}
