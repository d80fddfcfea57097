/*
 * os_linux.c - the only file that calls mmap, munmap and madvise.
 *
 * Heap memory is reserved in arena-aligned chunks (64 MiB and up); like Go's
 * arena hints we ask for the address right after the previous reservation,
 * so the heap tends to stay one contiguous range and free runs can join
 * across arenas.  Alignment beyond what mmap gives is made by mapping more
 * and unmapping the ends.
 *
 * A failure is a NULL, never an abort: the heap turns it into ENOMEM.
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static uintptr_t next_hint;
static uint64_t fail_countdown;   /* test hook, see os.h */
static uint64_t map_calls;        /* test hook: mapping requests so far */
static uint64_t mapped_bytes;     /* test hook: bytes mapped through here now */

void sm_os_fail_nth(uint64_t n)
{
    __atomic_store_n(&fail_countdown, n, __ATOMIC_RELAXED);
}

uint64_t sm_os_map_calls(void)
{
    return __atomic_load_n(&map_calls, __ATOMIC_RELAXED);
}

uint64_t sm_os_mapped_bytes(void)
{
    return __atomic_load_n(&mapped_bytes, __ATOMIC_RELAXED);
}

static void count_mapped(size_t bytes, bool add)
{
    if (add)
        __atomic_add_fetch(&mapped_bytes, bytes, __ATOMIC_RELAXED);
    else
        __atomic_sub_fetch(&mapped_bytes, bytes, __ATOMIC_RELAXED);
}

/* Counts the request, then tells whether the fault hook fails it. */
static bool injected_failure(void)
{
    __atomic_add_fetch(&map_calls, 1, __ATOMIC_RELAXED);
    uint64_t n = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);
    if (n == 0)
        return false;
    if (__atomic_sub_fetch(&fail_countdown, 1, __ATOMIC_RELAXED) == 0)
        return true;
    return false;
}

static void *map_anon(void *hint, size_t size)
{
    void *p = mmap(hint, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *sm_os_reserve(size_t size, size_t align)
{
    if (injected_failure())
        return NULL;
    if (next_hint != 0) {
        void *p = map_anon((void *)next_hint, size);
        if (p != NULL && ((uintptr_t)p & (align - 1)) == 0) {
            next_hint = (uintptr_t)p + size;
            count_mapped(size, true);
            return p;
        }
        if (p != NULL)
            munmap(p, size);
    }
    if (size + align < size)
        return NULL;
    char *p = map_anon(NULL, size + align);
    if (p == NULL)
        return NULL;
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)p;
    size_t tail = align - head;
    if (head)
        munmap(p, head);
    if (tail)
        munmap((char *)start + size, tail);
    next_hint = start + size;
    count_mapped(size, true);
    return (void *)start;
}

void sm_os_unmap(void *p, size_t size)
{
    if (munmap(p, size) == 0)
        count_mapped(size, false);
}

/* MADV_FREE is Linux 4.5 and later, and some kernels (or seccomp
 * filters, or gVisor) answer EINVAL.  As Go's sysUnusedOS does, the first
 * EINVAL switches every later release to MADV_DONTNEED, and this one is
 * retried with it: the pages still go back, only at once. */
static int madv_free_refused;
static int madv_free_fake_einval;   /* test hook, see os.h */

void sm_os_refuse_madv_free(bool on)
{
    __atomic_store_n(&madv_free_fake_einval, on, __ATOMIC_RELAXED);
}

bool sm_os_madv_free_refused(void)
{
    return __atomic_load_n(&madv_free_refused, __ATOMIC_RELAXED);
}

bool sm_os_release(void *p, size_t size, int advice)
{
    if (advice == 1 && !__atomic_load_n(&madv_free_refused, __ATOMIC_RELAXED)) {
        int r;
        if (__atomic_load_n(&madv_free_fake_einval, __ATOMIC_RELAXED)) {
            errno = EINVAL;
            r = -1;
        } else {
            r = madvise(p, size, MADV_FREE);
        }
        if (r == 0)
            return true;
        if (errno != EINVAL)
            return false;
        __atomic_store_n(&madv_free_refused, 1, __ATOMIC_RELAXED);
    }
    return madvise(p, size, MADV_DONTNEED) == 0;
}

const void *sm_os_map_file(int fd, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void sm_os_unmap_file(void *p, size_t size)
{
    munmap(p, size);
}

size_t sm_os_page_size(void)
{
    /* Threads that ask first, under different locks, may all store it:
     * the same value, with relaxed atomics so that is a defined race. */
    static size_t cached;
    size_t ps = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (ps == 0) {
        ps = (size_t)sysconf(_SC_PAGESIZE);
        __atomic_store_n(&cached, ps, __ATOMIC_RELAXED);
    }
    return ps;
}

void *sm_os_alloc(size_t size)
{
    if (injected_failure())
        return NULL;
    size_t ps = sm_os_page_size();
    size = (size + ps - 1) & ~(ps - 1);
    void *p = map_anon(NULL, size);
    if (p != NULL)
        count_mapped(size, true);
    return p;
}

void sm_os_free(void *p, size_t size)
{
    size_t ps = sm_os_page_size();
    size = (size + ps - 1) & ~(ps - 1);
    if (munmap(p, size) == 0)
        count_mapped(size, false);
}

/* ---- membarrier ------------------------------------------------------------
 * The large caches' owners take a span with plain loads and stores, and a
 * thread that takes spans from other threads' caches first makes them all
 * execute a barrier through this (large.c). */

#ifndef MEMBARRIER_CMD_PRIVATE_EXPEDITED
#define MEMBARRIER_CMD_QUERY 0
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED (1 << 3)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#endif

static int membarrier_state;   /* 0 not asked, 1 usable, 2 refused (atomic) */

static long sys_membarrier(int cmd)
{
#ifdef SYS_membarrier
    return syscall(SYS_membarrier, cmd, 0u, 0);
#else
    (void)cmd;
    errno = ENOSYS;
    return -1;
#endif
}

static bool membarrier_register(void)
{
    long q = sys_membarrier(MEMBARRIER_CMD_QUERY);
    return q >= 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
           sys_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
}

bool sm_os_membarrier_ok(void)
{
    int st = __atomic_load_n(&membarrier_state, __ATOMIC_ACQUIRE);
    if (st == 0) {
        int saved = errno;
        st = membarrier_register() ? 1 : 2;
        errno = saved;
        __atomic_store_n(&membarrier_state, st, __ATOMIC_RELEASE);
    }
    return st == 1;
}

bool sm_os_membarrier(void)
{
    if (!sm_os_membarrier_ok())
        return false;
    int saved = errno;
    long r = sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
    /* A fork child is not registered: register it and try again. */
    if (r != 0 && errno == EPERM && membarrier_register())
        r = sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
    errno = saved;
    return r == 0;
}
