/*
 * test_sizeclasses.c - checks the size-class table in src/sizeclasses.h.
 *
 * check_sizeclasses_generated.sh proves the header is what mksizeclasses
 * prints; this test proves that what it prints is right, recomputing every
 * property from the arrays alone, without trusting the generator:
 *
 *   - the number of classes, and class 0 as the "not small" dummy;
 *   - sizes: multiples of 16 (glibc's alignment), multiples of 128 above
 *     1024 (the 128-byte look-up buckets), strictly increasing, the last one
 *     exactly SM_MAX_SMALL_SIZE;
 *   - spans: object count and tail waste (at most 12.5%) recomputed from
 *     size and page count, and the comment table in the header (objects,
 *     tail waste, max waste as Go computes it) matching the arrays;
 *   - look-up: for every size 0..SM_MAX_SMALL_SIZE, sm_size_to_class gives
 *     the smallest class that holds it, not merely one that is big enough;
 *   - division magic: (offset * magic) >> 32 == offset / size for every
 *     offset in every span.
 *
 * The header is found through $srcdir (set by the automake test harness)
 * or, failing that, relative to this file's path as the compiler saw it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/sizeclasses.h"

/* Changing the policy in mksizeclasses.c must change this on purpose: it is
 * Go's 68 without the 8- and 24-byte classes, plus the four measured ones
 * (528, 4112, 4224 and 4480 bytes). */
#define EXPECTED_NUM_CLASSES 70

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t span_bytes(unsigned c)
{
	return (uint32_t)sm_class_to_npages[c] * SM_PAGE_SIZE;
}

static void test_class_count(void **state)
{
	(void)state;
	assert_int_equal(SM_NUM_SIZE_CLASSES, EXPECTED_NUM_CLASSES);
	assert_int_equal(ARRAY_LEN(sm_class_to_size), SM_NUM_SIZE_CLASSES);
	assert_int_equal(ARRAY_LEN(sm_class_to_npages), SM_NUM_SIZE_CLASSES);
	assert_int_equal(ARRAY_LEN(sm_class_to_nobjs), SM_NUM_SIZE_CLASSES);
	assert_int_equal(ARRAY_LEN(sm_class_to_divmagic), SM_NUM_SIZE_CLASSES);
	assert_int_equal(ARRAY_LEN(sm_size_to_class16),
	                 SM_SIZE_TABLE16_MAX / SM_SIZE_TABLE16_DIV + 1);
	assert_int_equal(ARRAY_LEN(sm_size_to_class_hi),
	                 (SM_MAX_SMALL_SIZE - SM_SIZE_TABLE16_MAX) /
	                         SM_SIZE_TABLE_HI_DIV +
	                     1);
	/* Class indices must fit the uint8_t look-up tables. */
	assert_true(SM_NUM_SIZE_CLASSES <= 256);

	assert_int_equal(SM_PAGE_SIZE, 8192);
	assert_int_equal(SM_MAX_SMALL_SIZE, 32768);

	assert_int_equal(sm_class_to_size[0], 0);
	assert_int_equal(sm_class_to_npages[0], 0);
	assert_int_equal(sm_class_to_nobjs[0], 0);
	assert_int_equal(sm_class_to_divmagic[0], 0);
}

static void test_sizes(void **state)
{
	(void)state;
	for (unsigned c = 1; c < SM_NUM_SIZE_CLASSES; c++) {
		uint32_t size = sm_class_to_size[c];

		if (size % 16 != 0)
			fail_msg("class %u: size %u is not a multiple of 16", c,
			         size);
		if (size > SM_SIZE_TABLE16_MAX && size % SM_SIZE_TABLE_HI_DIV != 0)
			fail_msg("class %u: size %u above %u is not a multiple "
			         "of %u",
			         c, size, SM_SIZE_TABLE16_MAX, SM_SIZE_TABLE_HI_DIV);
		if (size <= sm_class_to_size[c - 1])
			fail_msg("class %u: size %u not above class %u's %u", c,
			         size, c - 1, sm_class_to_size[c - 1]);
		if (size > SM_MAX_SMALL_SIZE)
			fail_msg("class %u: size %u above %u", c, size,
			         SM_MAX_SMALL_SIZE);
	}
	assert_int_equal(sm_class_to_size[1], 16);
	assert_int_equal(sm_class_to_size[SM_NUM_SIZE_CLASSES - 1],
	                 SM_MAX_SMALL_SIZE);
}

static void test_spans(void **state)
{
	(void)state;
	for (unsigned c = 1; c < SM_NUM_SIZE_CLASSES; c++) {
		uint32_t size = sm_class_to_size[c];
		uint32_t span = span_bytes(c);

		if (sm_class_to_npages[c] == 0)
			fail_msg("class %u: no pages", c);
		if (sm_class_to_nobjs[c] != span / size)
			fail_msg("class %u: %u objects, %u / %u is %u", c,
			         sm_class_to_nobjs[c], span, size, span / size);
		if (span % size > span / 8)
			fail_msg("class %u: tail waste %u of %u exceeds 12.5%%",
			         c, span % size, span);
	}
}

/* The header's comment table, one row per class after class 0. */
struct row {
	unsigned cls, size, span, objects, tail;
	char max_waste[32];
};

