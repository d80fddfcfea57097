/*
 * profproto.c - write a heap profile in pprof's profile.proto format.
 *
 * The format (github.com/google/pprof, proto/profile.proto) is one
 * protobuf message, Profile, compressed with gzip.  What we put in it is
 * what Go's runtime/pprof writes for a heap profile (protomem.go):
 *
 *   sample_type   alloc_objects/count, alloc_space/bytes,
 *                 inuse_objects/count, inuse_space/bytes (this order)
 *   sample        one per record: its location ids, leaf first; the four
 *                 values scaled as below; a numeric label "bytes" with the
 *                 mean object size, as Go adds
 *   location      one per distinct PC, with its address, its mapping and
 *                 one line naming its function, when a symbol covers it
 *   function      one per distinct function name: name and system_name
 *                 both the symbol as the file spells it (pprof demangles)
 *   mapping       one per executable file-backed region of /proc/self/maps,
 *                 with address range, file offset, file name and GNU build
 *                 id; has_functions when its file's symbol table was read
 *                 (symbolize.c), so pprof shows those names without the
 *                 binaries and does not replace them (a mapping whose file
 *                 has no symbol table is left to pprof, as before)
 *   string_table  "" first, then every string the fields above index
 *   time_nanos, period_type space/bytes, period = rate,
 *   default_sample_type inuse_space (what pprof picks anyway when unset)
 *
 * Scaling is Go's scaleHeapSample: a sample of size s is taken with
 * probability 1 - exp(-s/rate), so each pair (objects, bytes) is divided by
 * that probability, with s the pair's mean object size; the alloc pair and
 * the in-use pair (alloc minus free) are scaled separately.  No scaling
 * when rate <= 1.
 *
 * Addresses.  A record's stack holds return addresses only: the leaf is
 * where the program's call to malloc returns to, not an instruction that
 * was executing.  pprof reads a proto Location address as is ("a non-leaf
 * address may be in the middle of a call instruction"); only its legacy
 * text parser subtracts 1 itself.  Go writes return PC - 1 for every frame,
 * the leaf included (runtime.CallersFrames), so that the address falls
 * inside the call instruction and the line and function are the caller's
 * even when the call is the last instruction of a function.  We do the
 * same.
 *
 * Why no malloc.  The profile is written at exit, from a signal's writer
 * thread, possibly from a fork child or with the process in a bad state,
 * and this file is part of the malloc it would call.  So the message is
 * built in buffers from sm_os_alloc (grown by doubling with a copy), zlib
 * gets zalloc/zfree callbacks over sm_os_alloc, /proc/self/maps and the ELF
 * files are read with open/read/pread, and the result goes out with
 * write(2).  No stdio, no lock of ours: the caller copies the records out
 * of the profiler under its lock and calls us without it.
 *
 * Encoding.  A submessage is written in place after a one-byte length that
 * msg_end fixes up, moving the body when the length needs more bytes, so
 * the message is built in one pass.  The samples give each distinct PC a
 * location id; then the PCs are sorted by address and named one mapped
 * file at a time (one pass over its symbol table), and the functions and
 * locations are written after the samples.
 *
 * Cost of the names, measured in doc/profiling.md: the symbol tables of
 * the files the stacks pass through are mapped and scanned once per
 * profile.  The string table is hashed, since a profile with names holds
 * thousands of strings.
 */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fmath.h"
#include "os.h"
#include "profproto.h"
#include "symbolize.h"

/* profile.proto field numbers. */
enum {
    PROFILE_SAMPLE_TYPE = 1, PROFILE_SAMPLE = 2, PROFILE_MAPPING = 3,
    PROFILE_LOCATION = 4, PROFILE_STRING_TABLE = 6, PROFILE_TIME_NANOS = 9,
    PROFILE_DURATION_NANOS = 10, PROFILE_PERIOD_TYPE = 11, PROFILE_PERIOD = 12,
    PROFILE_DEFAULT_SAMPLE_TYPE = 14,
    VALUETYPE_TYPE = 1, VALUETYPE_UNIT = 2,
    SAMPLE_LOCATION_ID = 1, SAMPLE_VALUE = 2, SAMPLE_LABEL = 3,
    LABEL_KEY = 1, LABEL_NUM = 3,
    MAPPING_ID = 1, MAPPING_START = 2, MAPPING_LIMIT = 3, MAPPING_OFFSET = 4,
    MAPPING_FILENAME = 5, MAPPING_BUILD_ID = 6, MAPPING_HAS_FUNCTIONS = 7,
    LOCATION_ID = 1, LOCATION_MAPPING_ID = 2, LOCATION_ADDRESS = 3, LOCATION_LINE = 4,
    LINE_FUNCTION_ID = 1,
    PROFILE_FUNCTION = 5,
    FUNCTION_ID = 1, FUNCTION_NAME = 2, FUNCTION_SYSTEM_NAME = 3,
};
enum { WIRE_VARINT = 0, WIRE_BYTES = 2 };

