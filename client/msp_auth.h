/* msp_auth.h - shared secrets and the challenge-response proofs of the handshake (libsodium) */
#ifndef MSP_AUTH_H
#define MSP_AUTH_H

#include "client/memsvc_status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A secret file holds 16..4096 bytes (trailing newlines are not part of it). It is never used
 * directly: the key is BLAKE2b (crypto_generichash) of its bytes. A proof is HMAC-SHA512-256
 * (crypto_auth) of both nonces, the role, the session's binding and the session id, so that a
 * proof made for one connection, one job or one direction proves nothing elsewhere
 * (docs/protocol.md, "Authentication").
 */
#define MSP_KEY_BYTES 32u
#define MSP_NONCE_BYTES 32u
#define MSP_PROOF_BYTES 32u
#define MSP_SECRET_MIN 16u
#define MSP_SECRET_MAX 4096u

#define MSP_ROLE_CLIENT 'C'
#define MSP_ROLE_DAEMON 'D'

/* What a proof covers besides the nonces. */
typedef struct msp_auth_bind {
    uint32_t job, rank, device, flags;
    uint64_t session;
} msp_auth_bind_t;

/* libsodium ready (sodium_init, idempotent and thread-safe). false if it cannot start. */
bool msp_auth_init(void);

/*
 * Load a secret file into key: refused (MEMSVC_ERR_AUTH, the reason in err) when it is not a
 * regular file, not owned by the effective uid, readable or writable by group or others,
 * shorter than MSP_SECRET_MIN or longer than MSP_SECRET_MAX bytes; MEMSVC_ERR_IO when it
 * cannot be read.
 */
memsvc_status_t msp_secret_load(const char *path, uint8_t key[MSP_KEY_BYTES], char *err,
                                size_t errlen);

/* Fresh random nonce (randombytes_buf). */
void msp_auth_nonce(uint8_t nonce[MSP_NONCE_BYTES]);

/* The proof of `role` (MSP_ROLE_CLIENT or MSP_ROLE_DAEMON) over the nonces and binding. */
void msp_auth_proof(const uint8_t key[MSP_KEY_BYTES], char role,
                    const uint8_t client_nonce[MSP_NONCE_BYTES],
                    const uint8_t daemon_nonce[MSP_NONCE_BYTES], const msp_auth_bind_t *bind,
                    uint8_t proof[MSP_PROOF_BYTES]);

/* Does proof prove `role` (compared in constant time: crypto_auth_verify)? */
bool msp_auth_check(const uint8_t key[MSP_KEY_BYTES], char role,
                    const uint8_t client_nonce[MSP_NONCE_BYTES],
                    const uint8_t daemon_nonce[MSP_NONCE_BYTES], const msp_auth_bind_t *bind,
                    const uint8_t proof[MSP_PROOF_BYTES]);

/* Forget a key (sodium_memzero). */
void msp_auth_wipe(void *p, size_t len);

#endif /* MSP_AUTH_H */