static FILE *open_header(void)
{
	char path[4096];
	const char *srcdir = getenv("srcdir");

	if (srcdir != NULL && srcdir[0] != '\0') {
		snprintf(path, sizeof(path), "%s/src/sizeclasses.h", srcdir);
	} else {
		const char *self = __FILE__;
		const char *tail = "tests/unit/test_sizeclasses.c";
		size_t prefix = strlen(self) >= strlen(tail)
		                    ? strlen(self) - strlen(tail)
		                    : 0;
		snprintf(path, sizeof(path), "%.*ssrc/sizeclasses.h",
		         (int)prefix, self);
	}
	FILE *f = fopen(path, "r");
	if (f == NULL)
		fail_msg("cannot open %s (set srcdir to the source tree)",
		         path);
	return f;
}

static void test_comment_table(void **state)
{
	(void)state;
	FILE *f = open_header();
	char line[256];
	unsigned nrows = 0;
	uint32_t prev_size = 0;

	while (fgets(line, sizeof(line), f) != NULL) {
		struct row r;
		if (sscanf(line, " * %u %u %u %u %u %31s", &r.cls, &r.size,
		           &r.span, &r.objects, &r.tail, r.max_waste) != 6)
			continue;
		nrows++;
		unsigned c = nrows;
		if (c >= SM_NUM_SIZE_CLASSES)
			fail_msg("comment table has more rows than classes");

		uint32_t size = sm_class_to_size[c];
		uint32_t span = span_bytes(c);
		uint32_t objects = span / size;
		uint32_t tail = span - objects * size;
		double max_waste =
		    (double)((size - prev_size - 1) * objects + tail) / span;
		char want[32];
		snprintf(want, sizeof(want), "%.2f%%", 100 * max_waste);
		prev_size = size;

		if (r.cls != c || r.size != size || r.span != span ||
		    r.objects != objects || r.tail != tail ||
		    strcmp(r.max_waste, want) != 0)
			fail_msg("comment row %u says class %u: %u %u %u %u %s; "
			         "arrays give %u %u %u %u %s",
			         c, r.cls, r.size, r.span, r.objects, r.tail,
			         r.max_waste, size, span, objects, tail, want);
	}
	fclose(f);
	assert_int_equal(nrows, SM_NUM_SIZE_CLASSES - 1);
}

static void test_lookup_exact(void **state)
{
	(void)state;
	assert_int_equal(sm_size_to_class16[0], 1);
	assert_int_equal(sm_size_to_class(0), 1);
	/* Never read through sm_size_to_class (1024 is in the first table),
	 * but it must agree with the entry that is. */
	assert_int_equal(sm_size_to_class_hi[0],
	                 sm_size_to_class16[ARRAY_LEN(sm_size_to_class16) - 1]);

	for (size_t size = 0; size <= SM_MAX_SMALL_SIZE; size++) {
		uint32_t c = sm_size_to_class(size);
		size_t need = size == 0 ? 1 : size;

		if (c == 0 || c >= SM_NUM_SIZE_CLASSES)
			fail_msg("size %zu: class %u out of range", size, c);
		if (sm_class_to_size[c] < need)
			fail_msg("size %zu: class %u holds only %u", size, c,
			         sm_class_to_size[c]);
		if (c > 1 && sm_class_to_size[c - 1] >= need)
			fail_msg("size %zu: class %u (%u) chosen, class %u (%u) "
			         "is smaller and fits",
			         size, c, sm_class_to_size[c], c - 1,
			         sm_class_to_size[c - 1]);
	}
}

static void test_divmagic(void **state)
{
	(void)state;
	for (unsigned c = 1; c < SM_NUM_SIZE_CLASSES; c++) {
		uint32_t size = sm_class_to_size[c];
		uint64_t magic = sm_class_to_divmagic[c];
		uint32_t span = span_bytes(c);

		for (uint32_t off = 0; off <= span; off++)
			if ((uint32_t)((off * magic) >> 32) != off / size)
				fail_msg("class %u (size %u): offset %u gives "
				         "%u, want %u",
				         c, size, off,
				         (uint32_t)((off * magic) >> 32),
				         off / size);
	}
}

/* sqlite3's page-cache buffers (a 4 KiB page plus a header: 4112 and
 * 4368-4464 bytes, measured) cost at most 4551 bytes of span each; the
 * table without its measured classes put them in 4864-byte objects, 5 in
 * 3 pages: 4915 bytes each. */
static void test_page_buffers(void **state)
{
	(void)state;
	static const uint32_t sizes[] = { 4112, 4368, 4384, 4432, 4464 };
	for (unsigned i = 0; i < ARRAY_LEN(sizes); i++) {
		uint32_t c = sm_size_to_class(sizes[i]);
		assert_true(sm_class_to_size[c] >= sizes[i]);
		assert_true(span_bytes(c) / sm_class_to_nobjs[c] <= 4551);
	}
	assert_true(span_bytes(sm_size_to_class(4112)) /
	                sm_class_to_nobjs[sm_size_to_class(4112)] <= 4312);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_class_count),
	    cmocka_unit_test(test_page_buffers),
	    cmocka_unit_test(test_sizes),
	    cmocka_unit_test(test_spans),
	    cmocka_unit_test(test_comment_table),
	    cmocka_unit_test(test_lookup_exact),
	    cmocka_unit_test(test_divmagic),
	};
	return cmocka_run_group_tests_name("sizeclasses", tests, NULL, NULL);
}
