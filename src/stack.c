/*
 * stack.c - capture the caller's call stack for the heap profiler.
 *
 * The programs we are preloaded into (python3, perl, gcc, most distribution
 * binaries) are built without frame pointers, so walking the rbp chain as
 * Go does would stop after a frame or two: frames are found from the DWARF
 * call frame information every ELF object carries in .eh_frame.  The
 * reference unwinder for that is libgcc's _Unwind_Backtrace, the one C++
 * exceptions use, but it is slow for a profiler: it finds each frame's FDE,
 * parses its CIE and runs its CFA program from the function's start, and
 * restores every register, at about 1700 instructions a frame (3 us for a
 * 15-frame stack).  So we keep our own walk with a cache of rules, and
 * libgcc as the fallback for whatever the cache cannot express.
 *
 * The cached walk (x86-64).  For a return address ra, the row of the CFA
 * table in effect at ra - 1 (the call) tells how to find the caller.  On
 * x86-64 almost every row has one of these forms:
 *     CFA = rsp + k  or  rbp + k;   return address at CFA - 8;
 *     caller's rbp saved at CFA - m, or rbp unchanged;   rsp = CFA.
 * The first time an address is seen, compute_rule finds its FDE by a
 * binary search of its object's .eh_frame_hdr table (find_fde; the object
 * from _dl_find_object: no lock, no malloc), the look-up libgcc's
 * _Unwind_Find_FDE makes, which is asked instead for code outside every
 * object's table; it parses the CIE and runs the
 * CIE's and the FDE's CFA programs up to ra - 1, as libgcc does, keeping
 * only the CFA, rbp, rsp and return address rules.  The result is one of
 *     SIMPLE   the form above: (rsp or rbp, k, m);
 *     END      the return address is undefined (_start, a thread's start),
 *              or the object's table has no FDE for the address (start-up
 *              code in assembly): the stack ends after this frame, as
 *              libgcc's does;
 *     COMPLEX  anything else: a CFA expression (PLT entries, realigned
 *              stacks), a signal frame ('S' augmentation), a CFA in another
 *              register, an unknown augmentation or opcode.
 * and goes into a fixed cache (below).  The walk then costs a hash, a load
 * and a compare per frame, about 50 instructions.  A frame with no FDE
 * (code generated at run time and not registered) or a COMPLEX rule makes
 * the whole capture fall back to _Unwind_Backtrace, so the two always give
 * the same stack; the unit test compares them over many shapes of code.
 *
 * The cache: 1024 sets of two 64-bit words (16 KiB from the OS layer, made
 * by sm_stack_init, counted in the profiler's other_sys), shared by all
 * threads with no lock: each word holds the address's tag and the packed
 * rule, read and written whole with relaxed atomics, so a reader sees one
 * writer's entry or another's and never a mix.  Rules too big to pack
 * (frames of 128 KiB or more) are computed each time.  Rules of code
 * outside every loaded object (registered at run time, which may change
 * under the same address) are not cached.
 *
 * Unloading.  dlclose may put other code at a cached address.  The code of
 * the objects loaded at start-up (noted by sm_stack_boot, which the
 * profiler calls when the allocator starts) is never unloaded, and its
 * rules carry a bit that says so; a walk that used any other rule reads
 * the loader's unload count afterwards (dlpi_subs, from the first callback
 * of dl_iterate_phdr, about 160 instructions and the loader's lock) and,
 * if it changed, empties the cache and lets libgcc walk.  An object loaded
 * with dlopen before the allocator started (by another preloaded library's
 * constructor) would count as start-up code.
 *
 * Cold caches.  Between two samples the program allocates 512 KiB on
 * average and its own work evicts the cache lines a walk needs; each
 * frame's rule is then a miss, and the misses come one after another (the
 * next frame's address is known only once this frame's rule is).  So the
 * walk notes the rule lines it used, and the next walk prefetches them all
 * before it starts: samples come from few stacks, and the misses overlap.
 *
 * Reads are checked, so a wrong rule (a bug here, or wrong CFI in
 * hand-written assembly) cannot crash the program: every word read is
 * between the capture's own stack pointer and the top of the thread's
 * stack, the CFA grows strictly, and leaving those bounds makes the walk
 * fall back.  The top of the stack costs no call: glibc puts a thread's
 * descriptor (%fs:0) at the top of its stack, and the main thread's stack
 * ends at __libc_stack_end; a stack pointer that is below neither by at
 * most the stack size limit (an alternate signal stack, a coroutine's
 * stack) sends the capture to libgcc.  A thread keeps only its last walk
 * (struct memo below).
 *
 * Measured with callgrind on the development machine: a 9-frame capture
 * takes about 600 instructions by the cached walk against 15700 through
 * _Unwind_Backtrace.
 *
 * Why not libunwind (libunwind-dev, UNW_LOCAL_ONLY), whose cached fast path
 * is as quick:
 *   - libunwind.so.8 exports its own _Unwind_RaiseException, _Unwind_Resume
 *     and the rest of the C++ exception ABI.  Preloaded with us into a C
 *     program that later loads C++ code (python3 and an extension module),
 *     it comes before libgcc_s in the global scope, and every exception in
 *     the process is then thrown through libunwind's implementation, even
 *     libgcc_s's own calls.  Debian's libunwind.a is not PIC, so it cannot
 *     be linked in with its symbols hidden.
 *   - its first use opens a pipe (two descriptors the program did not ask
 *     for), which it reads and writes to validate addresses in frames
 *     without unwind information, and each thread that unwinds maps a
 *     frame cache of 256 KiB and more.
 *   - it pulls in liblzma.
 *
 * What capturing does, and when it may allocate:
 *   - the cached walk: nothing but reads of the stack and the cache, and
 *     for code loaded after start-up dl_iterate_phdr (the loader's lock, no
 *     malloc).
 *   - a rule computed: _dl_find_object (no lock, no malloc; glibc 2.35 or
 *     later), and _Unwind_Find_FDE where that finds no table (older glibc:
 *     always, through dl_iterate_phdr and dladdr, the loader's lock).
 *   - the fallback: libgcc's unwinder, which on first use binds its PLT
 *     entries and fills its register-size table once (pthread_once); for
 *     code registered at run time with __register_frame (JIT compilers) the
 *     first look-up after a registration sorts that object's FDEs into an
 *     array from malloc.  The profiler's recursion guard makes such a
 *     malloc an ordinary unsampled one; it holds none of our locks.
 * The unwinder reads the stack of the calling thread only and takes none of
 * our locks; the caller must hold none (so a malloc from inside the unwinder
 * cannot deadlock) and guards against recursion itself.  Other
 * architectures use libgcc for every capture.
 */
#include <dlfcn.h>
#include <link.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <unwind.h>

