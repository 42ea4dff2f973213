/*  options.h — declarative option tables, read by one generic loader.

    An actor (or the application) describes its settings as a table of
    ef_option_t rows {key, type, default, offset, description}. The same
    table fills the struct from defaults, from the YAML config file and
    from command-line flags, prints --help, and rejects unknown keys, so a
    new setting is one row and nothing else.

    String options are heap copies owned by the struct; release them with
    ef_options_free.
*/
#ifndef EF_OPTIONS_H
#define EF_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/export.h"

EF_API_BEGIN

typedef enum {
    EF_OPT_INT,    /* int64_t; decimal */
    EF_OPT_SIZE,   /* int64_t bytes; accepts k, M, G suffixes (powers of 2) */
    EF_OPT_MS,     /* int64_t milliseconds; accepts ms, s, m suffixes */
    EF_OPT_BOOL,   /* bool; true/false/yes/no/on/off/1/0 */
    EF_OPT_STRING, /* char * (heap, may be NULL when default is NULL) */
    EF_OPT_SECRET, /* char *; like STRING but never printed */
} ef_option_type_t;

typedef struct {
    const char *key; /* YAML key and flag suffix, e.g. "batch_rows" */
    ef_option_type_t type;
    const char *default_value; /* parsed like user input; NULL = 0/false/NULL */
    size_t offset;             /* offsetof the field in the options struct */
    int64_t min, max; /* inclusive bounds for numeric types; 0,0 = none */
    const char *description; /* one line for --help */
} ef_option_t;

/* Marks the end of a table. */
#define EF_OPTION_END                                                          \
    {                                                                          \
        NULL, EF_OPT_INT, NULL, 0, 0, 0, NULL                                  \
    }

/* Fills obj with the table's defaults. Returns 0, or -1 with err set when
   a default does not parse (a programming error in the table). */
int ef_options_defaults (const ef_option_t *table, void *obj, char *err,
                         size_t errlen);

/* Parses value for key into obj. Keys compare with '-' and '_' equal.
   Returns 0; -1 with err set ("unknown key" listing the known ones, or
   why the value is rejected). */
int ef_options_set (const ef_option_t *table, void *obj, const char *key,
                    const char *value, char *err, size_t errlen);

/* Finds a row by key ('-' and '_' equal), NULL when absent. */
const ef_option_t *ef_options_find (const ef_option_t *table, const char *key);

/* Frees the strings the table owns in obj (not obj itself). */
void ef_options_free (const ef_option_t *table, void *obj);

/* Prints "  --PREFIXkey VALUE   description (default: X)" for each row. */
void ef_options_print_help (const ef_option_t *table, const char *prefix,
                            void *stream);

EF_API_END

#endif
