/*
 * mksizeclasses.c - generates the small-object size classes (sizeclasses.h).
 *
 * Built and run on the build host, never linked into the library:
 *
 *   cc -O2 -o mksizeclasses src/mksizeclasses.c
 *   ./mksizeclasses > src/sizeclasses.h
 *
 * tests/unit/check_sizeclasses_generated.sh does exactly this and fails if
 * the checked-in header differs from the output, so edit this file, never
 * the header.
 *
 * The policy is Go's (runtime/mksizeclasses.go).  A request of up to
 * SM_MAX_SMALL_SIZE (32 KiB) bytes is rounded up to a size class; each class
 * carves spans of a fixed number of 8 KiB pages into equal objects.  Two
 * kinds of waste are bounded:
 *
 *   round-up waste   a request smaller than its class wastes the
 *                    difference.  Past 128 bytes the spacing between
 *                    candidate sizes is at most size/8, so this is at most
 *                    12.5%.
 *   tail waste       the bytes at the end of a span too few for one more
 *                    object.  The span grows a page at a time until the
 *                    tail is at most span/8, so again at most 12.5%.
 *
 * The two multiply, so the bound on the total overhead of any request is
 * 1.125 * 1.125 = 1.266x.  In practice only one of them matters for a given
 * size: small sizes lose mainly to round-up (and, below 128 bytes, to the
 * fixed 16-byte spacing, which is where the worst "max waste" in the table
 * comes from), large sizes mainly to the tail.
 *
 * Candidate sizes are walked upward.  Whenever the walk reaches a power of
 * two the spacing is raised: size/8 from 128 bytes, 256 from 2048 bytes.
 * When a candidate needs the same page count and fits the same number of
 * objects per span as the previous class, it replaces that class instead of
 * adding one: the larger size serves more requests at no cost.  Finally each
 * class is raised to the largest size that still fits the same number of
 * objects into its span, shrinking the tail.  Class 0 is a dummy meaning
 * "not a small object".
 *
 * What differs from Go, and why:
 *
 *   - Every class is a multiple of 16.  glibc's malloc returns 16-byte
 *     aligned memory on x86-64 and programs (SSE code, long double,
 *     max_align_t) rely on it, so a drop-in replacement must too.  Go starts
 *     the walk at 8 with alignment 8 and so has 8- and 24-byte classes; here
 *     the walk starts at 16 with alignment 16, which folds 8 into 16 and 24
 *     into 32.  Go has 68 classes; this table has two fewer.
 *   - The final raise keeps a multiple of 16 up to SM_SIZE_TABLE16_MAX (1024)
 *     instead of Go's multiple of 128, so classes below 1 KiB also get their
 *     free tail bytes: Go's 640, 704 and 768 become 672, 736 and 816, with
 *     the same 12, 11 and 10 objects per page.  Above 1024 the walk keeps
 *     a multiple of 128, as Go does; the measured classes below are
 *     multiples of 16 there too, so the look-up table above 1024 has one
 *     entry per 16 bytes (Go's, one per 128).
 *   - Size 0 maps to the 16-byte class: malloc(0) returns a unique minimal
 *     object, as glibc does.
 *
 * Size to class is two table look-ups, as in Go: sm_size_to_class16 indexed
 * by (size + 15) / 16 up to 1024 bytes, sm_size_to_class_hi indexed by
 * (size - 1024 + 15) / 16 above (Go's second table has a step of 128,
 * which its classes above 1024 are multiples of; the measured classes
 * below are multiples of 16, so ours has the same step as the first:
 * 1985 bytes instead of 249).
 *
 * Object index from span offset is a multiply and a shift, not a division:
 * offset / size == (offset * divmagic) >> 32 with divmagic =
 * UINT32_MAX / size + 1 (Go's class_to_divmagic).  That identity holds only
 * for bounded offsets, so it is checked by brute force for every offset of
 * every span.
 *
 * Before printing, the generator checks the whole table (class count,
 * alignment, ordering, waste bound, magic, exactness of the look-ups) and
 * exits with status 1 and a message on stderr if anything is wrong, so a
 * bad table can never be written.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE_SHIFT 13
#define PAGE_SIZE (1u << PAGE_SHIFT)
#define MAX_SMALL_SIZE 32768u
#define MIN_ALIGN 16u
#define SMALL_SIZE_DIV 16u
#define SMALL_SIZE_MAX 1024u
#define LARGE_SIZE_DIV 128u
#define HI_TABLE_DIV 16u /* the step of the look-up above SMALL_SIZE_MAX */