/* ---- growable byte buffer over the OS layer ---------------------------- */

struct buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    bool failed;     /* an allocation failed; everything after is a no-op */
};

static bool buf_reserve(struct buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->cap - b->len >= extra)
        return true;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < want) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    uint8_t *p = sm_os_alloc(cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    if (b->len)
        memcpy(p, b->p, b->len);
    if (b->p)
        sm_os_free(b->p, b->cap);
    b->p = p;
    b->cap = cap;
    return true;
}

static void buf_release(struct buf *b)
{
    if (b->p)
        sm_os_free(b->p, b->cap);
    memset(b, 0, sizeof *b);
}

static void put_bytes(struct buf *b, const void *s, size_t n)
{
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t encode_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static void put_varint(struct buf *b, uint64_t v)
{
    if (!buf_reserve(b, 10))
        return;
    b->len += encode_varint(b->p + b->len, v);
}

static void put_tag(struct buf *b, int field, int wire)
{
    put_varint(b, ((uint64_t)field << 3) | (uint64_t)wire);
}

/* A varint field, left out when zero as proto3 does. */
static void field_u64(struct buf *b, int field, uint64_t v)
{
    if (v == 0)
        return;
    put_tag(b, field, WIRE_VARINT);
    put_varint(b, v);
}

static void field_i64(struct buf *b, int field, int64_t v)
{
    field_u64(b, field, (uint64_t)v);
}

/* Start a length-delimited field (submessage or packed list); returns the
 * offset of its body for msg_end. */
static size_t msg_begin(struct buf *b, int field)
{
    put_tag(b, field, WIRE_BYTES);
    put_varint(b, 0);          /* one-byte placeholder for the length */
    return b->len;
}

static void msg_end(struct buf *b, size_t body)
{
    if (b->failed)
        return;
    size_t n = b->len - body;
    size_t extra = varint_len(n) - 1;
    if (extra) {
        if (!buf_reserve(b, extra))
            return;
        memmove(b->p + body + extra, b->p + body, n);
        b->len += extra;
    }
    encode_varint(b->p + body - 1, n);
}

/* ---- string table ------------------------------------------------------ */

/* Strings are kept encoded as they will be written (tag, length, bytes) in
 * their own buffer, and found through an open-addressing hash table of
 * their offsets (a profile with function names holds thousands). */
struct str_slot {
    size_t off;        /* of the string's bytes in enc */
    uint32_t len;
    uint32_t idx1;     /* string index + 1; 0: empty */
};

struct strtab {
    struct buf enc;
    int64_t n;
    struct str_slot *slots;
    size_t cap;        /* a power of two */
};

static uint64_t str_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;       /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

static bool strtab_grow(struct strtab *t)
{
    size_t cap = t->cap ? t->cap * 2 : 512;
    struct str_slot *s = sm_os_alloc(cap * sizeof *s);
    if (s == NULL)
        return false;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].idx1 == 0)
            continue;
        size_t h = str_hash((const char *)t->enc.p + t->slots[i].off, t->slots[i].len) & (cap - 1);
        while (s[h].idx1 != 0)
            h = (h + 1) & (cap - 1);
        s[h] = t->slots[i];
    }
    if (t->slots)
        sm_os_free(t->slots, t->cap * sizeof *s);
    t->slots = s;
    t->cap = cap;
    return true;
}

static int64_t string_index(struct strtab *t, const char *s, size_t len)
{
    if (t->enc.failed || len > UINT32_MAX ||
        ((size_t)(t->n + 1) * 2 > t->cap && !strtab_grow(t))) {
        t->enc.failed = true;
        return 0;
    }
    size_t h = str_hash(s, len) & (t->cap - 1);
    while (t->slots[h].idx1 != 0) {
        const struct str_slot *e = &t->slots[h];
        if (e->len == len && memcmp(t->enc.p + e->off, s, len) == 0)
            return (int64_t)e->idx1 - 1;
        h = (h + 1) & (t->cap - 1);
    }
    put_tag(&t->enc, PROFILE_STRING_TABLE, WIRE_BYTES);
    put_varint(&t->enc, len);
    put_bytes(&t->enc, s, len);
    if (t->enc.failed)
        return 0;
    t->slots[h].off = t->enc.len - len;
    t->slots[h].len = (uint32_t)len;
    t->slots[h].idx1 = (uint32_t)(t->n + 1);
    return t->n++;
}

