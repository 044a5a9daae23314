/* msp_auth.c - secret files and handshake proofs, on libsodium (no cryptography of our own) */
#include "client/msp_auth.h"

#include <sodium.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Label of the key derivation and of every proof: a key or proof of another use never fits. */
#define AUTH_LABEL "memsvc-auth-v1"

_Static_assert(MSP_KEY_BYTES == crypto_auth_KEYBYTES, "key size");
_Static_assert(MSP_PROOF_BYTES == crypto_auth_BYTES, "proof size");

bool msp_auth_init(void)
{
    return sodium_init() >= 0;
}

void msp_auth_wipe(void *p, size_t len)
{
    sodium_memzero(p, len);
}

/* Like ssh with a private key: only the owner may read a secret. */
static memsvc_status_t secret_check_mode(const char *path, const struct stat *st, char *err,
                                         size_t errlen)
{
    if (!S_ISREG(st->st_mode)) {
        memsvc_errf(err, errlen, "secret file %s is not a regular file", path);
        return MEMSVC_ERR_AUTH;
    }
    if (st->st_uid != geteuid()) {
        memsvc_errf(err, errlen, "secret file %s is owned by uid %u, not by this user (uid %u)",
                    path, (unsigned)st->st_uid, (unsigned)geteuid());
        return MEMSVC_ERR_AUTH;
    }
    if ((st->st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        memsvc_errf(err, errlen,
                    "secret file %s is accessible by group or others (mode %04o): "
                    "chmod 600 it",
                    path, (unsigned)(st->st_mode & 07777));
        return MEMSVC_ERR_AUTH;
    }
    return MEMSVC_OK;
}

memsvc_status_t msp_secret_load(const char *path, uint8_t key[MSP_KEY_BYTES], char *err,
                                size_t errlen)
{
    uint8_t         buf[MSP_SECRET_MAX + 2];
    memsvc_status_t status;
    struct stat     st;
    ssize_t         n;
    size_t          len = 0;
    int             fd;

    if (!msp_auth_init()) {
        memsvc_errf(err, errlen, "libsodium could not start");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        memsvc_errf(err, errlen, "secret file %s: %s", path, strerror(errno));
        return (errno == ENOENT) ? MEMSVC_ERR_IO : MEMSVC_ERR_AUTH;
    }
    if (fstat(fd, &st) != 0) {
        memsvc_errf(err, errlen, "secret file %s: %s", path, strerror(errno));
        close(fd);
        return MEMSVC_ERR_IO;
    }
    status = secret_check_mode(path, &st, err, errlen);
    while ((status == MEMSVC_OK) && (len < sizeof(buf)) &&
           ((n = read(fd, buf + len, sizeof(buf) - len)) != 0)) {
        if (n < 0) {
            memsvc_errf(err, errlen, "secret file %s: %s", path, strerror(errno));
            status = MEMSVC_ERR_IO;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    while ((status == MEMSVC_OK) && (len > 0) &&
           ((buf[len - 1] == '\n') || (buf[len - 1] == '\r'))) {
        len--;
    }
    if ((status == MEMSVC_OK) && ((len < MSP_SECRET_MIN) || (len > MSP_SECRET_MAX))) {
        memsvc_errf(err, errlen, "secret file %s holds %zu bytes; a secret has %u to %u", path, len,
                    MSP_SECRET_MIN, MSP_SECRET_MAX);
        status = MEMSVC_ERR_AUTH;
    }
    if (status == MEMSVC_OK) {
        crypto_generichash(key, MSP_KEY_BYTES, buf, len, (const uint8_t *)AUTH_LABEL,
                           sizeof(AUTH_LABEL) - 1);
    }
    sodium_memzero(buf, sizeof(buf));
    return status;
}

void msp_auth_nonce(uint8_t nonce[MSP_NONCE_BYTES])
{
    randombytes_buf(nonce, MSP_NONCE_BYTES);
}

/* The authenticated message: label, role, both nonces, the binding (little-endian). */
static size_t auth_message(uint8_t *m, char role, const uint8_t *cn, const uint8_t *dn,
                           const msp_auth_bind_t *bind)
{
    const uint32_t f[4] = {bind->job, bind->rank, bind->device, bind->flags};
    size_t         n    = 0;
    unsigned       i, b;

    memcpy(m, AUTH_LABEL, sizeof(AUTH_LABEL) - 1);
    n += sizeof(AUTH_LABEL) - 1;
    m[n++] = (uint8_t)role;
    memcpy(m + n, cn, MSP_NONCE_BYTES);
    n += MSP_NONCE_BYTES;
    memcpy(m + n, dn, MSP_NONCE_BYTES);
    n += MSP_NONCE_BYTES;
    for (i = 0; i < 4; i++) {
        for (b = 0; b < 4; b++) {
            m[n++] = (uint8_t)(f[i] >> (8 * b));
        }
    }
    for (b = 0; b < 8; b++) {
        m[n++] = (uint8_t)(bind->session >> (8 * b));
    }
    return n;
}

#define AUTH_MSG_MAX (sizeof(AUTH_LABEL) + 2 * MSP_NONCE_BYTES + 16 + 8)

void msp_auth_proof(const uint8_t key[MSP_KEY_BYTES], char role,
                    const uint8_t client_nonce[MSP_NONCE_BYTES],
                    const uint8_t daemon_nonce[MSP_NONCE_BYTES], const msp_auth_bind_t *bind,
                    uint8_t proof[MSP_PROOF_BYTES])
{
    uint8_t m[AUTH_MSG_MAX];
    size_t  n = auth_message(m, role, client_nonce, daemon_nonce, bind);

    crypto_auth(proof, m, n, key);
}

bool msp_auth_check(const uint8_t key[MSP_KEY_BYTES], char role,
                    const uint8_t client_nonce[MSP_NONCE_BYTES],
                    const uint8_t daemon_nonce[MSP_NONCE_BYTES], const msp_auth_bind_t *bind,
                    const uint8_t proof[MSP_PROOF_BYTES])
{
    uint8_t m[AUTH_MSG_MAX];
    size_t  n = auth_message(m, role, client_nonce, daemon_nonce, bind);

    return crypto_auth_verify(proof, m, n, key) == 0;
}