#include "os.h"
#include "stack.h"

#define SM_STACK_NOINLINE __attribute__((noinline))

/* ---- counters ---------------------------------------------------------- */

static uint64_t n_fast, n_fallback, n_miss, n_check, n_flush;

static uint64_t count(uint64_t *c)
{
    return __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

/* The count of every capture: a load and a store, not a locked add, so
 * threads sampling at once do not trade the line's ownership for it on
 * every sample; two at the same moment may count one. */
static void count_loosely(uint64_t *c)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

void sm_stack_counters(struct sm_stack_counters *out)
{
    out->fast = __atomic_load_n(&n_fast, __ATOMIC_RELAXED);
    out->fallback = __atomic_load_n(&n_fallback, __ATOMIC_RELAXED);
    out->rule_misses = __atomic_load_n(&n_miss, __ATOMIC_RELAXED);
    out->unload_checks = __atomic_load_n(&n_check, __ATOMIC_RELAXED);
    out->flushes = __atomic_load_n(&n_flush, __ATOMIC_RELAXED);
}

/* ---- libgcc's unwinder: the reference, and the fallback -------------------- */

/* libgcc's exported FDE look-up (unwind-dw2-fde.h, not installed). */
struct dwarf_eh_bases {
    void *tbase;
    void *dbase;
    void *func;
};
extern const void *_Unwind_Find_FDE(void *pc, struct dwarf_eh_bases *bases);

/* Whether libgcc can find unwind tables yet.  In a fully static program
 * the C library calls malloc from _dl_non_dynamic_init (_dl_get_origin,
 * _dl_find_object_init), before the object list that _dl_find_object and
 * dl_iterate_phdr read is set up: libgcc finds no FDE for the frame
 * _Unwind_Backtrace starts from and aborts (gcc_assert in
 * uw_init_context_1), and asking _dl_find_object while
 * _dl_find_object_init runs crashes.  A static program has no program
 * interpreter (AT_BASE is 0); for it the unwinder is ready once
 * constructors run (stack_ctor below), which the C library does after
 * that set-up.  Until then a capture records no frame (the sample still
 * counts its bytes).  A dynamic program is ready from its first
 * instruction: ld.so set everything up before it ran any code of ours.
 * (A dynamic program started as `ld.so ./prog` has AT_BASE 0 too, and
 * loses the stacks of the allocations made before our constructor.) */
static int unwinder_ready;

static bool unwinder_usable(void)
{
    if (__atomic_load_n(&unwinder_ready, __ATOMIC_ACQUIRE))
        return true;
    if (getauxval(AT_BASE) == 0)
        return false;
    __atomic_store_n(&unwinder_ready, 1, __ATOMIC_RELEASE);
    return true;
}

__attribute__((constructor)) static void stack_ctor(void)
{
    __atomic_store_n(&unwinder_ready, 1, __ATOMIC_RELEASE);
}

struct walk {
    uintptr_t *pcs;
    int max;
    int n;
    int skip;         /* frames still to leave out after the first */
    uintptr_t first;  /* return address of the first frame to report */
    bool started;
};

static _Unwind_Reason_Code collect(struct _Unwind_Context *ctx, void *arg)
{
    struct walk *w = arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);

    if (ip == 0)
        return _URC_END_OF_STACK;
    /* Our own frames come first: their addresses are in this file, so the
     * return address into the capturer's caller cannot appear among them. */
    if (!w->started) {
        if (ip != w->first)
            return _URC_NO_REASON;
        w->started = true;
    }
    /* The stack ends where the cached walk ends it (below). */
    bool root = sm_stack_is_root(ip) != 0;
    if (w->skip > 0) {
        w->skip--;
        return root ? _URC_END_OF_STACK : _URC_NO_REASON;
    }
    w->pcs[w->n++] = ip;
    return w->n < w->max && !root ? _URC_NO_REASON : _URC_END_OF_STACK;
}

/* The stack from the frame that returns to first, through libgcc. */
static SM_STACK_NOINLINE int unwind_from(uintptr_t *pcs, int max, int skip, uintptr_t first)
{
    struct walk w = { pcs, max, 0, skip, first, false };

    _Unwind_Backtrace(collect, &w);
    /* w is on this frame, so the call above is not a tail call. */
    return w.n;
}

SM_STACK_NOINLINE int sm_stack_capture_unwind(uintptr_t *pcs, int max, int skip)
{
    if (max <= 0 || !unwinder_usable())
        return 0;
    return unwind_from(pcs, max, skip > 0 ? skip : 0, (uintptr_t)__builtin_return_address(0));
}

#if defined(__x86_64__)

/* ---- frame rules from the call frame information ----------------------------- */

/* The initial stack pointer of the main thread (glibc, both linkages). */
extern void *__libc_stack_end;

/* DWARF register numbers on x86-64. */
#define DW_RBP 6
#define DW_RSP 7
#define DW_RA 16

#define DW_EH_PE_omit 0xff
#define DW_EH_PE_aligned 0x50

/* How a register is recovered in the caller, as far as we care. */
enum { REG_SAME, REG_OFFSET, REG_UNDEFINED, REG_OTHER };

struct reg_rule {
    uint8_t how;
    int64_t off;      /* REG_OFFSET: saved at CFA + off */
};

/* One row of the CFA table, reduced to what the walk needs. */
struct row {
    uint64_t cfa_reg;
    int64_t cfa_off;
    bool cfa_expr;
    struct reg_rule rbp, rsp, ra;
};

#define ROW_STACK 8
/* Deepest stack walked: the stack size limit, at most this. */
#define SM_STACK_SPAN_MAX ((uintptr_t)1 << 30)   /* DW_CFA_remember_state nesting we follow */

struct cursor {
    const uint8_t *p, *end;
    bool bad;
};

static uint8_t rd_u8(struct cursor *c)
{
    if (c->p >= c->end) {
        c->bad = true;
        return 0;
    }
    return *c->p++;
}

static uint64_t rd_fixed(struct cursor *c, size_t n)
{
    if ((size_t)(c->end - c->p) < n) {
        c->bad = true;
        c->p = c->end;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, c->p, n);   /* little-endian */
    c->p += n;
    return v;
}

/* A LEB128 number's bits; *shift and *last tell the signed reader how many
 * bits came and the last byte (its bit 6 is the sign). */
static uint64_t rd_leb(struct cursor *c, unsigned *shift, uint8_t *last)
{
    uint64_t v = 0;
    unsigned n = 0;
    uint8_t b;
    do {
        b = rd_u8(c);
        if (n < 64)
            v |= (uint64_t)(b & 0x7f) << n;
        n += 7;
    } while ((b & 0x80) && !c->bad);
    *shift = n;
    *last = b;
    return v;
}

