/*
 * pattern.h - the byte pattern the tests write into objects and check
 * later (the fault walk, the fuzz target, the stress test, the thread
 * tests): a function of the object's key and the byte's offset, so an
 * object handed out twice, a lost byte in realloc or a link written into
 * live memory shows as a difference.  Byte i depends only on the key and
 * i, so a prefix of an object keeps the pattern of the same key at the
 * shorter length (what realloc must keep).  Large objects carry it only in
 * parts (FOR_EACH_PART), so they do not make every page resident.
 */
#ifndef SM_TEST_PATTERN_H
#define SM_TEST_PATTERN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t pattern_word(uint64_t key, size_t i)
{
    uint64_t z = key * 0x9e3779b97f4a7c15u + (i / 8) * 0xc2b2ae3d27d4eb4fu;
    return z ^ (z >> 31);
}

static inline uint8_t pattern_byte(uint64_t key, size_t i)
{
    return (uint8_t)(pattern_word(key, i) >> (8 * (i % 8)));
}

/* The parts of an object of size bytes that carry the pattern: all of it up
 * to 16 KiB; beyond, the first and last KiB and 64 bytes every 16 KiB.
 * body runs once per part with lo and hi declared. */
#define FOR_EACH_PART(size, lo, hi, body)                                         \
    do {                                                                          \
        if ((size) <= 16384) {                                                    \
            size_t lo = 0, hi = (size);                                           \
            body;                                                                 \
        } else {                                                                  \
            for (size_t o_ = 0; o_ < (size) - 1024; o_ += 16384) {                \
                size_t lo = o_, hi = o_ + (o_ == 0 ? 1024 : 64);                  \
                body;                                                             \
            }                                                                     \
            size_t lo = (size) - 1024, hi = (size);                               \
            body;                                                                 \
        }                                                                         \
    } while (0)

/* Bytes [lo, hi) of the pattern of key into c: whole words where aligned. */
static inline void fill_part(uint8_t *c, uint64_t key, size_t lo, size_t hi)
{
    size_t i = lo;
    for (; i < hi && i % 8; i++)
        c[i] = pattern_byte(key, i);
    for (; i + 8 <= hi; i += 8) {
        uint64_t w = pattern_word(key, i);
        memcpy(c + i, &w, 8);
    }
    for (; i < hi; i++)
        c[i] = pattern_byte(key, i);
}

/* The first byte in [lo, hi) of c that differs from the pattern of key, or
 * SIZE_MAX. */
static inline size_t check_part(const uint8_t *c, uint64_t key, size_t lo, size_t hi)
{
    size_t i = lo;
    for (; i < hi && i % 8; i++)
        if (c[i] != pattern_byte(key, i))
            return i;
    for (; i + 8 <= hi; i += 8) {
        uint64_t w;
        memcpy(&w, c + i, 8);
        if (w != pattern_word(key, i))
            break;
    }
    for (; i < hi; i++)
        if (c[i] != pattern_byte(key, i))
            return i;
    return SIZE_MAX;
}

/* The whole object of size bytes at p. */
static inline void pattern_fill(void *p, size_t size, uint64_t key)
{
    fill_part(p, key, 0, size);
}

/* The first offset of the object that does not match, or SIZE_MAX. */
static inline size_t pattern_mismatch(const void *p, size_t size, uint64_t key)
{
    return check_part(p, key, 0, size);
}

#endif
