/*  cmd_keygen.c — `embedflow keygen`: a CURVE key pair for tcp links. */
#include "cli/cli.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
s_help (FILE *out)
{
    fprintf (out,
             "usage: embedflow keygen [--force] PATH\n"
             "\n"
             "Makes a CURVE key pair for the tcp:// links between hosts and "
             "writes it in\nczmq's certificate format:\n"
             "  PATH          the public key: copy it to the other hosts "
             "(into their\n"
             "                curve.clients directory, or name it as a "
             "link's server_key)\n"
             "  PATH_secret   the key pair, mode 0600: stays on this host, "
             "named by curve.key\n"
             "The public key is also printed (Z85), usable as a server_key "
             "value.\n"
             "\n"
             "  --force       replace existing files (an existing pair is "
             "never overwritten\n"
             "                otherwise)\n"
             "\n"
             "Example: embedflow keygen /etc/embedflow/keys/writer-a.key\n");
}

int
ef_cmd_keygen (int argc, char **argv)
{
    const char *path = NULL;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
            s_help (stdout);
            return EF_EXIT_OK;
        }
        if (strcmp (argv[i], "--force") == 0)
            force = true;
        else if (argv[i][0] == '-' || path) {
            fprintf (stderr, "embedflow keygen: unexpected argument '%s'\n\n",
                     argv[i]);
            s_help (stderr);
            return EF_EXIT_USAGE;
        }
        else
            path = argv[i];
    }
    if (!path || !*path) {
        fprintf (stderr, "embedflow keygen: PATH is required\n\n");
        s_help (stderr);
        return EF_EXIT_USAGE;
    }
    char secret[4096];
    if ((size_t) snprintf (secret, sizeof secret, "%s_secret", path)
        >= sizeof secret) {
        fprintf (stderr, "embedflow keygen: %s: path too long\n", path);
        return EF_EXIT_USAGE;
    }
    struct stat st;
    const char *files[] = {path, secret};
    for (size_t i = 0; i < 2; i++) {
        if (lstat (files[i], &st) != 0)
            continue;
        if (!force) {
            fprintf (stderr,
                     "embedflow keygen: %s exists: not overwritten (--force "
                     "replaces it; every host that has the old public key "
                     "then needs the new one)\n",
                     files[i]);
            return EF_EXIT_FAIL;
        }
        /* Removed, not truncated: the new secret file must not inherit
           an old file's mode or owner. */
        if (unlink (files[i]) != 0) {
            fprintf (stderr, "embedflow keygen: cannot replace %s: %s\n",
                     files[i], strerror (errno));
            return EF_EXIT_FAIL;
        }
    }
    if (!zsys_has_curve ()) {
        fprintf (stderr, "embedflow keygen: this libzmq was built without "
                         "CURVE support\n");
        return EF_EXIT_FAIL;
    }
    zcert_t *cert = zcert_new ();
    if (!cert) {
        fprintf (stderr, "embedflow keygen: cannot make a key pair\n");
        return EF_EXIT_FAIL;
    }
    char host[256] = "";
    gethostname (host, sizeof host - 1);
    zcert_set_meta (cert, "created-by", "embedflow keygen");
    zcert_set_meta (cert, "host", "%s", host);
    int rc = EF_EXIT_OK;
    errno = 0;
    if (zcert_save_public (cert, path) != 0) {
        fprintf (stderr, "embedflow keygen: cannot write %s: %s\n", path,
                 strerror (errno ? errno : EIO));
        rc = EF_EXIT_FAIL;
    }
    else {
        /* Created 0600 through the umask, never readable by others even
           for a moment; chmod in case the umask was stricter. */
        mode_t old = umask (077);
        errno = 0;
        int saved = zcert_save_secret (cert, secret);
        umask (old);
        if (saved != 0 || chmod (secret, 0600) != 0) {
            fprintf (stderr, "embedflow keygen: cannot write %s: %s\n", secret,
                     strerror (errno ? errno : EIO));
            unlink (path);
            rc = EF_EXIT_FAIL;
        }
    }
    if (rc == EF_EXIT_OK)
        printf ("public key %s\n  %s (public: copy to the other hosts)\n  %s "
                "(secret, 0600: curve.key on this host)\n",
                zcert_public_txt (cert), path, secret);
    zcert_destroy (&cert);
    return rc;
}