static uint64_t rd_uleb(struct cursor *c)
{
    unsigned shift;
    uint8_t last;
    return rd_leb(c, &shift, &last);
}

static int64_t rd_sleb(struct cursor *c)
{
    unsigned shift;
    uint8_t last;
    uint64_t v = rd_leb(c, &shift, &last);
    if (shift < 64 && (last & 0x40))
        v |= ~(uint64_t)0 << shift;
    return (int64_t)v;
}

/* Step over a pointer in encoding enc; false for encodings we do not
 * follow (aligned). */
/* Read a value in format fmt (the low four bits of an encoding) into *v,
 * unsigned (the FDE's range is the one value read here); false for formats
 * we do not follow. */
static bool rd_format(struct cursor *c, uint8_t fmt, uint64_t *v)
{
    switch (fmt) {
    case 0x00: *v = rd_fixed(c, 8); break;            /* absptr */
    case 0x01: *v = rd_uleb(c); break;                /* uleb128 */
    case 0x09: *v = (uint64_t)rd_sleb(c); break;      /* sleb128 */
    case 0x02: case 0x0a: *v = rd_fixed(c, 2); break; /* (s)data2 */
    case 0x03: case 0x0b: *v = rd_fixed(c, 4); break; /* (s)data4 */
    case 0x04: case 0x0c: *v = rd_fixed(c, 8); break; /* (s)data8 */
    default: return false;
    }
    return !c->bad;
}

static bool skip_encoded(struct cursor *c, uint8_t enc)
{
    uint64_t v;
    if (enc == DW_EH_PE_omit)
        return true;
    if ((enc & 0x70) == DW_EH_PE_aligned)
        return false;
    return rd_format(c, enc & 0x0f, &v);
}

struct cie {
    uint64_t caf;     /* code alignment factor */
    int64_t daf;      /* data alignment factor */
    uint8_t fde_enc;
    bool z;           /* augmentation data has a length */
    struct cursor insns;
};

static bool parse_cie(const uint8_t *p, struct cie *ci)
{
    uint32_t len;
    memcpy(&len, p, 4);
    if (len == 0 || len == 0xffffffffu)
        return false;
    struct cursor c = { p + 4, p + 4 + len, false };
    if (rd_fixed(&c, 4) != 0)        /* CIE id */
        return false;
    uint8_t version = rd_u8(&c);
    if (version != 1 && version != 3 && version != 4)
        return false;
    const char *aug = (const char *)c.p;
    size_t auglen = strnlen(aug, (size_t)(c.end - c.p));
    if (auglen == (size_t)(c.end - c.p))
        return false;
    c.p += auglen + 1;
    if (version == 4) {
        if (rd_u8(&c) != 8 || rd_u8(&c) != 0)   /* address size, segment size */
            return false;
    }
    ci->caf = rd_uleb(&c);
    ci->daf = rd_sleb(&c);
    uint64_t ra = version == 1 ? rd_u8(&c) : rd_uleb(&c);
    if (ra != DW_RA)
        return false;
    ci->fde_enc = 0;
    ci->z = aug[0] == 'z';
    if (ci->z) {
        uint64_t n = rd_uleb(&c);
        if (c.bad || n > (uint64_t)(c.end - c.p))
            return false;
        const uint8_t *data_end = c.p + n;
        for (const char *a = aug + 1; *a; a++) {
            switch (*a) {
            case 'L': rd_u8(&c); break;
            case 'R': ci->fde_enc = rd_u8(&c); break;
            case 'P': {
                uint8_t enc = rd_u8(&c);
                if (!skip_encoded(&c, enc))
                    return false;
                break;
            }
            default:
                /* 'S' (a signal frame) and anything we do not know. */
                return false;
            }
        }
        c.p = data_end;
    } else if (auglen != 0) {
        return false;
    }
    if (c.bad)
        return false;
    ci->insns = c;
    return true;
}

static void set_reg(struct row *r, uint64_t reg, uint8_t how, int64_t off)
{
    struct reg_rule rule = { how, off };
    if (reg == DW_RBP)
        r->rbp = rule;
    else if (reg == DW_RSP)
        r->rsp = rule;
    else if (reg == DW_RA)
        r->ra = rule;
}

static void restore_reg(struct row *r, const struct row *init, uint64_t reg)
{
    if (reg == DW_RBP)
        r->rbp = init->rbp;
    else if (reg == DW_RSP)
        r->rsp = init->rsp;
    else if (reg == DW_RA)
        r->ra = init->ra;
}

struct cfa_run {
    const struct cie *ci;
    const struct row *init;   /* the row after the CIE's instructions */
    uintptr_t loc;            /* address the current row starts at */
    uintptr_t target;         /* stop once a row starts after this */
    struct row saved[ROW_STACK];
    int depth;
};

/* Run a CFA program into r while the current row starts at or before
 * run->target (as libgcc runs it while the location is below the return
 * address).  False for anything we do not follow. */