/* Like Go's "number of size classes has changed": a change to the policy
 * above must be a deliberate change to this number too. */
#define EXPECTED_NUM_CLASSES 70

#define MAX_CLASSES 256 /* the look-up tables hold classes in a uint8_t */
#define NUM_CLASS16 (SMALL_SIZE_MAX / SMALL_SIZE_DIV + 1)
#define NUM_CLASS_HI ((MAX_SMALL_SIZE - SMALL_SIZE_MAX) / HI_TABLE_DIV + 1)

struct sizeclass {
	uint32_t size;     /* bytes per object */
	uint32_t npages;   /* pages per span */
	uint32_t divmagic; /* offset / size == (offset * divmagic) >> 32 */
};

static struct sizeclass classes[MAX_CLASSES];
static unsigned nclasses;
static uint8_t size_to_class16[NUM_CLASS16];
static uint8_t size_to_class_hi[NUM_CLASS_HI];

__attribute__((noreturn)) static void fail(const char *msg, unsigned cls,
                                           uint32_t value)
{
	fprintf(stderr, "mksizeclasses: %s (class %u, value %u)\n", msg, cls,
	        (unsigned)value);
	exit(1);
}

static int power_of_two(uint32_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

static uint32_t span_bytes(const struct sizeclass *c)
{
	return c->npages * PAGE_SIZE;
}

static uint32_t objects(const struct sizeclass *c)
{
	return span_bytes(c) / c->size;
}

static uint32_t tail_waste(const struct sizeclass *c)
{
	return span_bytes(c) % c->size;
}

static void add_class(uint32_t size, uint32_t npages)
{
	if (nclasses == MAX_CLASSES)
		fail("too many classes for a uint8_t look-up table", nclasses,
		     size);
	classes[nclasses].size = size;
	classes[nclasses].npages = npages;
	nclasses++;
}

/* Largest size, a multiple of the look-up granularity for its range, that
 * fits as many objects into the span as c->size does. */
static uint32_t raised_size(const struct sizeclass *c)
{
	uint32_t fit = span_bytes(c) / objects(c);
	uint32_t size = fit & ~(MIN_ALIGN - 1);

	if (size > SMALL_SIZE_MAX)
		size = fit & ~(LARGE_SIZE_DIV - 1);
	return size > c->size ? size : c->size;
}

/* Sizes real programs ask for often, each just over a class boundary of
 * the walk below, measured with an LD_PRELOAD size histogram (doc/
 * performance.md): sqlite3's page-cache buffers are a 4 KiB page plus a
 * header, 4112 to 4464 bytes, which the walk's classes put in 4864-byte
 * objects, 5 in 3 pages: 4915 bytes of span each.  redis keeps a 512-byte
 * value as a string of 518 bytes (its header and terminator), which the
 * walk puts in 576-byte objects (glibc: a 528-byte chunk), and a 4 KiB
 * value as 4102 bytes, which went in the 4224-byte class, 19 objects in 10
 * pages: 4311 bytes of span each (glibc: a 4112-byte chunk).  tcmalloc
 * tunes its class list from measured size profiles the same way.  Each one
 * becomes a class of exactly that size, in the span of at most max_pages
 * pages with the least tail, if that costs fewer span bytes per object
 * than the class that served it.  Go's largest small span is 10 pages; a
 * class just over a power of two needs more to leave little tail (4112:
 * 4.6% in 10 pages, 1.2% in 32), and since only the pages a program
 * touches become resident, a longer span costs address space, not memory. */
static const struct {
	uint32_t size, max_pages;
} measured[] = { { 528, 10 }, { 4112, 32 }, { 4224, 10 }, { 4480, 10 } };

static void add_measured(uint32_t size, uint32_t max_pages)
{
	unsigned at = 1;
	while (at < nclasses && classes[at].size < size)
		at++;
	if (at == nclasses || classes[at].size == size ||
	    size % MIN_ALIGN != 0)
		fail("measured size not between two classes", at, size);
	struct sizeclass c = { size, 1, 0 };
	for (uint32_t n = 2; n <= max_pages; n++) {
		struct sizeclass t = { size, n, 0 };
		if ((uint64_t)tail_waste(&t) * span_bytes(&c) <
		    (uint64_t)tail_waste(&c) * span_bytes(&t))
			c = t;
	}
	/* Span bytes per object, compared without division. */
	if ((uint64_t)span_bytes(&c) * objects(&classes[at]) >=
	    (uint64_t)span_bytes(&classes[at]) * objects(&c))
		fail("measured size saves nothing", at, size);
	if (nclasses == MAX_CLASSES)
		fail("too many classes for a uint8_t look-up table", nclasses,
		     size);
	for (unsigned i = nclasses; i > at; i--)
		classes[i] = classes[i - 1];
	classes[at] = c;
	nclasses++;
}

static void make_classes(void)
{
	uint32_t align = MIN_ALIGN;

	add_class(0, 0); /* class 0: not a small object */
	for (uint32_t size = align; size <= MAX_SMALL_SIZE; size += align) {
		if (power_of_two(size)) {
			if (size >= 2048)
				align = 256;
			else if (size >= 128)
				align = size / 8;
			else
				align = MIN_ALIGN;
		}
		if (!power_of_two(align) || align < MIN_ALIGN)
			fail("incorrect alignment", nclasses, align);

		/* Grow the span until the tail is at most 1/8 of it. */
		uint32_t span = PAGE_SIZE;
		while (span % size > span / 8)
			span += PAGE_SIZE;
		uint32_t npages = span / PAGE_SIZE;

		struct sizeclass *prev = &classes[nclasses - 1];
		if (nclasses > 1 && npages == prev->npages &&
		    span / size == span / prev->size) {
			prev->size = size;
			continue;
		}
		add_class(size, npages);
	}

	/* E.g. 8448 is chosen above with 6 objects in 7 pages, but 9472 also
	 * fits 6 objects in 7 pages and serves 1024 more bytes of requests. */
	for (unsigned i = 1; i < nclasses; i++)
		classes[i].size = raised_size(&classes[i]);

	for (unsigned i = 0; i < sizeof measured / sizeof measured[0]; i++)
		add_measured(measured[i].size, measured[i].max_pages);

	for (unsigned i = 1; i < nclasses; i++)
		classes[i].divmagic = UINT32_MAX / classes[i].size + 1;
}

/* The smallest class whose objects hold size bytes; malloc(0) gets the
 * smallest class.  The reference the look-up tables are built from and
 * checked against. */
static unsigned class_for(uint32_t size)
{
	if (size == 0)
		size = 1;
	for (unsigned i = 1; i < nclasses; i++)
		if (classes[i].size >= size)
			return i;
	fail("no class holds size", 0, size);
}

static void make_lookup(void)
{
	for (uint32_t i = 0; i < NUM_CLASS16; i++)
		size_to_class16[i] = (uint8_t)class_for(i * SMALL_SIZE_DIV);
	for (uint32_t i = 0; i < NUM_CLASS_HI; i++)
		size_to_class_hi[i] =
		    (uint8_t)class_for(SMALL_SIZE_MAX + i * HI_TABLE_DIV);
}

/* The same arithmetic as sm_size_to_class in the generated header. */
static unsigned lookup(uint32_t size)
{
	if (size <= SMALL_SIZE_MAX)
		return size_to_class16[(size + SMALL_SIZE_DIV - 1) /
		                       SMALL_SIZE_DIV];
	return size_to_class_hi[(size - SMALL_SIZE_MAX + HI_TABLE_DIV - 1) /
	                        HI_TABLE_DIV];
}

static void check(void)
{
	if (nclasses != EXPECTED_NUM_CLASSES)
		fail("number of size classes has changed, expected in value",
		     nclasses, EXPECTED_NUM_CLASSES);
	if (classes[0].size != 0 || classes[0].npages != 0 ||
	    classes[0].divmagic != 0)
		fail("class 0 must be empty", 0, classes[0].size);
	if (classes[nclasses - 1].size != MAX_SMALL_SIZE)
		fail("last class is not the largest small size", nclasses - 1,
		     classes[nclasses - 1].size);

	for (unsigned i = 1; i < nclasses; i++) {
		const struct sizeclass *c = &classes[i];
		uint32_t span = span_bytes(c);

		if (c->size % MIN_ALIGN != 0)
			fail("size is not a multiple of 16", i, c->size);
		if (c->size > MAX_SMALL_SIZE)
			fail("size exceeds the largest small size", i, c->size);
		if (c->size <= classes[i - 1].size)
			fail("sizes are not strictly increasing", i, c->size);
		if (c->npages == 0 || c->npages > UINT8_MAX)
			fail("page count does not fit a uint8_t", i, c->npages);
		if (objects(c) == 0 || objects(c) > UINT16_MAX)
			fail("object count does not fit a uint16_t", i,
			     objects(c));
		if (tail_waste(c) > span / 8)
			fail("tail waste exceeds 12.5%", i, tail_waste(c));

		/* Go's brute-force check of the multiply magic, over every
		 * offset in the span and one past it. */
		for (uint64_t n = 0; n <= span; n++)
			if (((n * c->divmagic) >> 32) != n / c->size)
				fail("bad 32-bit multiply magic", i, (uint32_t)n);
	}

	for (uint32_t size = 0; size <= MAX_SMALL_SIZE; size++)
		if (lookup(size) != class_for(size))
			fail("size-to-class look-up is not exact", lookup(size),
			     size);
}

static void print_comment(void)
{
	printf(" * %-5s  %-9s  %-10s  %-7s  %-10s  %-9s\n", "class", "bytes/obj",
	       "bytes/span", "objects", "tail waste", "max waste");
	uint32_t prev_size = 0;
	for (unsigned i = 1; i < nclasses; i++) {
		const struct sizeclass *c = &classes[i];
		uint32_t span = span_bytes(c);
		double max_waste =
		    (double)((c->size - prev_size - 1) * objects(c) +
		             tail_waste(c)) /
		    span;

		printf(" * %5u  %9u  %10u  %7u  %10u  %8.2f%%\n", i,
		       (unsigned)c->size, (unsigned)span, (unsigned)objects(c),
		       (unsigned)tail_waste(c), 100 * max_waste);
		prev_size = c->size;
	}
}

/* Prints element i of n initialisers, per_line to a line. */
static void print_elem(unsigned i, unsigned n, unsigned per_line,
                       unsigned value)
{
	if (i % per_line == 0)
		printf("\t");
	printf("%u,", value);
	printf(i % per_line == per_line - 1 || i == n - 1 ? "\n" : " ");
}

static void print_tables(void)
{
	printf("/* Bytes per object. */\n");
	printf("static const uint32_t sm_class_to_size[SM_NUM_SIZE_CLASSES] = "
	       "{\n");
	for (unsigned i = 0; i < nclasses; i++)
		print_elem(i, nclasses, 10, classes[i].size);
	printf("};\n\n");

	printf("/* Pages per span. */\n");
	printf("static const uint8_t sm_class_to_npages[SM_NUM_SIZE_CLASSES] = "
	       "{\n");
	for (unsigned i = 0; i < nclasses; i++)
		print_elem(i, nclasses, 10, classes[i].npages);
	printf("};\n\n");

	printf("/* Objects per span. */\n");
	printf("static const uint16_t sm_class_to_nobjs[SM_NUM_SIZE_CLASSES] = "
	       "{\n");
	for (unsigned i = 0; i < nclasses; i++)
		print_elem(i, nclasses, 10, i == 0 ? 0 : objects(&classes[i]));
	printf("};\n\n");

	printf("/* (offset * magic) >> 32 == offset / size for every offset "
	       "within a span;\n"
	       " * UINT32_MAX / size + 1.  0 for class 0. */\n");
	printf("static const uint32_t sm_class_to_divmagic[SM_NUM_SIZE_CLASSES] "
	       "= {\n");
	for (unsigned i = 0; i < nclasses; i++)
		print_elem(i, nclasses, 8, classes[i].divmagic);
	printf("};\n\n");

	printf("/* Class of sizes up to SM_SIZE_TABLE16_MAX, indexed by "
	       "(size + 15) / 16. */\n");
	printf("static const uint8_t sm_size_to_class16[SM_SIZE_TABLE16_MAX / "
	       "SM_SIZE_TABLE16_DIV + 1] = {\n");
	for (unsigned i = 0; i < NUM_CLASS16; i++)
		print_elem(i, NUM_CLASS16, 10, size_to_class16[i]);
	printf("};\n\n");

	printf("/* Class of sizes above SM_SIZE_TABLE16_MAX, indexed by\n"
	       " * (size - 1024 + 15) / 16. */\n");
	printf("static const uint8_t sm_size_to_class_hi[(SM_MAX_SMALL_SIZE - "
	       "SM_SIZE_TABLE16_MAX) /\n"
	       "                                        SM_SIZE_TABLE_HI_DIV + 1] "
	       "= {\n");
	for (unsigned i = 0; i < NUM_CLASS_HI; i++)
		print_elem(i, NUM_CLASS_HI, 10, size_to_class_hi[i]);
	printf("};\n\n");
}

static void print_header(void)
{
	printf("/* Code generated by mksizeclasses; DO NOT EDIT. */\n");
	printf("/* Rebuild: cc -O2 -o mksizeclasses src/mksizeclasses.c && "
	       "./mksizeclasses > src/sizeclasses.h */\n\n");

	printf("/*\n"
	       " * Small-object size classes; src/mksizeclasses.c explains how "
	       "they are chosen.\n"
	       " *\n"
	       " * tail waste: bytes at the end of each span that hold no "
	       "object.\n"
	       " * max waste: the worst fraction of a span lost, when every "
	       "object holds a\n"
	       " * request one byte larger than the previous class, plus the "
	       "tail.\n"
	       " *\n");
	print_comment();
	printf(" */\n");

	printf("#ifndef SM_SIZECLASSES_H\n"
	       "#define SM_SIZECLASSES_H\n\n"
	       "#include <stddef.h>\n"
	       "#include <stdint.h>\n\n");

	printf("#define SM_PAGE_SHIFT %u\n", PAGE_SHIFT);
	printf("#define SM_PAGE_SIZE (1u << SM_PAGE_SHIFT)\n");
	printf("#define SM_MAX_SMALL_SIZE %u\n", MAX_SMALL_SIZE);
	printf("#define SM_NUM_SIZE_CLASSES %u\n", nclasses);
	printf("/* The size-to-class tables: sm_size_to_class16 for sizes up to\n"
	       " * SM_SIZE_TABLE16_MAX in steps of SM_SIZE_TABLE16_DIV, sm_size_to_class_hi\n"
	       " * above it up to SM_MAX_SMALL_SIZE in steps of SM_SIZE_TABLE_HI_DIV (Go's\n"
	       " * smallSizeMax and smallSizeDiv; its largeSizeDiv is 128).  SM_MAX_SMALL_SIZE\n"
	       " * is the largest small object; above it objects are large (whole pages). */\n");
	printf("#define SM_SIZE_TABLE16_DIV %u\n", SMALL_SIZE_DIV);
	printf("#define SM_SIZE_TABLE16_MAX %u\n", SMALL_SIZE_MAX);
	printf("#define SM_SIZE_TABLE_HI_DIV %u\n\n", HI_TABLE_DIV);

	print_tables();

	printf("/* The smallest class that holds size bytes, for size <= "
	       "SM_MAX_SMALL_SIZE.\n"
	       " * Size 0 gets class 1: malloc(0) returns a unique minimal "
	       "object. */\n"
	       "static inline uint32_t sm_size_to_class(size_t size)\n"
	       "{\n"
	       "\tif (size <= SM_SIZE_TABLE16_MAX)\n"
	       "\t\treturn sm_size_to_class16[(size + SM_SIZE_TABLE16_DIV - 1) "
	       "/\n"
	       "\t\t                          SM_SIZE_TABLE16_DIV];\n"
	       "\treturn sm_size_to_class_hi[(size - SM_SIZE_TABLE16_MAX +\n"
	       "\t                             SM_SIZE_TABLE_HI_DIV - 1) /\n"
	       "\t                            SM_SIZE_TABLE_HI_DIV];\n"
	       "}\n\n"
	       "#endif\n");
}

int main(void)
{
	make_classes();
	make_lookup();
	check();
	print_header();
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("mksizeclasses: stdout");
		return 1;
	}
	return 0;
}