static void strtab_release(struct strtab *t)
{
    buf_release(&t->enc);
    if (t->slots)
        sm_os_free(t->slots, t->cap * sizeof *t->slots);
    t->slots = NULL;
    t->cap = 0;
}

static int64_t string_index_z(struct strtab *t, const char *s)
{
    return string_index(t, s, strlen(s));
}

/* ---- mappings from /proc/self/maps ------------------------------------ */

struct mapping {
    uint64_t start, limit, offset;
    int64_t file, build_id;   /* string table indexes */
    size_t path;              /* offset of the file's name, NUL-terminated,
                               * in the paths buffer */
    bool has_functions;       /* its locations were named from its file */
};

static size_t mapping_count(const struct buf *m)
{
    return m->len / sizeof(struct mapping);
}

static struct mapping *mapping_at(const struct buf *m, size_t i)
{
    return (struct mapping *)(void *)m->p + i;
}

static ssize_t pread_full(int fd, void *p, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)p + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* Look for NT_GNU_BUILD_ID in one PT_NOTE segment (its notes aligned to
 * align, 4 or 8, counted from the segment's start); writes it as hex. */
static size_t note_build_id(const uint8_t *p, size_t n, size_t align, char *hex, size_t hexcap)
{
    static const char digits[] = "0123456789abcdef";
    size_t off = 0;

    while (off <= n && n - off >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr nh;
        memcpy(&nh, p + off, sizeof nh);
        size_t name = off + sizeof nh;
        if (nh.n_namesz > n - name)
            return 0;
        size_t desc = (name + nh.n_namesz + align - 1) & ~(align - 1);
        if (desc > n || nh.n_descsz > n - desc)
            return 0;
        if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
            memcmp(p + name, "GNU", 4) == 0 && (size_t)nh.n_descsz * 2 <= hexcap) {
            for (size_t i = 0; i < nh.n_descsz; i++) {
                hex[2 * i] = digits[p[desc + i] >> 4];
                hex[2 * i + 1] = digits[p[desc + i] & 15];
            }
            return (size_t)nh.n_descsz * 2;
        }
        off = (desc + nh.n_descsz + align - 1) & ~(align - 1);
    }
    return 0;
}

/* The GNU build id of an ELF file as a hex string, from its PT_NOTE
 * segments.  Read from the file rather than from the loaded image through
 * dl_iterate_phdr: that takes the loader's lock, which a fork child may
 * find held forever.  Returns the length written, 0 if none. */
static size_t elf_build_id(const char *path, char *hex, size_t hexcap)
{
    Elf64_Ehdr eh;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    if (pread_full(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == PN_XNUM)
        goto out;
    for (unsigned i = 0; i < eh.e_phnum && len == 0; i++) {
        Elf64_Phdr ph;
        uint8_t note[1024];
        off_t at = (off_t)(eh.e_phoff + (uint64_t)i * sizeof ph);
        if (pread_full(fd, &ph, sizeof ph, at) != (ssize_t)sizeof ph)
            break;
        if (ph.p_type != PT_NOTE)
            continue;
        size_t n = ph.p_filesz < sizeof note ? (size_t)ph.p_filesz : sizeof note;
        ssize_t got = pread_full(fd, note, n, (off_t)ph.p_offset);
        if (got <= 0)
            continue;
        len = note_build_id(note, (size_t)got, ph.p_align == 8 ? 8 : 4, hex, hexcap);
    }
out:
    close(fd);
    return len;
}

static bool parse_hex(const char **s, const char *end, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;
    while (p < end) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            break;
        v = v << 4 | (uint64_t)d;
        p++;
    }
    if (p == *s)
        return false;
    *s = p;
    *out = v;
    return true;
}

static const char *skip_field(const char *p, const char *end)
{
    while (p < end && *p != ' ')
        p++;
    while (p < end && *p == ' ')
        p++;
    return p;
}

/* One line of /proc/self/maps:
 *   lo-hi perms offset dev inode            path
 * We keep executable regions backed by a file (path starting with '/'). */
static void maps_line(const char *p, const char *end, struct buf *maps, struct strtab *st,
                      struct buf *paths, char *path, size_t pathcap)
{
    static const char deleted[] = " (deleted)";
    uint64_t lo, hi, off;
    const char *perms;

