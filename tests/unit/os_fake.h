/*
 * os_fake.h - a test-only OS layer (os_fake.c) for unit tests that link one
 * module without the rest of the allocator: it implements the metadata
 * calls of os.h over mmap and counts what is outstanding, so a test can
 * check that a module gives back everything it took, and fail on demand.
 */
#ifndef SM_TEST_OS_FAKE_H
#define SM_TEST_OS_FAKE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes and blocks obtained with sm_os_alloc and not yet freed. */
size_t os_fake_live_bytes(void);
size_t os_fake_live_blocks(void);
/* sm_os_alloc calls so far (successful or not). */
uint64_t os_fake_alloc_calls(void);
/* Make the next sm_os_alloc return exactly addr (page-aligned, with the page
 * before it free too), or NULL if that space is taken. */
void os_fake_place_next(void *addr);

#endif
