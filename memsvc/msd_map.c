/* msd_map.c - memsvcd's ownership table: (handle, session) -> owner or pin count, open addressing
 */
#include "memsvc/msd.h"

#include <stdlib.h>
#include <string.h>

#define MAP_INITIAL_CAP 1024u

static size_t map_hash(uint64_t handle, uint64_t sid)
{
    uint64_t x =
        handle * 0x9e3779b97f4a7c15ull ^ (sid + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull;

    x ^= x >> 31;
    return (size_t)x;
}

memsvc_status_t msd_map_init(msd_map_t *map)
{
    map->slots = calloc(MAP_INITIAL_CAP, sizeof(*map->slots));
    if (map->slots == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    map->cap   = MAP_INITIAL_CAP;
    map->count = 0;
    return MEMSVC_OK;
}

void msd_map_fini(msd_map_t *map)
{
    free(map->slots);
    map->slots = NULL;
    map->cap = map->count = 0;
}

static msd_map_slot_t *map_find(const msd_map_t *map, uint64_t handle, uint64_t sid)
{
    size_t i = map_hash(handle, sid) & (map->cap - 1);

    while (map->slots[i].used) {
        if ((map->slots[i].handle == handle) && (map->slots[i].sid == sid)) {
            return &map->slots[i];
        }
        i = (i + 1) & (map->cap - 1);
    }
    return NULL;
}

msd_own_t *msd_map_get(msd_map_t *map, uint64_t handle, uint64_t sid)
{
    msd_map_slot_t *slot = map_find(map, handle, sid);

    return (slot != NULL) ? &slot->v : NULL;
}

static memsvc_status_t map_grow(msd_map_t *map)
{
    msd_map_slot_t *old    = map->slots;
    size_t          oldcap = map->cap, i, j;
    msd_map_slot_t *slots  = calloc(oldcap * 2, sizeof(*slots));

    if (slots == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    map->slots = slots;
    map->cap   = oldcap * 2;
    for (i = 0; i < oldcap; i++) {
        if (!old[i].used) {
            continue;
        }
        j = map_hash(old[i].handle, old[i].sid) & (map->cap - 1);
        while (slots[j].used) {
            j = (j + 1) & (map->cap - 1);
        }
        slots[j] = old[i];
    }
    free(old);
    return MEMSVC_OK;
}

msd_own_t *msd_map_put(msd_map_t *map, uint64_t handle, uint64_t sid)
{
    msd_map_slot_t *slot = map_find(map, handle, sid);
    size_t          i;

    if (slot != NULL) {
        return &slot->v;
    }
    if (((map->count + 1) * 4 > map->cap * 3) && (map_grow(map) != MEMSVC_OK)) {
        return NULL;
    }
    i = map_hash(handle, sid) & (map->cap - 1);
    while (map->slots[i].used) {
        i = (i + 1) & (map->cap - 1);
    }
    memset(&map->slots[i], 0, sizeof(map->slots[i]));
    map->slots[i].used   = true;
    map->slots[i].handle = handle;
    map->slots[i].sid    = sid;
    map->count++;
    return &map->slots[i].v;
}

void msd_map_del(msd_map_t *map, uint64_t handle, uint64_t sid)
{
    msd_map_slot_t *slot = map_find(map, handle, sid);
    size_t          i, j, k;

    if (slot == NULL) {
        return;
    }
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    i                  = (size_t)(slot - map->slots);
    map->slots[i].used = false;
    map->count--;
    j = i;
    for (;;) {
        j = (j + 1) & (map->cap - 1);
        if (!map->slots[j].used) {
            break;
        }
        k = map_hash(map->slots[j].handle, map->slots[j].sid) & (map->cap - 1);
        /* Move slot j to i if its home k is not cyclically within (i, j]. */
        if ((i <= j) ? ((i < k) && (k <= j)) : ((i < k) || (k <= j))) {
            continue;
        }
        map->slots[i]      = map->slots[j];
        map->slots[j].used = false;
        i                  = j;
    }
}
