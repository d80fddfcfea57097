/*
 * os.h - the contract between spanmalloc and the operating system.
 *
 * os_linux.c is the only file that calls mmap, munmap or madvise.  Memory
 * moves through the states Go's runtime names in mem.go:
 *
 *   None      not mapped by us.
 *   Reserved  address space mapped PROT_NONE-free but never touched; it costs
 *             no RSS.  sm_os_reserve() returns memory in this state.
 *   Ready     touched and resident (the program writes to it).
 *   Released  given back with sm_os_release(): with SM_RELEASE_DONTNEED the
 *             pages are gone from RSS at once and read back as zero; with
 *             SM_RELEASE_FREE the kernel reclaims them lazily and they may
 *             keep their old contents until it does.
 *
 * Nothing here takes a lock or calls malloc, so any tier may call it with
 * its own lock held, except sm_os_release, which the heap calls without its
 * lock (madvise can be slow on large ranges).
 */
#ifndef SM_OS_H
#define SM_OS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Map size bytes (a multiple of the OS page size) aligned to align (a power
 * of two, at least the OS page size).  Returns NULL on failure, never
 * aborts.  The memory is zero-filled and not yet resident. */
void *sm_os_reserve(size_t size, size_t align);

/* Unmap what sm_os_reserve returned (or a page-aligned part of it). */
void sm_os_unmap(void *p, size_t size);

/* Give pages back with the given advice (enum sm_release values).  Returns
 * false if the kernel refused.  A kernel that refuses MADV_FREE with
 * EINVAL gets MADV_DONTNEED instead, from then on (as Go does). */
bool sm_os_release(void *p, size_t size, int advice);

/* Whether MADV_FREE was refused and releases use MADV_DONTNEED. */
bool sm_os_madv_free_refused(void);

/* Test hook: answer MADV_FREE with EINVAL without asking the kernel, as a
 * kernel before 4.5 does. */
void sm_os_refuse_madv_free(bool on);

/* Metadata memory: page-rounded anonymous mappings for internal structures
 * that must not come from malloc (fixalloc chunks, profile buffers). */
void *sm_os_alloc(size_t size);
void sm_os_free(void *p, size_t size);

/* A file mapped read-only and private (the profile writer reads ELF symbol
 * tables this way, without malloc); NULL on failure.  Not heap memory:
 * neither counted in the stats nor subject to the fault hook. */
const void *sm_os_map_file(int fd, size_t size);
void sm_os_unmap_file(void *p, size_t size);

/* A full memory barrier on every running thread of the process, as if each
 * had executed one where it stands (membarrier, private expedited; Linux
 * 4.14).  false if the kernel refuses it (older kernel, a seccomp filter):
 * then nothing was done.  sm_os_membarrier_ok() registers the process
 * once and says whether it may be used. */
bool sm_os_membarrier_ok(void);
bool sm_os_membarrier(void);

/* The kernel's page size (4096 on x86-64). */
size_t sm_os_page_size(void);

/* Test hook: make the nth sm_os_reserve/sm_os_alloc call from now fail
 * (1 = the next one); 0 disables.  Used by the fault-injection tests. */
void sm_os_fail_nth(uint64_t n);

/* Test hook: how many sm_os_reserve and sm_os_alloc calls were made so far
 * (failed ones included), so a test can count the mappings a workload asks
 * for and then fail each one in turn. */
uint64_t sm_os_map_calls(void);

/* Test hook: bytes mapped through this layer and not unmapped, so a test
 * can check that MemStats' sys (plus the part of the heap's reservation
 * not grown into yet) accounts for every one of them. */
uint64_t sm_os_mapped_bytes(void);

#endif
