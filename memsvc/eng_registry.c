/* eng_registry.c - the tensor registry: handle table with generations, (job, key) hash */
#include "memsvc/eng_internal.h"

#include <stdlib.h>
#include <string.h>

#define ENG_SLOT_INIT   1024u
#define ENG_BUCKET_INIT 1024u
#define ENG_SLOT_MAX    0xfffffff0u

static uint64_t eng_key_hash(uint32_t job, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull ^ job;
    const unsigned char *p;

    for (p = (const unsigned char *)key; *p != '\0'; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

memsvc_status_t eng_reg_init(eng_t *eng)
{
    eng->cap_slots   = ENG_SLOT_INIT;
    eng->slots       = calloc(eng->cap_slots, sizeof(*eng->slots));
    eng->gens        = calloc(eng->cap_slots, sizeof(*eng->gens));
    eng->free_slots  = calloc(eng->cap_slots, sizeof(*eng->free_slots));
    eng->num_buckets = ENG_BUCKET_INIT;
    eng->buckets     = calloc(eng->num_buckets, sizeof(*eng->buckets));
    if (eng->slots == NULL || eng->gens == NULL || eng->free_slots == NULL ||
        eng->buckets == NULL) {
        eng_reg_cleanup(eng);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    return MEMSVC_OK;
}

void eng_reg_cleanup(eng_t *eng)
{
    free(eng->slots);
    free(eng->gens);
    free(eng->free_slots);
    free(eng->buckets);
    eng->slots      = NULL;
    eng->gens       = NULL;
    eng->free_slots = NULL;
    eng->buckets    = NULL;
}

static memsvc_status_t eng_reg_grow_slots(eng_t *eng)
{
    uint32_t       cap = eng->cap_slots * 2;
    eng_tensor_t **slots;
    uint32_t      *gens, *free_slots;

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
    eng->gens  = gens;
    free_slots = realloc(eng->free_slots, cap * sizeof(*free_slots));
    if (free_slots == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    eng->free_slots = free_slots;
    memset(eng->slots + eng->cap_slots, 0, (cap - eng->cap_slots) * sizeof(*slots));
    memset(eng->gens + eng->cap_slots, 0, (cap - eng->cap_slots) * sizeof(*gens));
    eng->cap_slots = cap;
    return MEMSVC_OK;
}

static inline uint64_t eng_bucket_of(const eng_t *eng, const eng_tensor_t *t)
{
    return eng_key_hash(t->pub.job, t->key) & (eng->num_buckets - 1);
}

/* Double the table; keeps the load at most one half. */
static void eng_reg_grow_buckets(eng_t *eng)
{
    uint64_t  n   = eng->num_buckets * 2;
    uint32_t *old = eng->buckets;
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
            uint64_t h = eng_bucket_of(eng, eng->slots[old[i] - 1]);

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
    if (eng->num_free > 0) {
        slot = eng->free_slots[--eng->num_free];
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

    h = eng_bucket_of(eng, t);
    while (eng->buckets[h] != 0) {
        h = (h + 1) & (eng->num_buckets - 1);
    }
    eng->buckets[h] = slot + 1;
    eng->live++;
    return MEMSVC_OK;
}

/* Remove with backward shift, so that no tombstones are needed. */
void eng_reg_remove(eng_t *eng, eng_tensor_t *t)
{
    uint32_t slot = (uint32_t)t->pub.handle;
    uint64_t mask = eng->num_buckets - 1;
    uint64_t i    = eng_bucket_of(eng, t);
    uint64_t j;

    while (eng->buckets[i] != slot + 1) {
        i = (i + 1) & mask;
    }
    j = i;
    for (;;) {
        uint64_t home;

        j = (j + 1) & mask;
        if (eng->buckets[j] == 0) {
            break;
        }
        home = eng_bucket_of(eng, eng->slots[eng->buckets[j] - 1]);
        /* move j back to i unless its home lies cyclically in (i, j] */
        if ((i <= j) ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }
        eng->buckets[i] = eng->buckets[j];
        i               = j;
    }
    eng->buckets[i] = 0;

    eng->slots[slot]                 = NULL;
    eng->free_slots[eng->num_free++] = slot;
    eng->live--;
}

eng_tensor_t *eng_reg_get(const eng_t *eng, eng_handle_t handle)
{
    uint32_t slot = (uint32_t)handle;
    uint32_t gen  = (uint32_t)(handle >> 32);

    if (gen == 0 || slot >= eng->num_slots || eng->gens[slot] != gen) {
        return NULL;
    }
    return eng->slots[slot];
}

eng_tensor_t *eng_reg_find(const eng_t *eng, uint32_t job, const char *key)
{
    uint64_t mask = eng->num_buckets - 1;
    uint64_t h    = eng_key_hash(job, key) & mask;

    while (eng->buckets[h] != 0) {
        eng_tensor_t *t = eng->slots[eng->buckets[h] - 1];

        if (t->pub.job == job && strcmp(t->key, key) == 0) {
            return t;
        }
        h = (h + 1) & mask;
    }
    return NULL;
}

size_t eng_reg_bytes(const eng_t *eng)
{
    return eng->cap_slots * (sizeof(*eng->slots) + sizeof(*eng->gens) + sizeof(*eng->free_slots)) +
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
