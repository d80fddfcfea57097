/*
 * symbolize.h - function names for code addresses, from ELF symbol tables.
 *
 * See symbolize.c for which table is read, how a name is chosen among
 * aliases, and why nothing here calls malloc.
 */
#ifndef SM_SYMBOLIZE_H
#define SM_SYMBOLIZE_H

#include <elf.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One ELF file, mapped read-only, with the symbol table we read. */
struct sm_elf {
    const uint8_t *base;       /* the whole file, mapped */
    size_t size;
    const Elf64_Phdr *phdr;    /* program headers, for offset -> address */
    unsigned phnum;
    const Elf64_Sym *sym;      /* .symtab, or .dynsym when stripped */
    size_t nsym;
    const char *str;           /* its string table */
    size_t strsz;
};

/* One address to name: addr is the file's virtual address (what nm and
 * readelf show); name is set to a NUL-terminated string inside the mapped
 * file, or NULL when no function symbol covers addr. */
struct sm_sym_hit {
    uint64_t addr;
    const char *name;
    uint32_t rank;             /* scratch: how good name is, lower better */
};

/* Map path and find its symbol table.  Returns false (and leaves nothing
 * mapped) if the file is not a 64-bit ELF file or has no symbol table. */
bool sm_elf_open(struct sm_elf *e, const char *path);
void sm_elf_close(struct sm_elf *e);

/* The virtual address of byte off of the file, through its PT_LOAD
 * segments; false if no segment loads it. */
bool sm_elf_vaddr(const struct sm_elf *e, uint64_t off, uint64_t *vaddr);

/* Name the n hits, sorted by addr, in one pass over the symbol table. */
void sm_elf_symbolize(const struct sm_elf *e, struct sm_sym_hit *hits, size_t n);

#endif