static bool run_program(struct cfa_run *run, struct cursor c, struct row *r)
{
    const struct cie *ci = run->ci;
    while (c.p < c.end && run->loc <= run->target) {
        uint8_t op = rd_u8(&c);
        uint64_t reg, delta = 0;
        switch (op >> 6) {
        case 1:
            delta = op & 0x3f;
            goto advance;
        case 2:
            set_reg(r, op & 0x3f, REG_OFFSET, (int64_t)rd_uleb(&c) * ci->daf);
            continue;
        case 3:
            if (run->init == NULL)
                return false;
            restore_reg(r, run->init, op & 0x3f);
            continue;
        default:
            break;
        }
        switch (op) {
        case 0x00:                                   /* nop */
            break;
        case 0x02: delta = rd_fixed(&c, 1); goto advance;
        case 0x03: delta = rd_fixed(&c, 2); goto advance;
        case 0x04: delta = rd_fixed(&c, 4); goto advance;
        case 0x05:                                   /* offset_extended */
            reg = rd_uleb(&c);
            set_reg(r, reg, REG_OFFSET, (int64_t)rd_uleb(&c) * ci->daf);
            break;
        case 0x06:                                   /* restore_extended */
            reg = rd_uleb(&c);
            if (run->init == NULL)
                return false;
            restore_reg(r, run->init, reg);
            break;
        case 0x07:                                   /* undefined */
            set_reg(r, rd_uleb(&c), REG_UNDEFINED, 0);
            break;
        case 0x08:                                   /* same_value */
            set_reg(r, rd_uleb(&c), REG_SAME, 0);
            break;
        case 0x09:                                   /* register */
            reg = rd_uleb(&c);
            rd_uleb(&c);
            set_reg(r, reg, REG_OTHER, 0);
            break;
        case 0x0a:                                   /* remember_state */
            if (run->depth == ROW_STACK)
                return false;
            run->saved[run->depth++] = *r;
            break;
        case 0x0b:                                   /* restore_state */
            if (run->depth == 0)
                return false;
            *r = run->saved[--run->depth];
            break;
        case 0x0c:                                   /* def_cfa */
            r->cfa_reg = rd_uleb(&c);
            r->cfa_off = (int64_t)rd_uleb(&c);
            r->cfa_expr = false;
            break;
        case 0x0d:                                   /* def_cfa_register */
            r->cfa_reg = rd_uleb(&c);
            r->cfa_expr = false;
            break;
        case 0x0e:                                   /* def_cfa_offset */
            r->cfa_off = (int64_t)rd_uleb(&c);
            break;
        case 0x0f:                                   /* def_cfa_expression */
            delta = rd_uleb(&c);
            if (delta > (uint64_t)(c.end - c.p))
                return false;
            c.p += delta;
            r->cfa_expr = true;
            break;
        case 0x10:                                   /* expression */
        case 0x16:                                   /* val_expression */
            reg = rd_uleb(&c);
            delta = rd_uleb(&c);
            if (delta > (uint64_t)(c.end - c.p))
                return false;
            c.p += delta;
            set_reg(r, reg, REG_OTHER, 0);
            break;
        case 0x11:                                   /* offset_extended_sf */
            reg = rd_uleb(&c);
            set_reg(r, reg, REG_OFFSET, rd_sleb(&c) * ci->daf);
            break;
        case 0x12:                                   /* def_cfa_sf */
            r->cfa_reg = rd_uleb(&c);
            r->cfa_off = rd_sleb(&c) * ci->daf;
            r->cfa_expr = false;
            break;
        case 0x13:                                   /* def_cfa_offset_sf */
            r->cfa_off = rd_sleb(&c) * ci->daf;
            break;
        case 0x14:                                   /* val_offset */
            reg = rd_uleb(&c);
            rd_uleb(&c);
            set_reg(r, reg, REG_OTHER, 0);
            break;
        case 0x15:                                   /* val_offset_sf */
            reg = rd_uleb(&c);
            rd_sleb(&c);
            set_reg(r, reg, REG_OTHER, 0);
            break;
        case 0x2e:                                   /* GNU_args_size */
            rd_uleb(&c);
            break;
        case 0x2f:                                   /* GNU_negative_offset_extended */
            reg = rd_uleb(&c);
            set_reg(r, reg, REG_OFFSET, -((int64_t)rd_uleb(&c) * ci->daf));
            break;
        default:                                     /* set_loc, vendor ops */
            return false;
        }
        if (c.bad)
            return false;
        continue;
    advance:
        if (c.bad)
            return false;
        run->loc += delta * ci->caf;
    }
    return !c.bad;
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
/* The FDE that may cover a, from the binary search table of the
 * .eh_frame_hdr of a's object (found by _dl_find_object: no lock, no
 * malloc), the look-up libgcc's _Unwind_Find_FDE makes too: doing it here
 * leaves libgcc's code and unwind tables unread, 44 KiB of a program's
 * resident memory, unless a capture falls back to it.  *func is the
 * FDE's first address; the caller checks its range.  NULL, with *other
 * set, when the object has no such table or one laid out other than as
 * the linker writes it (then _Unwind_Find_FDE looks); NULL alone when no
 * FDE starts at or below a.  *end: the end of a's object. */
static const uint8_t *find_fde(uintptr_t a, uintptr_t *func, bool *other, uintptr_t *end)
{
    struct dl_find_object fo;
    *other = true;
    if (_dl_find_object((void *)a, &fo) != 0 || fo.dlfo_eh_frame == NULL)
        return NULL;
    *end = (uintptr_t)fo.dlfo_map_end;
    const uint8_t *hdr = fo.dlfo_eh_frame;
    /* version 1; eh_frame_ptr 4 bytes; fde_count udata4; table of
     * datarel sdata4 pairs (initial location, FDE), sorted. */
    if (hdr[0] != 1 || (hdr[1] & 0x0f) != 0x0b || hdr[2] != 0x03 || hdr[3] != 0x3b)
        return NULL;
    *other = false;
    uint32_t n;
    memcpy(&n, hdr + 8, 4);
    const int32_t *t = (const int32_t *)(const void *)(hdr + 12);
    intptr_t off = (intptr_t)(a - (uintptr_t)hdr);
    if (n == 0 || off < t[0])
        return NULL;
    uint32_t lo = 0, hi = n;   /* t[2 lo] <= off, t[2 hi] > off or hi == n */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t[2 * mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    *func = (uintptr_t)hdr + (intptr_t)t[2 * lo];
    return hdr + (intptr_t)t[2 * lo + 1];
}
#else
static const uint8_t *find_fde(uintptr_t a, uintptr_t *func, bool *other, uintptr_t *end)
{
    (void)a;
    (void)func;
    (void)end;
    *other = true;
    return NULL;
}
#endif

/* Is the return address ra the x86-64 Linux signal trampoline (mov
 * $15, %rax; syscall), which libgcc unwinds without an FDE? */
static bool is_sigreturn(uintptr_t ra, uintptr_t end)
{
    static const uint8_t code[9] = { 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05 };
    return ra + sizeof code <= end && memcmp((const void *)ra, code, sizeof code) == 0;
}

/* The rule of a frame at a, which no FDE covers: in an object whose table
 * has none for a (start-up code in assembly, like ld.so's _dl_start_user;
 * other false, end the object's end), libgcc reports the frame and stops
 * there, unless it is the signal trampoline.  False: no rule. */
static bool rule_without_fde(uintptr_t a, bool other, uintptr_t end, struct sm_frame_rule *out)
{
    if (other || is_sigreturn(a + 1, end))
        return false;
    out->kind = SM_FRAME_END;
    return true;
}

/* ---- where a program's stacks begin -----------------------------------------
 * Below main are the C library's start-up frames (__libc_start_call_main,
 * __libc_start_main, _start), below a thread's start routine start_thread
 * and clone3.  Walking through them reads the C library's unwind tables,
 * and the kernel maps the file 64 KiB around every page read (fault-
 * around): a program whose samples pass through no other libc code kept
 * 64 KiB of libc's tables resident for the main thread's start-up frames
 * and 64 more for its threads', for frames nobody looks for in a profile
 * (Go's stacks end at runtime.main and goexit).  So a stack ends at the
 * frame that called main or the thread's start routine (that frame is
 * still recorded, the ones below are not):
 *   - main's caller: the return address is followed by `mov %eax,%edi;
 *     call exit` (main's result goes to exit), read from code that ran;
 *   - a thread's: every thread pthread_create starts returns to the same
 *     place in start_thread; the worker thread notes it when it starts
 *     (sm_stack_note_thread_root).
 * Where neither is recognised (another C library, a thread started some
 * other way), the walk goes on to the end as before. */
static uintptr_t thread_root;   /* return address into start_thread; 0: unknown */

void sm_stack_note_thread_root(uintptr_t ra)
{
    __atomic_store_n(&thread_root, ra, __ATOMIC_RELAXED);
}

static bool in_boot_object(uintptr_t a);

/* ra: the return address of a call of main from the C library? */
static bool is_main_return(uintptr_t ra)
{
    static const uint8_t code[3] = { 0x89, 0xc7, 0xe8 };   /* mov %eax,%edi; call rel32 */
    if (!in_boot_object(ra) || !in_boot_object(ra + 6))
        return false;   /* not code that was there at start-up */
    if (memcmp((const void *)ra, code, sizeof code) != 0)
        return false;
    int32_t rel;
    memcpy(&rel, (const void *)(ra + 3), 4);
    return ra + 7 + (uintptr_t)(intptr_t)rel == (uintptr_t)&exit;
}

int sm_stack_is_root(uintptr_t ra)
{
    uintptr_t t = __atomic_load_n(&thread_root, __ATOMIC_RELAXED);
    return (t != 0 && ra == t) || is_main_return(ra);
}

/* Compute the rule of the frame whose pc is at address a (a return
 * address minus one).  Returns false if a has no FDE. */
static bool compute_rule(uintptr_t a, struct sm_frame_rule *out)
{
    if (sm_stack_is_root(a + 1)) {
        memset(out, 0, sizeof *out);
        out->kind = SM_FRAME_END;
        return true;
    }
    uintptr_t func = 0, end = 0;
    bool other;
    const uint8_t *fde = find_fde(a, &func, &other, &end);
    if (other) {
        struct dwarf_eh_bases bases;
        fde = _Unwind_Find_FDE((void *)a, &bases);
        func = (uintptr_t)bases.func;
    }

    memset(out, 0, sizeof *out);
    if (fde == NULL)
        return rule_without_fde(a, other, end, out);
    out->kind = SM_FRAME_COMPLEX;

    uint32_t len, cie_delta;
    memcpy(&len, fde, 4);
    if (len == 0xffffffffu || len < 8)
        return true;
    memcpy(&cie_delta, fde + 4, 4);
    struct cie ci;
    if (!parse_cie(fde + 4 - cie_delta, &ci))
        return true;

    struct cursor c = { fde + 8, fde + 4 + len, false };
    if (!skip_encoded(&c, ci.fde_enc))
        return true;
    /* The FDE's range: a past it is in no FDE (the table gave the last
     * one that starts below a). */
    uint64_t range;
    if (!rd_format(&c, ci.fde_enc & 0x0f, &range))
        return true;
    if (a - func >= range) {
        out->kind = 0;
        return rule_without_fde(a, other, end, out);
    }
    if (ci.z) {
        uint64_t n = rd_uleb(&c);
        if (c.bad || n > (uint64_t)(c.end - c.p))
            return true;
        c.p += n;
    }

    struct row init, r;
    memset(&r, 0, sizeof r);
    r.cfa_reg = DW_RSP;
    struct cfa_run run = { &ci, NULL, func, a, {{0}}, 0 };
    if (!run_program(&run, ci.insns, &r))
        return true;
    init = r;
    run.init = &init;
    run.depth = 0;
    if (!run_program(&run, c, &r))
        return true;

    if (r.cfa_expr || (r.cfa_reg != DW_RSP && r.cfa_reg != DW_RBP))
        return true;
    if (r.ra.how == REG_UNDEFINED) {
        out->kind = SM_FRAME_END;
        return true;
    }
    if (r.ra.how != REG_OFFSET || r.ra.off != -8 || r.rsp.how != REG_SAME)
        return true;
    if (r.cfa_off < 8 || r.cfa_off > (int64_t)UINT32_MAX)
        return true;
    if (r.rbp.how == REG_OFFSET) {
        if (r.rbp.off > -16 || r.rbp.off < -(int64_t)UINT32_MAX)
            return true;
        out->rbp_at = (uint32_t)-r.rbp.off;
    } else if (r.rbp.how != REG_SAME) {
        return true;
    }
    out->kind = SM_FRAME_SIMPLE;
    out->cfa_rbp = r.cfa_reg == DW_RBP;
    out->cfa_off = (uint32_t)r.cfa_off;
    return true;
}

/* ---- the rule cache ---------------------------------------------------------
 * Two-way set associative, 1024 sets.  One 64-bit word a slot, read and
 * written whole with relaxed atomics, so a reader sees one writer's entry
 * or another's, never a mix:
 *   bits 0-1   kind (0: empty)
 *   bit  2     CFA from rbp
 *   bit  3     the address is in an object loaded at start-up
 *   bits 4-17  CFA offset / 8 (frames under 128 KiB)
 *   bits 18-26 rbp save offset / 8
 *   bits 27-63 tag: the address >> 10
 * The set index mixes the address's low 10 bits with a hash of the tag, so
 * the tag and the set together name the address exactly.  Sets are spread
 * by the hash, so each rule is most likely on a page of its own: 16 KiB
 * (2048 rules) rather than 64 KiB keeps what a small program's first
 * samples make resident at 4 pages, and a large one that walks through
 * more return addresses only computes some rules again. */
#define SET_BITS 10
#define NSETS ((size_t)1 << SET_BITS)
#define NSLOTS (2 * NSETS)
#define TAG_SHIFT 27
#define CACHEABLE_BITS 47
#define W_FROM_RBP ((uint64_t)1 << 2)
#define W_BOOT ((uint64_t)1 << 3)
#define W_CFA_SHIFT 4
#define W_CFA_BITS 14
#define W_RBP_SHIFT 18
#define W_RBP_BITS 9
_Static_assert(W_RBP_SHIFT + W_RBP_BITS == TAG_SHIFT && 64 - TAG_SHIFT == CACHEABLE_BITS - SET_BITS,
               "the rule word's fields fill it exactly");
/* Code of the objects loaded at start-up, which are never unloaded. */
#define BOOT_MAX 64

static uint64_t *rule_cache;         /* NSLOTS words from the OS layer */
static uint64_t cache_subs;          /* dlpi_subs the cache is valid for */
static uintptr_t stack_span;         /* deepest stack we walk, bytes */
static int init_state;               /* 0, 1 in progress, 2 done */
static struct {
    uintptr_t lo, hi;
} boot_text[BOOT_MAX];               /* written once, before nboot */
static int nboot;                    /* entries of boot_text (atomic) */
static int boot_state;               /* 0, 1 in progress, 2 done */
/* Sets the last walk used, any thread's: the next walk prefetches them. */
#define RECENT_MAX 16
static uint64_t *recent[RECENT_MAX];

/* ---- the thread's last walk -------------------------------------------------
 * A thread's next sample is most often taken on the stack of its last one
 * (a loop that allocates), so each thread keeps its last complete walk
 * through start-up code when every frame in it found its caller from rsp
 * (code without frame pointers, which is most code built with -O2): then
 * where each return address was read, as an offset from the first stack
 * pointer, is fixed by the return addresses before it.  The next walk
 * from the same return address reads the words at those offsets: if each
 * is the return address the last walk found there, it would follow the
 * same rules to the same words (the rule of start-up code is a function of
 * the address alone), so its frames are the last walk's, at a load and a
 * compare a frame instead of a look-up, a decode and the checks (about 60
 * instructions).  Every word read is still between the stack pointer and
 * the stack's top.  The capture then says so through
 * sm_stack_capture_id, which lets the profiler reuse the bucket it found
 * for those frames.  Emptying the cache (an unload, or a test's rule)
 * bumps memo_gen, which retires every thread's memo. */
/* Frames a memo holds: most sampled stacks are shorter, and the memo is in
 * the static TLS block (initial-exec, as the allocator's thread-locals),
 * whose spare room a library loaded with dlopen must fit in. */
#define MEMO_MAX 32
enum { MEMO_END_RULE, MEMO_END_MAX, MEMO_END_ZERO };
struct memo {
    uint64_t gen;                    /* memo_gen when recorded; 0: none */
    uint64_t seq;                    /* memos recorded on this thread: the
                                        last one's id */
    int max, skip;                   /* the capture's */
    int n;                           /* frames visited, pc[0..n) */
    int end;                         /* how the walk ended, MEMO_END_* */
    uint32_t last_at;                /* the last word read (the 0 of
                                        MEMO_END_ZERO); at[] <= last_at */
    uintptr_t pc[MEMO_MAX];
    uint32_t at[MEMO_MAX];           /* pc[i] was read at sp0 + 8 * at[i], i > 0 */
};
static __thread struct memo tls_memo __attribute__((tls_model("initial-exec")));
static uint64_t memo_gen = 1;        /* atomic */

static void memo_retire_all(void)
{
    __atomic_add_fetch(&memo_gen, 1, __ATOMIC_ACQ_REL);
}

static uint64_t *set_of(uintptr_t a)
{
    uint64_t tag = a >> SET_BITS;
    size_t set = ((a & (NSETS - 1)) ^ ((tag * 0x9e3779b97f4a7c15ull) >> (64 - SET_BITS))) & (NSETS - 1);
    return &rule_cache[2 * set];
}

static bool rule_pack(uintptr_t a, const struct sm_frame_rule *r, bool boot, uint64_t *w)
{
    if ((a >> CACHEABLE_BITS) != 0)
        return false;
    *w = ((uint64_t)(a >> SET_BITS) << TAG_SHIFT) | (boot ? W_BOOT : 0) | r->kind;
    if (r->kind != SM_FRAME_SIMPLE)
        return true;
    if ((r->cfa_off & 7) || (r->cfa_off >> 3) >= (1u << W_CFA_BITS) ||
        (r->rbp_at & 7) || (r->rbp_at >> 3) >= (1u << W_RBP_BITS))
        return false;
    *w |= ((uint64_t)(r->rbp_at >> 3) << W_RBP_SHIFT) | ((uint64_t)(r->cfa_off >> 3) << W_CFA_SHIFT) |
          (r->cfa_rbp ? W_FROM_RBP : 0);
    return true;
}

static bool in_boot_object(uintptr_t a)
{
    int n = __atomic_load_n(&nboot, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++)
        if (a >= boot_text[i].lo && a < boot_text[i].hi)
            return true;
    return false;
}

/* Is a inside a loaded object (not code registered at run time, whose
 * unwind information may change under the same address)? */
static bool in_loaded_object(uintptr_t a)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    struct dl_find_object fo;
    return _dl_find_object((void *)a, &fo) == 0;
#else
    Dl_info info;
    return dladdr((void *)a, &info) != 0;
#endif
}

/* The cached word for address a, or 0. */
static inline uint64_t cache_lookup(const uint64_t *set, uintptr_t a)
{
    uint64_t tag = a >> SET_BITS;
    uint64_t w = __atomic_load_n(&set[0], __ATOMIC_RELAXED);
    if ((w >> TAG_SHIFT) == tag && (w & 3) != 0)
        return w;
    w = __atomic_load_n(&set[1], __ATOMIC_RELAXED);
    if ((w >> TAG_SHIFT) == tag && (w & 3) != 0)
        return w;
    return 0;
}

/* Not in the cache: compute the rule and cache it if it fits.  Returns
 * whether a is in an object loaded at start-up. */
static SM_STACK_NOINLINE bool rule_miss(uintptr_t a, uint64_t *set, struct sm_frame_rule *r)
{
    uint64_t misses = count(&n_miss);
    if (!compute_rule(a, r)) {
        r->kind = SM_FRAME_COMPLEX;   /* no FDE: JIT code without registration, or garbage */
        return false;
    }
    bool boot = in_boot_object(a);
    uint64_t w;
    if (rule_pack(a, r, boot, &w) && (boot || in_loaded_object(a))) {
        /* An empty way, else either, by the miss count's low bit. */
        uint64_t w0 = __atomic_load_n(&set[0], __ATOMIC_RELAXED);
        uint64_t w1 = __atomic_load_n(&set[1], __ATOMIC_RELAXED);
        int way = w0 == 0 ? 0 : w1 == 0 ? 1 : (int)(misses & 1);
        __atomic_store_n(&set[way], w, __ATOMIC_RELAXED);
    }
    return boot;
}

int sm_stack_rule(uintptr_t pc, struct sm_frame_rule *r)
{
    return compute_rule(pc, r) ? 0 : -1;
}

void sm_stack_cache_set(uintptr_t pc, const struct sm_frame_rule *r)
{
    uint64_t w;
    if (rule_cache == NULL || !rule_pack(pc, r, in_boot_object(pc), &w))
        return;
    uint64_t *set = set_of(pc);
    uint64_t w1 = __atomic_load_n(&set[1], __ATOMIC_RELAXED);
    int way = (w1 >> TAG_SHIFT) == (uint64_t)(pc >> SET_BITS) && (w1 & 3) != 0 ? 1 : 0;
    __atomic_store_n(&set[way], w, __ATOMIC_RELAXED);
    memo_retire_all();
}

/* ---- invalidation: dlclose may put other code at a cached address -----------
 * Only code loaded later can be unloaded, so a walk through nothing else
 * (most walks, in most programs) needs no check.  One that used a rule
 * for such code checks after the walk, and if anything was unloaded since
 * the cache was last emptied, empties it and lets libgcc walk instead. */

static int subs_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
        *(uint64_t *)arg = info->dlpi_subs;
    return 1;
}