    if (!parse_hex(&p, end, &lo) || p >= end || *p++ != '-' || !parse_hex(&p, end, &hi))
        return;
    p = skip_field(p, end);
    perms = p;
    if (end - perms < 4 || perms[2] != 'x')
        return;
    p = skip_field(p, end);
    if (!parse_hex(&p, end, &off))
        return;
    p = skip_field(p, end);      /* to dev */
    p = skip_field(p, end);      /* to inode */
    p = skip_field(p, end);      /* to path */
    if (p >= end || *p != '/' || hi <= lo)
        return;
    size_t n = (size_t)(end - p);
    bool gone = false;
    if (n > sizeof deleted - 1 && memcmp(end - (sizeof deleted - 1), deleted, sizeof deleted - 1) == 0) {
        n -= sizeof deleted - 1;
        gone = true;
    }
    if (n >= pathcap)
        return;
    memcpy(path, p, n);
    path[n] = '\0';

    struct mapping m = { lo, hi, off, string_index(st, path, n), 0, paths->len, false };
    if (gone)
        put_bytes(paths, "", 1);     /* not to be opened: see below */
    else
        put_bytes(paths, path, n + 1);
    size_t count = mapping_count(maps);
    if (count > 0 && mapping_at(maps, count - 1)->file == m.file) {
        m.build_id = mapping_at(maps, count - 1)->build_id;
    } else if (!gone) {
        /* A deleted file's name may now be another file: no build id
         * is better than a wrong one. */
        char hex[2 * 64];
        size_t hl = elf_build_id(path, hex, sizeof hex);
        if (hl)
            m.build_id = string_index(st, hex, hl);
    }
    put_bytes(maps, &m, sizeof m);
}

#define MAPS_BUF (64 * 1024)   /* more than a maps line can be (PATH_MAX + ~100) */

/* Fill maps (an array of struct mapping, in address order as the kernel
 * lists them).  Failing to read /proc/self/maps is no error: the profile
 * is still valid, pprof just cannot symbolize it. */
static void read_maps(struct buf *maps, struct strtab *st, struct buf *paths)
{
    char *rd = sm_os_alloc(MAPS_BUF + 4096);
    if (rd == NULL) {
        maps->failed = true;
        return;
    }
    char *path = rd + MAPS_BUF;          /* the last 4096 bytes: a path copy */
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        size_t have = 0;
        bool skipping = false;           /* inside an over-long line */
        for (;;) {
            ssize_t r = read(fd, rd + have, MAPS_BUF - have);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            have += (size_t)r;
            char *line = rd, *end = rd + have, *nl;
            while ((nl = memchr(line, '\n', (size_t)(end - line))) != NULL) {
                if (!skipping)
                    maps_line(line, nl, maps, st, paths, path, 4096);
                skipping = false;
                line = nl + 1;
            }
            have = (size_t)(end - line);
            if (have == MAPS_BUF) {      /* no newline in a full buffer */
                skipping = true;
                have = 0;
            } else if (have) {
                memmove(rd, line, have);
            }
        }
        close(fd);
    }
    sm_os_free(rd, MAPS_BUF + 4096);
}

static uint64_t mapping_of(const struct buf *maps, uint64_t addr)
{
    size_t lo = 0, hi = mapping_count(maps);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct mapping *m = mapping_at(maps, mid);
        if (addr < m->start)
            hi = mid;
        else if (addr >= m->limit)
            lo = mid + 1;
        else
            return mid + 1;               /* mapping ids start at 1 */
    }
    return 0;
}

/* ---- locations: one per distinct PC ----------------------------------- */

struct loc_slot {
    uintptr_t pc;
    uint64_t id;       /* 0: empty slot */
};

struct loctab {
    struct loc_slot *slots;
    size_t cap;        /* a power of two */
    size_t n;
    bool failed;
};

