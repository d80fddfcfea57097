/*
 * os_fake.c - test-only OS layer: sm_os_alloc, sm_os_free, sm_os_page_size
 * and sm_os_fail_nth as os.h states them, over mmap, with counters (see
 * os_fake.h).  sm_os_free checks that the size matches the allocation, as
 * munmap of the wrong length would silently leak or unmap a neighbour.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "os.h"
#include "os_fake.h"

static size_t live_bytes, live_blocks;
static uint64_t alloc_calls, fail_countdown;
static char *place_next;

void os_fake_place_next(void *addr)
{
    place_next = addr;
}

void sm_os_fail_nth(uint64_t n)
{
    __atomic_store_n(&fail_countdown, n, __ATOMIC_RELAXED);
}

size_t sm_os_page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t round_pages(size_t size)
{
    size_t ps = sm_os_page_size();
    return (size + ps - 1) & ~(ps - 1);
}

/* The mapping is one page longer than asked, and that first page records
 * the rounded size for the check in sm_os_free. */
void *sm_os_alloc(size_t size)
{
    __atomic_add_fetch(&alloc_calls, 1, __ATOMIC_RELAXED);
    uint64_t n = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);
    if (n != 0 && __atomic_sub_fetch(&fail_countdown, 1, __ATOMIC_RELAXED) == 0)
        return NULL;
    size_t ps = sm_os_page_size();
    size_t len = round_pages(size);
    char *want = place_next ? place_next - ps : NULL;
    place_next = NULL;
    char *p = mmap(want, len + ps, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (want ? MAP_FIXED_NOREPLACE : 0), -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (want != NULL && p != want) {   /* a kernel without MAP_FIXED_NOREPLACE */
        munmap(p, len + ps);
        return NULL;
    }
    *(size_t *)p = len;
    __atomic_add_fetch(&live_bytes, len, __ATOMIC_RELAXED);
    __atomic_add_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
    return p + ps;
}

void sm_os_free(void *p, size_t size)
{
    size_t ps = sm_os_page_size();
    char *base = (char *)p - ps;
    size_t len = round_pages(size);
    if (*(size_t *)base != len)
        abort();
    __atomic_sub_fetch(&live_bytes, len, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
    munmap(base, len + ps);
}

size_t os_fake_live_bytes(void)
{
    return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED);
}

size_t os_fake_live_blocks(void)
{
    return __atomic_load_n(&live_blocks, __ATOMIC_RELAXED);
}

uint64_t os_fake_alloc_calls(void)
{
    return __atomic_load_n(&alloc_calls, __ATOMIC_RELAXED);
}

/* Files are mapped as os_linux.c does; they are not metadata, so they are
 * not counted. */
const void *sm_os_map_file(int fd, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void sm_os_unmap_file(void *p, size_t size)
{
    munmap(p, size);
}