/* True if the cache was emptied: something was unloaded. */
static bool check_unloads(void)
{
    uint64_t subs = 0;
    count(&n_check);
    dl_iterate_phdr(subs_cb, &subs);
    if (subs == __atomic_load_n(&cache_subs, __ATOMIC_ACQUIRE))
        return false;
    for (size_t i = 0; i < NSLOTS; i++)
        __atomic_store_n(&rule_cache[i], 0, __ATOMIC_RELAXED);
    memo_retire_all();
    __atomic_store_n(&cache_subs, subs, __ATOMIC_RELEASE);
    count(&n_flush);
    return true;
}

static int boot_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    int *n = arg;
    for (int i = 0; i < info->dlpi_phnum && *n < BOOT_MAX; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            boot_text[*n].lo = info->dlpi_addr + ph->p_vaddr;
            boot_text[*n].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            (*n)++;
        }
    }
    return 0;
}

void sm_stack_boot(void)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&boot_state, &expected, 1, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    int n = 0;
    dl_iterate_phdr(boot_cb, &n);
    __atomic_store_n(&nboot, n, __ATOMIC_RELEASE);
    __atomic_store_n(&boot_state, 2, __ATOMIC_RELEASE);
}

/* ---- the walk ------------------------------------------------------------------ */

/* Top of the stack sp is on, or 0 if it is on none we know (an alternate
 * signal stack, a coroutine's): glibc puts a thread's descriptor (%fs:0)
 * at the top of its stack; the main thread's stack ends at
 * __libc_stack_end.  Everything between sp and the top is mapped. */