static size_t loc_hash(uintptr_t pc, size_t cap)
{
    return (size_t)(((uint64_t)pc * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static bool loctab_grow(struct loctab *t)
{
    size_t cap = t->cap ? t->cap * 2 : 1024;
    struct loc_slot *s = sm_os_alloc(cap * sizeof *s);
    if (s == NULL) {
        t->failed = true;
        return false;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].id == 0)
            continue;
        size_t h = loc_hash(t->slots[i].pc, cap);
        while (s[h].id != 0)
            h = (h + 1) & (cap - 1);
        s[h] = t->slots[i];
    }
    if (t->slots)
        sm_os_free(t->slots, t->cap * sizeof *s);
    t->slots = s;
    t->cap = cap;
    return true;
}

/* The location id of pc, a new one for a new pc (written later, by
 * write_locations). */
static uint64_t location_id(struct loctab *t, uintptr_t pc)
{
    if (t->failed || ((t->n + 1) * 2 > t->cap && !loctab_grow(t)))
        return 0;
    size_t h = loc_hash(pc, t->cap);
    while (t->slots[h].id != 0) {
        if (t->slots[h].pc == pc)
            return t->slots[h].id;
        h = (h + 1) & (t->cap - 1);
    }
    uint64_t id = ++t->n;
    t->slots[h].pc = pc;
    t->slots[h].id = id;
    return id;
}

/* ---- naming the locations and writing them ------------------------------ */

/* One location while it is named: sorted by address, then by id. */
struct loc_info {
    uint64_t addr;     /* the return address minus one */
    uint64_t id;
    uint64_t mapping;  /* mapping id, 0: none */
    uint64_t function; /* function id, 0: none */
};

static bool loc_before(const struct loc_info *a, const struct loc_info *b, bool by_addr)
{
    return by_addr ? a->addr < b->addr : a->id < b->id;
}

/* Heapsort: qsort may call malloc (glibc's merge sort takes a buffer). */
static void sift(struct loc_info *v, size_t i, size_t n, bool by_addr)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && loc_before(&v[c], &v[c + 1], by_addr))
            c++;
        if (!loc_before(&v[i], &v[c], by_addr))
            return;
        struct loc_info t = v[i];
        v[i] = v[c];
        v[c] = t;
        i = c;
    }
}

static void sort_locs(struct loc_info *v, size_t n, bool by_addr)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(v, i, n, by_addr);
    for (size_t end = n; end-- > 1;) {
        struct loc_info t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift(v, 0, end, by_addr);
    }
}

/* Function ids by string index of the name: grown with the string table. */
struct functab {
    struct buf ids;     /* uint64_t per string index; 0: no function yet */
    uint64_t n;
};

static uint64_t function_id(struct functab *f, struct buf *out, struct strtab *st, const char *name)
{
    int64_t s = string_index_z(st, name);
    if (st->enc.failed || s <= 0)
        return 0;
    size_t need = ((size_t)s + 1) * sizeof(uint64_t);
    if (f->ids.len < need) {
        if (!buf_reserve(&f->ids, need - f->ids.len))
            return 0;
        memset(f->ids.p + f->ids.len, 0, need - f->ids.len);
        f->ids.len = need;
    }
    uint64_t *slot = (uint64_t *)(void *)f->ids.p + s;
    if (*slot == 0) {
        *slot = ++f->n;
        size_t body = msg_begin(out, PROFILE_FUNCTION);
        field_u64(out, FUNCTION_ID, *slot);
        field_i64(out, FUNCTION_NAME, s);
        field_i64(out, FUNCTION_SYSTEM_NAME, s);
        msg_end(out, body);
    }
    return *slot;
}

/* Name the locations of one file, locs[0..n) (sorted by address, all in
 * mappings of that file); hits is scratch for n entries. */
static void name_file(struct loc_info *locs, size_t n, struct sm_sym_hit *hits,
                      struct buf *maps, const struct buf *paths, struct functab *ft,
                      struct buf *out, struct strtab *st)
{
    struct mapping *m0 = mapping_at(maps, locs[0].mapping - 1);
    const char *path = (const char *)paths->p + m0->path;
    struct sm_elf elf;

    if (path[0] == '\0' || !sm_elf_open(&elf, path))
        return;
    for (size_t i = 0; i < n; i++) {
        const struct mapping *m = mapping_at(maps, locs[i].mapping - 1);
        uint64_t vaddr;
        if (!sm_elf_vaddr(&elf, locs[i].addr - m->start + m->offset, &vaddr))
            vaddr = 0;
        hits[i].addr = vaddr;
    }
    /* Addresses keep their order through one file's segments; should a
     * file be mapped out of order, its hits are still named, by a sort. */
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; i++)
        sorted = hits[i - 1].addr <= hits[i].addr;
    if (sorted) {
        sm_elf_symbolize(&elf, hits, n);
    } else {
        for (size_t i = 0; i < n; i++)
            sm_elf_symbolize(&elf, &hits[i], 1);
    }
    for (size_t i = 0; i < n; i++)
        if (hits[i].name != NULL)
            locs[i].function = function_id(ft, out, st, hits[i].name);
    for (size_t i = 0; i < n; i++)
        mapping_at(maps, locs[i].mapping - 1)->has_functions = true;
    sm_elf_close(&elf);
}

