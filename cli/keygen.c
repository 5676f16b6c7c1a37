/* keygen.c - `spindle keygen`: a new random token and the configuration line with its hash.
 *
 * Design: 32 bytes from RAND_bytes (the OpenSSL CSPRNG), written URL-safe (base64url without
 * padding) behind the prefix "spk_" so that secret scanners and people recognise a spindle token;
 * its SHA-256 over the whole token text is what the server stores ("keys = sha256:<hex>" in a
 * [tenant.NAME] section, or "metrics_token = sha256:<hex>" in [auth]). The token is printed once
 * and kept nowhere: with --token-file it goes to a new file of mode 0600 (never overwritten) and
 * standard output gets only the configuration lines, so it never passes through a terminal or a
 * shell history.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/internal.h"
#include "context/ctx.h"

#define KG_RANDOM_BYTES 32

static const char kg_usage[] =
    "usage: spindle keygen [--tenant NAME | --metrics] [--token-file FILE]\n"
    "\n"
    "Print a new random token and the line that lets the server accept it (only its SHA-256\n"
    "hash is ever written to the configuration).\n"
    "\n"
    "      --tenant NAME       print the [tenant.NAME] section line before keys = sha256:...\n"
    "      --metrics           print [auth] metrics_token = sha256:... instead (GET /metrics)\n"
    "      --token-file FILE   write the token to FILE (created with mode 0600; an existing\n"
    "                          file is an error) instead of printing it\n"
    "  -h, --help              print this help\n"
    "\n"
    "Clients send the token as Authorization: Bearer TOKEN (spindle call --token-file FILE or\n"
    "the SPINDLE_TOKEN environment variable).\n";

int cli_token_make(char *token, size_t size, char *hash_hex, size_t hash_size)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[KG_RANDOM_BYTES + 2] = {0};
    if (size < CLI_TOKEN_LEN + 1 || hash_size < 2 * 32 + 1)
        return -EINVAL;
    if (RAND_bytes(raw, KG_RANDOM_BYTES) != 1)
        return -EIO;
    size_t n = (size_t)snprintf(token, size, "spk_");
    for (size_t i = 0; i < KG_RANDOM_BYTES; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
        size_t chars = KG_RANDOM_BYTES - i >= 3 ? 4 : (KG_RANDOM_BYTES - i) + 1;
        for (size_t c = 0; c < chars; c++)
            token[n++] = b64[(v >> (18 - 6 * c)) & 63];
    }
    token[n] = '\0';
    return cli_token_hash(token, n, hash_hex, hash_size);
}

int cli_token_hash(const char *token, size_t len, char *hash_hex, size_t hash_size)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (hash_size < 2 * 32 + 1)
        return -EINVAL;
    if (EVP_Digest(token, len, d, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
        return -EIO;
    for (unsigned i = 0; i < dlen; i++)
        snprintf(hash_hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* Write `token` and a newline to a new file `path` (mode 0600). Returns 0 or a negative errno. */
static int kg_token_write(const char *path, const char *token)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    size_t len = strlen(token);
    char line[CLI_TOKEN_LEN + 2];
    memcpy(line, token, len);
    line[len] = '\n';
    ssize_t w = write(fd, line, len + 1);
    int rc = w == (ssize_t)(len + 1) ? 0 : (w < 0 ? -errno : -EIO);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        unlink(path);
    return rc;
}

struct kg_opts {
    const char *tenant, *file;
    bool metrics, help;
};

static int kg_args(int argc, char **argv, struct kg_opts *o)
{
    static const struct option opts[] = {
        {"tenant", required_argument, NULL, 't'},
        {"token-file", required_argument, NULL, 'f'},
        {"metrics", no_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 't')
            o->tenant = optarg;
        else if (c == 'f')
            o->file = optarg;
        else if (c == 'm')
            o->metrics = true;
        else if (c == 'h')
            o->help = true;
        else {
            fprintf(stderr, "spindle: keygen: %s \"%s\" (see: spindle keygen --help)\n",
                    c == ':' ? "missing value for option" : "unknown option", argv[optind - 1]);
            return -EINVAL;
        }
    }
    if (optind < argc || (o->tenant && o->metrics) ||
        (o->tenant && !ctx_tenant_valid(o->tenant, strlen(o->tenant)))) {
        fprintf(stderr, "spindle: keygen: %s (see: spindle keygen --help)\n",
                optind < argc ? "unexpected argument"
                : o->metrics  ? "--tenant and --metrics exclude each other"
                              : "--tenant wants 1-64 of [A-Za-z0-9._-]");
        return -EINVAL;
    }
    return 0;
}

int cli_keygen_main(int argc, char **argv)
{
    struct kg_opts o = {0};
    char token[CLI_TOKEN_LEN + 1], hex[65];
    if (kg_args(argc, argv, &o) != 0)
        return CLI_EXIT_USAGE;
    if (o.help) {
        fputs(kg_usage, stdout);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    }
    int rc = cli_token_make(token, sizeof(token), hex, sizeof(hex));
    if (rc == 0 && o.file != NULL)
        rc = kg_token_write(o.file, token);
    if (rc != 0) {
        fprintf(stderr, "spindle: keygen: %s%s%s\n", o.file ? o.file : "", o.file ? ": " : "",
                strerror(-rc));
        return CLI_EXIT_FAIL;
    }
    if (o.file == NULL)
        printf("%s\n", token);
    if (o.metrics)
        printf("[auth]\nmetrics_token = sha256:%s\n", hex);
    else
        printf("%s%s%skeys = sha256:%s\n", o.tenant ? "[tenant." : "", o.tenant ? o.tenant : "",
               o.tenant ? "]\n" : "", hex);
    explicit_bzero(token, sizeof(token));
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
