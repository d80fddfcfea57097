/*
 * symbolize.c - function names for code addresses, from ELF symbol tables.
 *
 * A heap profile that holds only addresses needs the program's binaries to
 * be read, and Go's `go tool pprof` cannot name the functions of most C
 * and C++ programs from them (its object reader wants Go's line table, and
 * falls back to DWARF only for code it finds there).  So the profile
 * writer names every location itself, as Go's runtime does for Go code,
 * and marks the mapping has_functions so pprof keeps those names.
 *
 * Which table: .symtab when the file has one (every function, static ones
 * too), else .dynsym, which even a stripped shared library keeps (Debian's
 * libc has only .dynsym: strdup is there, its internal helpers are not).
 * A symbol names the addresses in [st_value, st_value + st_size); a symbol
 * of size 0 (some assembly) names only its first byte.  Among symbols that
 * cover the same address (aliases such as __strdup and strdup, or a C++
 * constructor's C1 and C2 copies) the one with fewer leading underscores
 * wins, then GLOBAL over WEAK over LOCAL: the name a user wrote.  Names
 * stay mangled: pprof demangles Function.name itself when it equals
 * system_name, in every symbolization mode but -symbolize=none (demangle
 * mode), as it does for names its own symbolizer found.
 *
 * Cost: the file is mapped, not read, so only the pages of the headers,
 * the symbol table and the names used are touched; each symbol costs a
 * binary search among the sorted addresses, O(symbols * log addresses)
 * per file, with no sort of the symbol table.
 *
 * Why no malloc: this runs inside the profile writer (profproto.c), which
 * must not call malloc.  The file is mapped through the OS layer
 * (sm_os_map_file), and every check is against the file's size, so a
 * truncated or hostile file gives no name rather than a crash.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os.h"
#include "symbolize.h"

static bool in_file(const struct sm_elf *e, uint64_t off, uint64_t len)
{
    return off <= e->size && len <= e->size - off;
}

/* The section table's entry i, or NULL. */
static const Elf64_Shdr *section(const struct sm_elf *e, const Elf64_Ehdr *eh, unsigned i)
{
    if (i >= eh->e_shnum)
        return NULL;
    uint64_t at = eh->e_shoff + (uint64_t)i * sizeof(Elf64_Shdr);
    if (!in_file(e, at, sizeof(Elf64_Shdr)))
        return NULL;
    return (const Elf64_Shdr *)(const void *)(e->base + at);
}

/* Use the section of type want (SHT_SYMTAB or SHT_DYNSYM) if it and its
 * string table lie inside the file. */
static bool find_table(struct sm_elf *e, const Elf64_Ehdr *eh, uint32_t want)
{
    for (unsigned i = 1; i < eh->e_shnum; i++) {
        const Elf64_Shdr *sh = section(e, eh, i);
        if (sh == NULL)
            return false;
        if (sh->sh_type != want || sh->sh_entsize != sizeof(Elf64_Sym) ||
            !in_file(e, sh->sh_offset, sh->sh_size) || (sh->sh_offset & 7) != 0)
            continue;
        const Elf64_Shdr *strs = section(e, eh, sh->sh_link);
        if (strs == NULL || strs->sh_type != SHT_STRTAB ||
            !in_file(e, strs->sh_offset, strs->sh_size) || strs->sh_size == 0)
            continue;
        e->sym = (const Elf64_Sym *)(const void *)(e->base + sh->sh_offset);
        e->nsym = sh->sh_size / sizeof(Elf64_Sym);
        e->str = (const char *)e->base + strs->sh_offset;
        e->strsz = strs->sh_size;
        return true;
    }
    return false;
}

bool sm_elf_open(struct sm_elf *e, const char *path)
{
    struct stat st;
    memset(e, 0, sizeof *e);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
        close(fd);
        return false;
    }
    e->size = (size_t)st.st_size;
    e->base = sm_os_map_file(fd, e->size);
    close(fd);
    if (e->base == NULL)
        return false;

    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)(const void *)e->base;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_phentsize != sizeof(Elf64_Phdr) ||
        eh->e_phnum == PN_XNUM || (eh->e_phoff & 7) != 0 || (eh->e_shoff & 7) != 0 ||
        !in_file(e, eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr)) ||
        (eh->e_shnum > 0 && eh->e_shentsize != sizeof(Elf64_Shdr)))
        goto fail;
    e->phdr = (const Elf64_Phdr *)(const void *)(e->base + eh->e_phoff);
    e->phnum = eh->e_phnum;
    if (find_table(e, eh, SHT_SYMTAB) || find_table(e, eh, SHT_DYNSYM))
        return true;
fail:
    sm_elf_close(e);
    return false;
}

void sm_elf_close(struct sm_elf *e)
{
    if (e->base != NULL)
        sm_os_unmap_file((void *)(uintptr_t)e->base, e->size);
    memset(e, 0, sizeof *e);
}

bool sm_elf_vaddr(const struct sm_elf *e, uint64_t off, uint64_t *vaddr)
{
    for (unsigned i = 0; i < e->phnum; i++) {
        const Elf64_Phdr *ph = &e->phdr[i];
        if (ph->p_type == PT_LOAD && off >= ph->p_offset && off - ph->p_offset < ph->p_filesz) {
            *vaddr = off - ph->p_offset + ph->p_vaddr;
            return true;
        }
    }
    return false;
}

/* How good a name is for a user, lower better: leading underscores first,
 * then the binding. */
static uint32_t name_rank(const char *name, unsigned bind)
{
    uint32_t under = 0;
    while (name[under] == '_' && under < 8)
        under++;
    uint32_t b = bind == STB_GLOBAL ? 0 : bind == STB_WEAK ? 1 : 2;
    return under * 4 + b;
}

/* First hit with addr >= a. */
static size_t lower_bound(const struct sm_sym_hit *hits, size_t n, uint64_t a)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hits[mid].addr < a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void sm_elf_symbolize(const struct sm_elf *e, struct sm_sym_hit *hits, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hits[i].name = NULL;
        hits[i].rank = UINT32_MAX;
    }
    for (size_t s = 1; s < e->nsym; s++) {
        const Elf64_Sym *sym = &e->sym[s];
        unsigned type = ELF64_ST_TYPE(sym->st_info);
        if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym->st_shndx == SHN_UNDEF ||
            sym->st_value == 0 || sym->st_name >= e->strsz)
            continue;
        uint64_t lo = sym->st_value, len = sym->st_size ? sym->st_size : 1;
        if (lo + len < lo)
            continue;
        size_t i = lower_bound(hits, n, lo);
        if (i == n || hits[i].addr >= lo + len)
            continue;
        const char *name = e->str + sym->st_name;
        if (*name == '\0' || memchr(name, '\0', e->strsz - sym->st_name) == NULL)
            continue;
        /* A symbol without a size names its first byte only, and loses to
         * any sized one. */
        uint32_t rank = name_rank(name, ELF64_ST_BIND(sym->st_info)) + (sym->st_size ? 0 : 1000);
        for (; i < n && hits[i].addr < lo + len; i++) {
            if (rank < hits[i].rank) {
                hits[i].name = name;
                hits[i].rank = rank;
            }
        }
    }
}
