/* eng_registry.c - the tensor registry: handle table with generations, (job, key) hash */
#include "memsvc/eng_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ENG_SLOT_INIT   1024u
#define ENG_BUCKET_INIT 1024u
#define ENG_SLOT_MAX    0xfffffff0u

static inline uint64_t eng_mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;

    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* A fast 64-bit multiply-mix hash over 8-byte words, folded to 32 bits. */
uint32_t eng_key_hash(uint32_t job, const char *key, size_t len)
{
    const uint64_t k1 = 0xa0761d6478bd642full, k2 = 0xe7037ed1a0b428dbull;
    uint64_t       h  = 0x8bb84b93962eacc9ull ^ ((uint64_t)job << 32) ^ len;
    uint64_t       w;

    while (len >= 8) {
        memcpy(&w, key, 8);
        h = eng_mix(h ^ w ^ k1, k2);
        key += 8;
        len -= 8;
    }
    w = 0;
    memcpy(&w, key, len);
    h = eng_mix(h ^ w ^ k2, k1 ^ len);
    return (uint32_t)(h ^ (h >> 32));
}

memsvc_status_t eng_reg_init(eng_t *eng)
{
    eng->cap_slots   = ENG_SLOT_INIT;
    eng->slots       = calloc(eng->cap_slots, sizeof(*eng->slots));
    eng->gens        = calloc(eng->cap_slots, sizeof(*eng->gens));
    eng->num_buckets = ENG_BUCKET_INIT;
    eng->buckets     = calloc(eng->num_buckets, sizeof(*eng->buckets));
    if (eng->slots == NULL || eng->gens == NULL || eng->buckets == NULL) {
        eng_reg_cleanup(eng);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    return MEMSVC_OK;
}

void eng_reg_cleanup(eng_t *eng)
{
    free(eng->slots);
    free(eng->gens);
    free(eng->buckets);
    eng->slots   = NULL;
    eng->gens    = NULL;
    eng->buckets = NULL;
}

static inline bool eng_slot_is_free(const eng_tensor_t *p)
{
    return ((uintptr_t)p & 1u) != 0 || p == NULL;
}

eng_tensor_t *eng_reg_slot(const eng_t *eng, uint32_t slot)
{
    eng_tensor_t *p = (slot < eng->num_slots) ? eng->slots[slot] : NULL;

    return eng_slot_is_free(p) ? NULL : p;
}

static memsvc_status_t eng_reg_grow_slots(eng_t *eng)
{
    uint32_t       cap = eng->cap_slots * 2;
    eng_tensor_t **slots;
    uint32_t      *gens;

    if (eng->cap_slots >= ENG_SLOT_MAX / 2) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    slots = realloc(eng->slots, cap * sizeof(*slots));
    if (slots == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    eng->slots = slots;
    gens       = realloc(eng->gens, cap * sizeof(*gens));
    if (gens == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    eng->gens = gens;
    memset(eng->slots + eng->cap_slots, 0, (cap - eng->cap_slots) * sizeof(*slots));
    memset(eng->gens + eng->cap_slots, 0, (cap - eng->cap_slots) * sizeof(*gens));
    eng->cap_slots = cap;
    return MEMSVC_OK;
}

static inline uint64_t eng_bucket_home(const eng_t *eng, uint64_t bucket)
{
    return (bucket >> 32) & (eng->num_buckets - 1);
}

/* Double the table; keeps the load at most one half. */
static void eng_reg_grow_buckets(eng_t *eng)
{
    uint64_t  n     = eng->num_buckets * 2;
    uint64_t *old   = eng->buckets;
    uint64_t  old_n = eng->num_buckets;
    uint64_t  i;

    eng->buckets = calloc(n, sizeof(*eng->buckets));
    if (eng->buckets == NULL) {
        eng->buckets = old; /* probing gets longer; still correct below full */
        return;
    }
    eng->num_buckets = n;
    for (i = 0; i < old_n; i++) {
        if (old[i] != 0) {
            uint64_t h = eng_bucket_home(eng, old[i]);

            while (eng->buckets[h] != 0) {
                h = (h + 1) & (n - 1);
            }
            eng->buckets[h] = old[i];
        }
    }
    free(old);
}

memsvc_status_t eng_reg_insert(eng_t *eng, eng_tensor_t *t)
{
    memsvc_status_t status;
    uint32_t        slot;
    uint64_t        h;

    if ((eng->live + 1) * 2 > eng->num_buckets) {
        eng_reg_grow_buckets(eng);
        if ((eng->live + 1) >= eng->num_buckets) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
    }
    if (eng->free_head != 0) {
        slot           = (uint32_t)(eng->free_head - 1);
        eng->free_head = (uintptr_t)eng->slots[slot] >> 1;
    } else {
        if (eng->num_slots == eng->cap_slots) {
            status = eng_reg_grow_slots(eng);
            if (status != MEMSVC_OK) {
                return status;
            }
        }
        slot = eng->num_slots++;
    }
    if (++eng->gens[slot] == 0) {
        eng->gens[slot] = 1;
    }
    eng->slots[slot] = t;
    t->pub.handle    = ((uint64_t)eng->gens[slot] << 32) | slot;

    h = t->hash & (eng->num_buckets - 1);
    while (eng->buckets[h] != 0) {
        h = (h + 1) & (eng->num_buckets - 1);
    }
    eng->buckets[h] = ((uint64_t)t->hash << 32) | (slot + 1);
    eng->live++;
    return MEMSVC_OK;
}

/* Remove with backward shift, so that no tombstones are needed. */
void eng_reg_remove(eng_t *eng, eng_tensor_t *t)
{
    uint32_t slot  = (uint32_t)t->pub.handle;
    uint64_t mask  = eng->num_buckets - 1;
    uint64_t entry = ((uint64_t)t->hash << 32) | (slot + 1);
    uint64_t i     = t->hash & mask;
    uint64_t j;

    while (eng->buckets[i] != entry) {
        i = (i + 1) & mask;
    }
    j = i;
    for (;;) {
        uint64_t home;

        j = (j + 1) & mask;
        if (eng->buckets[j] == 0) {
            break;
        }
        home = eng_bucket_home(eng, eng->buckets[j]);
        /* leave j where it is if its home lies cyclically in (i, j] */
        if ((i <= j) ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }
        eng->buckets[i] = eng->buckets[j];
        i               = j;
    }
    eng->buckets[i] = 0;

    if (++eng->gens[slot] == 0) { /* stale handles stop matching at once */
        eng->gens[slot] = 1;
    }
    eng->slots[slot] = (eng_tensor_t *)(uintptr_t)((eng->free_head << 1) | 1u);
    eng->free_head   = (uint64_t)slot + 1;
    eng->live--;
}

eng_tensor_t *eng_reg_get(const eng_t *eng, eng_handle_t handle)
{
    uint32_t slot = (uint32_t)handle;
    uint32_t gen  = (uint32_t)(handle >> 32);

    if (gen == 0 || slot >= eng->num_slots || eng->gens[slot] != gen) {
        return NULL;
    }
    return eng_reg_slot(eng, slot);
}

eng_tensor_t *eng_reg_find_hashed(const eng_t *eng, uint32_t job, const char *key, uint32_t hash)
{
    uint64_t mask = eng->num_buckets - 1;
    uint64_t h    = hash & mask;

    while (eng->buckets[h] != 0) {
        if ((uint32_t)(eng->buckets[h] >> 32) == hash) {
            eng_tensor_t *t = eng->slots[(uint32_t)eng->buckets[h] - 1];

            if (t->pub.job == job && strcmp(t->key, key) == 0) {
                return t;
            }
        }
        h = (h + 1) & mask;
    }
    return NULL;
}

eng_tensor_t *eng_reg_find(const eng_t *eng, uint32_t job, const char *key)
{
    return eng_reg_find_hashed(eng, job, key, eng_key_hash(job, key, strlen(key)));
}

size_t eng_reg_bytes(const eng_t *eng)
{
    return eng->cap_slots * (sizeof(*eng->slots) + sizeof(*eng->gens)) +
           eng->num_buckets * sizeof(*eng->buckets);
}

void eng_list_append(eng_list_t *l, eng_tensor_t *t)
{
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = t;
    } else {
        l->head = t;
    }
    l->tail = t;
}

void eng_list_remove(eng_list_t *l, eng_tensor_t *t)
{
    if (t->prev != NULL) {
        t->prev->next = t->next;
    } else {
        l->head = t->next;
    }
    if (t->next != NULL) {
        t->next->prev = t->prev;
    } else {
        l->tail = t->prev;
    }
    t->prev = t->next = NULL;
}