static uintptr_t stack_top(uintptr_t sp)
{
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    if (sp < tp && tp - sp <= stack_span)
        return tp;
    uintptr_t end = (uintptr_t)__libc_stack_end;
    if (sp < end && end - sp <= stack_span)
        return end;
    return 0;
}

/* The last walk again, if the stack still holds its return addresses
 * where it found them: the number of frames, or -1.  pcs NULL: the caller
 * has them already (they are the frames of the capture with this memo's
 * id), and nothing is copied. */
__attribute__((no_sanitize_address, no_sanitize_thread))
static int walk_again(const struct memo *m, uintptr_t *pcs, uintptr_t sp, uintptr_t hi)
{
    if (hi - sp < ((uintptr_t)m->last_at + 1) * 8)
        return -1;
    const uintptr_t *base = (const uintptr_t *)sp;
    for (int i = 1; i < m->n; i++)
        if (base[m->at[i]] != m->pc[i])
            return -1;
    if (m->end == MEMO_END_ZERO && base[m->last_at] != 0)
        return -1;
    int n = m->n - m->skip;
    if (n < 0)
        n = 0;
    if (pcs != NULL)
        memcpy(pcs, m->pc + m->skip, (size_t)n * sizeof *pcs);
    return n;
}

/* The thread's memo, if it is current and was made from the frame that
 * returns to pc with this max and skip, and the stack still holds its
 * frames: see walk_again.  Apart from walk so that a sample on the stack
 * of the last one (most samples) does not pay walk's prologue. */