/* Write every location the samples use, each with its function when its
 * file names it, and the functions before them. */
static void write_locations(struct buf *out, const struct loctab *lt, struct buf *maps,
                            const struct buf *paths, struct strtab *st, bool *failed)
{
    size_t n = lt->n;
    if (n == 0)
        return;
    size_t bytes = n * (sizeof(struct loc_info) + sizeof(struct sm_sym_hit));
    struct loc_info *locs = sm_os_alloc(bytes);
    struct functab ft = {{0}, 0};
    if (locs == NULL) {
        *failed = true;
        return;
    }
    struct sm_sym_hit *hits = (struct sm_sym_hit *)(void *)(locs + n);
    size_t k = 0;
    for (size_t i = 0; i < lt->cap; i++) {
        if (lt->slots[i].id == 0)
            continue;
        /* Every PC is a return address: step back into the call. */
        uintptr_t pc = lt->slots[i].pc;
        locs[k].addr = (uint64_t)pc - (pc != 0);
        locs[k].id = lt->slots[i].id;
        locs[k].mapping = mapping_of(maps, locs[k].addr);
        locs[k].function = 0;
        k++;
    }
    sort_locs(locs, k, true);
    for (size_t i = 0; i < k;) {
        size_t j = i + 1;
        if (locs[i].mapping == 0) {
            i = j;
            continue;
        }
        int64_t file = mapping_at(maps, locs[i].mapping - 1)->file;
        while (j < k && locs[j].mapping != 0 && mapping_at(maps, locs[j].mapping - 1)->file == file)
            j++;
        name_file(&locs[i], j - i, hits, maps, paths, &ft, out, st);
        i = j;
    }
    sort_locs(locs, k, false);
    for (size_t i = 0; i < k; i++) {
        size_t body = msg_begin(out, PROFILE_LOCATION);
        field_u64(out, LOCATION_ID, locs[i].id);
        field_u64(out, LOCATION_MAPPING_ID, locs[i].mapping);
        field_u64(out, LOCATION_ADDRESS, locs[i].addr);
        if (locs[i].function != 0) {
            size_t line = msg_begin(out, LOCATION_LINE);
            field_u64(out, LINE_FUNCTION_ID, locs[i].function);
            msg_end(out, line);
        }
        msg_end(out, body);
    }
    if (ft.ids.failed)
        *failed = true;
    buf_release(&ft.ids);
    sm_os_free(locs, bytes);
}

/* ---- scaling ----------------------------------------------------------- */

static int64_t to_i64(double v)
{
    if (!(v < 9.2233720368547748e18))   /* also NaN */
        return INT64_MAX;
    return (int64_t)v;
}

void sm_profproto_scale(uint64_t count, uint64_t size, uint64_t rate,
                        int64_t *count_out, int64_t *size_out)
{
    if (count == 0 || size == 0) {
        *count_out = *size_out = 0;
        return;
    }
    if (rate <= 1) {
        *count_out = to_i64((double)count);
        *size_out = to_i64((double)size);
        return;
    }
    double avg = (double)size / (double)count;
    double scale = 1 / (1 - sm_exp(-avg / (double)rate));
    *count_out = to_i64((double)count * scale);
    *size_out = to_i64((double)size * scale);
}

/* ---- the message -------------------------------------------------------- */

static void value_type(struct buf *b, struct strtab *st, int field, const char *type, const char *unit)
{
    size_t body = msg_begin(b, field);
    field_i64(b, VALUETYPE_TYPE, string_index_z(st, type));
    field_i64(b, VALUETYPE_UNIT, string_index_z(st, unit));
    msg_end(b, body);
}

static void sample(struct buf *b, struct loctab *lt, int64_t bytes_key, const struct sm_prof_record *r, uint64_t rate)
{
    int64_t v[4];
    uint64_t alloc_n = r->alloc_objects, alloc_b = r->alloc_bytes;
    uint64_t inuse_n = alloc_n > r->free_objects ? alloc_n - r->free_objects : 0;
    uint64_t inuse_b = alloc_b > r->free_bytes ? alloc_b - r->free_bytes : 0;

    sm_profproto_scale(alloc_n, alloc_b, rate, &v[0], &v[1]);
    sm_profproto_scale(inuse_n, inuse_b, rate, &v[2], &v[3]);

    size_t body = msg_begin(b, PROFILE_SAMPLE);
    if (r->nstack > 0 && r->stack != NULL) {
        size_t ids = msg_begin(b, SAMPLE_LOCATION_ID);
        for (int i = 0; i < r->nstack; i++)
            put_varint(b, location_id(lt, r->stack[i]));
        msg_end(b, ids);
    }
    size_t vals = msg_begin(b, SAMPLE_VALUE);
    for (int i = 0; i < 4; i++)
        put_varint(b, (uint64_t)v[i]);
    msg_end(b, vals);
    if (alloc_n > 0 && alloc_b / alloc_n > 0) {
        size_t label = msg_begin(b, SAMPLE_LABEL);
        field_i64(b, LABEL_KEY, bytes_key);
        field_i64(b, LABEL_NUM, (int64_t)(alloc_b / alloc_n > INT64_MAX ? INT64_MAX : alloc_b / alloc_n));
        msg_end(b, label);
    }
    msg_end(b, body);
}

