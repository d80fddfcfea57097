/*
 * stack.c - capture the caller's call stack for the heap profiler.
 *
 * The programs we are preloaded into (python3, perl, gcc, most distribution
 * binaries) are built without frame pointers, so walking the rbp chain as
 * Go does would stop after a frame or two.  We unwind with the DWARF call
 * frame information every ELF object carries in .eh_frame, through libgcc's
 * _Unwind_Backtrace, the unwinder C++ exceptions already use.
 *
 * Why libgcc and not libunwind (libunwind-dev, UNW_LOCAL_ONLY):
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
 * libunwind's cached fast path is about 30 times faster (0.13 us against
 * 3.7 us for 15 frames on the development machine), but a sample is taken
 * once per 512 KiB allocated by default, so the cost is small against the
 * work of allocating that much.
 *
 * What unwinding does, and when it may allocate:
 *   - each frame: find the FDE covering the return address, run its CFA
 *     program, read the return address off the stack.  With glibc 2.35 or
 *     later libgcc finds the FDE through _dl_find_object, which takes no
 *     lock and calls no malloc; with older glibc it uses dl_iterate_phdr
 *     (the loader's lock, no malloc) and a small static cache.
 *   - first use in the process: the PLT entries of _Unwind_* are bound and
 *     libgcc fills its register-size table once (pthread_once); no malloc.
 *   - code registered at run time with __register_frame (JIT compilers):
 *     the first look-up after a registration sorts that object's FDEs into
 *     an array from malloc.  The profiler's recursion guard makes such a
 *     malloc an ordinary unsampled one; it holds none of our locks.
 * Nothing is per thread, so a new thread costs nothing here.
 *
 * The unwinder reads the stack of the calling thread only and takes none of
 * our locks; the caller must hold none (so a malloc from inside the unwinder
 * cannot deadlock) and guards against recursion itself.
 */
#include <unwind.h>

#include "stack.h"

struct walk {
    uintptr_t *pcs;
    int max;
    int n;
    int skip;   /* frames still to leave out, our own first */
};

static _Unwind_Reason_Code collect(struct _Unwind_Context *ctx, void *arg)
{
    struct walk *w = arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);

    if (ip == 0)
        return _URC_END_OF_STACK;
    if (w->skip > 0) {
        w->skip--;
        return _URC_NO_REASON;
    }
    w->pcs[w->n++] = ip;
    return w->n < w->max ? _URC_NO_REASON : _URC_END_OF_STACK;
}

/* noinline: the first frame the unwinder reports is this function's own,
 * and the skip count is only right if it is a real frame. */
__attribute__((noinline)) int sm_stack_capture(uintptr_t *pcs, int max, int skip)
{
    struct walk w = { pcs, max, 0, 1 + (skip > 0 ? skip : 0) };

    if (max <= 0)
        return 0;
    _Unwind_Backtrace(collect, &w);
    /* w is on this frame, so the call above is not a tail call and this
     * frame exists while the unwinder runs. */
    return w.n;
}

void sm_stack_init(void)
{
    uintptr_t pcs[4];

    (void)sm_stack_capture(pcs, 4, 0);
}