__attribute__((no_sanitize_address, no_sanitize_thread))
static inline int walk_memo(uintptr_t *pcs, int max, int skip, uintptr_t pc, uintptr_t sp, uint64_t known,
                            uint64_t *id)
{
    const struct memo *m = &tls_memo;
    if (m->pc[0] != pc || m->gen != __atomic_load_n(&memo_gen, __ATOMIC_ACQUIRE) || m->max != max ||
        m->skip != skip)
        return -1;   /* m->gen != 0: made by a walk, after init */
    uintptr_t hi = stack_top(sp);
    if (hi == 0)
        return -1;
    int n = walk_again(m, m->seq == known ? NULL : pcs, sp, hi);
    if (n >= 0)
        *id = m->seq;
    return n;
}

/* Walk from the frame that returns to pc with stack pointer sp and frame
 * pointer bp, by cached rules.  Returns the number of frames, or -1 if a
 * frame needs libgcc or an address to read is not on the stack.  Either
 * way, a walk that used a rule for code loaded after start-up then checks
 * for unloaded code, so a stale rule that sent it astray goes too.  *id is
 * the thread's memo of these frames (see struct memo), or 0. */
__attribute__((no_sanitize_address, no_sanitize_thread))
static int walk(uintptr_t *pcs, int max, int skip, uintptr_t pc, uintptr_t sp, uintptr_t bp,
                uint64_t *id)
{
    *id = 0;
    if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2 || rule_cache == NULL)
        return -1;
    uintptr_t hi = stack_top(sp);
    if (hi == 0)
        return -1;
    struct memo *m = &tls_memo;
    uint64_t gen = __atomic_load_n(&memo_gen, __ATOMIC_ACQUIRE);
    const uintptr_t sp0 = sp;
    const int skip0 = skip;
    bool late_code = false;   /* a rule for code that may be unloaded was used */
    bool flat = true;         /* every CFA came from rsp */
    int end = MEMO_END_ZERO;
    uint32_t last_at = 0;     /* where pc was read */
    uintptr_t step_pc[MEMO_MAX];
    uint32_t step_at[MEMO_MAX];
    /* Samples come from few stacks: fetch the lines the last walk needed
     * now, at once, instead of one after another as the walk reaches them. */
    for (int i = 0; i < RECENT_MAX; i++) {
        uint64_t *r = __atomic_load_n(&recent[i], __ATOMIC_RELAXED);
        if (r == NULL)
            break;
        __builtin_prefetch(r);
    }
    int n = 0, depth = 0, k = 0;
    /* Checked here too, not only when a rule is computed: a rule for it
     * may have been cached before the root was known. */
    const uintptr_t root = __atomic_load_n(&thread_root, __ATOMIC_RELAXED);
    while (pc != 0) {
        if (k < MEMO_MAX) {
            step_pc[k] = pc;
            step_at[k] = last_at;
        }
        k++;
        if (skip > 0) {
            skip--;
        } else {
            pcs[n++] = pc;
            if (n == max) {
                end = MEMO_END_MAX;
                break;
            }
        }
        if (pc == root) {
            end = MEMO_END_RULE;
            break;
        }
        uintptr_t a = pc - 1, cfa_off, rbp_at;
        bool from_rbp;
        uint64_t *set = set_of(a);
        if (depth < RECENT_MAX) {
            /* Stored only when it changed: threads sampling the same
             * stacks then share the line instead of trading it. */
            if (__atomic_load_n(&recent[depth], __ATOMIC_RELAXED) != set)
                __atomic_store_n(&recent[depth], set, __ATOMIC_RELAXED);
            depth++;
        }
        uint64_t w = cache_lookup(set, a);
        if (w != 0) {
            late_code |= (w & W_BOOT) == 0;
            if ((w & 3) == SM_FRAME_END) {
                end = MEMO_END_RULE;
                break;
            }
            if ((w & 3) != SM_FRAME_SIMPLE)
                goto give_up;
            from_rbp = (w & W_FROM_RBP) != 0;
            cfa_off = ((w >> W_CFA_SHIFT) & ((1u << W_CFA_BITS) - 1)) << 3;
            rbp_at = ((w >> W_RBP_SHIFT) & ((1u << W_RBP_BITS) - 1)) << 3;
        } else {
            struct sm_frame_rule r;
            late_code |= !rule_miss(a, set, &r);
            if (r.kind == SM_FRAME_END) {
                end = MEMO_END_RULE;
                break;
            }
            if (r.kind != SM_FRAME_SIMPLE)
                goto give_up;
            from_rbp = r.cfa_rbp;
            cfa_off = r.cfa_off;
            rbp_at = r.rbp_at;
        }
        flat &= !from_rbp;
        uintptr_t cfa = (from_rbp ? bp : sp) + cfa_off;
        if (cfa < sp + 8 || cfa > hi || (cfa & 7))
            goto give_up;
        if (rbp_at != 0) {
            uintptr_t at = cfa - rbp_at;
            if (at < sp || at > cfa - 16)
                goto give_up;
            bp = *(const uintptr_t *)at;
        }
        pc = *(const uintptr_t *)(cfa - 8);
        sp = cfa;
        last_at = (uint32_t)((cfa - 8 - sp0) >> 3);
    }
    if (late_code && check_unloads())
        return -1;
    if (!late_code && flat && k <= MEMO_MAX && k > 0) {
        /* A signal handler's walk while this is written sees no memo, and
         * if it writes one itself, neither is kept. */
        uint64_t seq = m->seq + 1;
        m->seq = seq;
        m->gen = 0;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        memcpy(m->pc, step_pc, (size_t)k * sizeof *step_pc);
        memcpy(m->at, step_at, (size_t)k * sizeof *step_at);
        m->n = k;
        m->max = max;
        m->skip = skip0;
        m->end = end;
        m->last_at = last_at;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (m->seq == seq) {
            m->gen = gen;
            *id = seq;
        } else {
            m->gen = 0;
        }
    }
    return n;