/* ---- gzip and write ----------------------------------------------------- */

/* zlib, found when a profile is first written.  The shared library does
 * not link libz: mapped at start-up, its text, tables and relocations cost
 * every process about 84 KiB of resident memory (fault-around maps 64 KiB
 * of text for its constructor alone), and most processes never write a
 * profile.  So the shared build (libtool's PIC objects) opens libz.so.1
 * with dlopen the first time it compresses (sm_profproto_prepare, also
 * called by the background worker when a profile output is configured, so
 * that dlopen's own allocations happen in an ordinary thread), and the
 * static archive, which pkg-config links with -lz, calls zlib directly.
 * Without zlib the file is still gzip: stored blocks, uncompressed. */
struct zfns {
    int (*init2)(z_streamp, int, int, int, int, int, const char *, int);
    int (*deflate)(z_streamp, int);
    int (*end)(z_streamp);
};
static struct zfns zf;
static pthread_once_t zf_once = PTHREAD_ONCE_INIT;

static void zlib_load(void)
{
#ifdef PIC
    void *h = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return;
    struct zfns f;
    *(void **)&f.init2 = dlsym(h, "deflateInit2_");
    *(void **)&f.deflate = dlsym(h, "deflate");
    *(void **)&f.end = dlsym(h, "deflateEnd");
    if (f.init2 != NULL && f.deflate != NULL && f.end != NULL)
        zf = f;
#else
    zf.init2 = deflateInit2_;
    zf.deflate = deflate;
    zf.end = deflateEnd;
#endif
}

void sm_profproto_prepare(void)
{
    pthread_once(&zf_once, zlib_load);
}

bool sm_profproto_have_zlib(void)
{
    sm_profproto_prepare();
    return zf.init2 != NULL;
}

#define ZHDR 16   /* keeps zlib's memory 16-byte aligned */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    size_t n = (size_t)items * size;
    if (size != 0 && n / size != items)
        return Z_NULL;
    char *p = sm_os_alloc(n + ZHDR);
    if (p == NULL)
        return Z_NULL;
    memcpy(p, &n, sizeof n);
    return p + ZHDR;
}