give_up:
    if (late_code)
        check_unloads();
    return -1;
}

/* The capture, from the frame fp of the exported function that called it. */
static inline __attribute__((always_inline)) int capture(uintptr_t *pcs, int max, int skip,
                                                         uint64_t known, uint64_t *id,
                                                         const uintptr_t *fp)
{
    *id = 0;
    if (max <= 0 || !unwinder_usable())
        return 0;
    if (skip < 0)
        skip = 0;
    uintptr_t pc = fp[1], sp = (uintptr_t)(fp + 2), bp = fp[0];
    int n = walk_memo(pcs, max, skip, pc, sp, known, id);
    if (n < 0)
        n = walk(pcs, max, skip, pc, sp, bp, id);
    if (n >= 0) {
        count_loosely(&n_fast);
        return n;
    }
    count(&n_fallback);
    return unwind_from(pcs, max, skip, pc);
}

/* Asking for the frame address gives these functions a frame pointer, so
 * their caller's registers are at known places. */
SM_STACK_NOINLINE int sm_stack_capture(uintptr_t *pcs, int max, int skip)
{
    uint64_t id;
    return capture(pcs, max, skip, 0, &id, __builtin_frame_address(0));
}

SM_STACK_NOINLINE int sm_stack_capture_id(uintptr_t *pcs, int max, int skip, uint64_t known,
                                          uint64_t *id)
{
    return capture(pcs, max, skip, known, id, __builtin_frame_address(0));
}

size_t sm_stack_sys(void)
{
    return __atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2 && rule_cache != NULL
               ? NSLOTS * sizeof *rule_cache : 0;
}

void sm_stack_init(void)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&init_state, &expected, 1, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        struct rlimit rl;
        uintptr_t span = (uintptr_t)8 << 20;
        if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur > span)
            span = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > SM_STACK_SPAN_MAX
                       ? SM_STACK_SPAN_MAX : (uintptr_t)rl.rlim_cur;
        stack_span = span;
        rule_cache = sm_os_alloc(NSLOTS * sizeof *rule_cache);
        uint64_t subs = 0;
        dl_iterate_phdr(subs_cb, &subs);
        __atomic_store_n(&cache_subs, subs, __ATOMIC_RELAXED);
        __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
    }
    /* libgcc is not warmed up: the cached walk finds FDEs itself
     * (find_fde), and a program whose frames all have simple rules never
     * reads libgcc's pages.  The first fallback binds its symbols and lets
     * it set up its register table, with none of our locks held. */
    uintptr_t pcs[2];
    (void)sm_stack_capture(pcs, 2, 0);
}

#else /* not x86-64: libgcc for every capture */

SM_STACK_NOINLINE int sm_stack_capture(uintptr_t *pcs, int max, int skip)
{
    if (max <= 0 || !unwinder_usable())
        return 0;
    count(&n_fallback);
    return unwind_from(pcs, max, skip > 0 ? skip : 0, (uintptr_t)__builtin_return_address(0));
}

SM_STACK_NOINLINE int sm_stack_capture_id(uintptr_t *pcs, int max, int skip, uint64_t known,
                                          uint64_t *id)
{
    (void)known;
    *id = 0;
    if (max <= 0 || !unwinder_usable())
        return 0;
    count(&n_fallback);
    return unwind_from(pcs, max, skip > 0 ? skip : 0, (uintptr_t)__builtin_return_address(0));
}

int sm_stack_rule(uintptr_t pc, struct sm_frame_rule *r)
{
    (void)pc;
    memset(r, 0, sizeof *r);
    return -1;
}

void sm_stack_cache_set(uintptr_t pc, const struct sm_frame_rule *r)
{
    (void)pc;
    (void)r;
}

size_t sm_stack_sys(void)
{
    return 0;
}

void sm_stack_boot(void)
{
}

void sm_stack_init(void)
{
    uintptr_t pcs[4];
    (void)sm_stack_capture(pcs, 4, 0);
}

void sm_stack_note_thread_root(uintptr_t ra)
{
    (void)ra;
}

int sm_stack_is_root(uintptr_t ra)
{
    (void)ra;
    return 0;
}

#endif