static void z_free(voidpf opaque, voidpf address)
{
    (void)opaque;
    if (address == Z_NULL)
        return;
    char *p = (char *)address - ZHDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    sm_os_free(p, n + ZHDR);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#define ZOUT (64 * 1024)

static uint32_t crc32_bytes(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void put_le32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

int sm_profproto_gzip_stored(int fd, const uint8_t *p, size_t n)
{
    /* RFC 1952 header: deflate, no flags, no time, unknown OS. */
    static const uint8_t hdr[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255 };
    uint8_t tail[8];
    put_le32(tail, crc32_bytes(0, p, n));
    put_le32(tail + 4, (uint32_t)n);
    if (write_all(fd, hdr, sizeof hdr) < 0)
        return -1;
    /* RFC 1951 stored blocks of at most 65535 bytes; the last has BFINAL. */
    do {
        size_t k = n > 65535 ? 65535 : n;
        uint8_t bh[5] = { (uint8_t)(k == n), (uint8_t)k, (uint8_t)(k >> 8), (uint8_t)~k,
                          (uint8_t)(~k >> 8) };
        if (write_all(fd, bh, sizeof bh) < 0 || write_all(fd, p, k) < 0)
            return -1;
        p += k;
        n -= k;
    } while (n > 0);
    return write_all(fd, tail, sizeof tail);
}

static int gzip_write(int fd, const uint8_t *p, size_t n)
{
    z_stream z;
    int rc, ret = 0, err = 0;

    if (!sm_profproto_have_zlib())
        return sm_profproto_gzip_stored(fd, p, n);

    uint8_t *out = sm_os_alloc(ZOUT);
    if (out == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memset(&z, 0, sizeof z);
    z.zalloc = z_alloc;
    z.zfree = z_free;
    /* windowBits 15 + 16: a gzip wrapper.  Best speed, as Go writes it. */
    rc = zf.init2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
                  (int)sizeof z);
    if (rc != Z_OK) {
        sm_os_free(out, ZOUT);
        errno = rc == Z_MEM_ERROR ? ENOMEM : EIO;
        return -1;
    }
    z.next_in = (Bytef *)(uintptr_t)p;
    do {
        /* avail_in is 32 bits: feed big messages in pieces. */
        if (z.avail_in == 0 && n > 0) {
            uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
            z.avail_in = chunk;
            n -= chunk;
        }
        z.next_out = out;
        z.avail_out = ZOUT;
        rc = zf.deflate(&z, n == 0 ? Z_FINISH : Z_NO_FLUSH);
        if (rc == Z_STREAM_ERROR) {
            err = EIO;
            ret = -1;
            break;
        }
        if (write_all(fd, out, ZOUT - z.avail_out) < 0) {
            err = errno;
            ret = -1;
            break;
        }
    } while (rc != Z_STREAM_END);
    zf.end(&z);
    sm_os_free(out, ZOUT);
    if (ret)
        errno = err;
    return ret;
}

int sm_profproto_write(int fd, const struct sm_prof_record *recs, size_t nrecs,
                       uint64_t rate, int64_t time_nanos)
{
    return sm_profproto_write_typed(fd, recs, nrecs, rate, time_nanos, "inuse_space");
}

int sm_profproto_write_typed(int fd, const struct sm_prof_record *recs, size_t nrecs,
                             uint64_t rate, int64_t time_nanos, const char *default_type)
{
    struct buf msg = {0}, maps = {0}, paths = {0};
    struct strtab st = {{0}, 0, NULL, 0};
    struct loctab lt = {0};
    bool failed = false;
    int ret = -1;

    string_index(&st, "", 0);
    read_maps(&maps, &st, &paths);

    value_type(&msg, &st, PROFILE_SAMPLE_TYPE, "alloc_objects", "count");
    value_type(&msg, &st, PROFILE_SAMPLE_TYPE, "alloc_space", "bytes");
    value_type(&msg, &st, PROFILE_SAMPLE_TYPE, "inuse_objects", "count");
    value_type(&msg, &st, PROFILE_SAMPLE_TYPE, "inuse_space", "bytes");
    int64_t bytes_key = string_index_z(&st, "bytes");
    for (size_t i = 0; i < nrecs; i++)
        sample(&msg, &lt, bytes_key, &recs[i], rate);
    if (!lt.failed && !maps.failed && !paths.failed)
        write_locations(&msg, &lt, &maps, &paths, &st, &failed);
    for (size_t i = 0; i < mapping_count(&maps); i++) {
        const struct mapping *m = mapping_at(&maps, i);
        size_t body = msg_begin(&msg, PROFILE_MAPPING);
        field_u64(&msg, MAPPING_ID, i + 1);
        field_u64(&msg, MAPPING_START, m->start);
        field_u64(&msg, MAPPING_LIMIT, m->limit);
        field_u64(&msg, MAPPING_OFFSET, m->offset);
        field_i64(&msg, MAPPING_FILENAME, m->file);
        field_i64(&msg, MAPPING_BUILD_ID, m->build_id);
        field_u64(&msg, MAPPING_HAS_FUNCTIONS, m->has_functions);
        msg_end(&msg, body);
    }
    field_i64(&msg, PROFILE_TIME_NANOS, time_nanos);
    field_i64(&msg, PROFILE_DURATION_NANOS, 0);
    value_type(&msg, &st, PROFILE_PERIOD_TYPE, "space", "bytes");
    field_i64(&msg, PROFILE_PERIOD, rate > INT64_MAX ? INT64_MAX : (int64_t)rate);
    field_i64(&msg, PROFILE_DEFAULT_SAMPLE_TYPE, string_index_z(&st, default_type));
    /* Strings last: every index above has been taken. */
    put_bytes(&msg, st.enc.p, st.enc.len);

    if (msg.failed || failed || maps.failed || paths.failed || st.enc.failed || lt.failed)
        errno = ENOMEM;
    else
        ret = gzip_write(fd, msg.p, msg.len);

    int saved = errno;
    buf_release(&msg);
    buf_release(&maps);
    buf_release(&paths);
    strtab_release(&st);
    if (lt.slots)
        sm_os_free(lt.slots, lt.cap * sizeof *lt.slots);
    errno = saved;
    return ret;
}
