/*
 * stack_shapes_fp.c - test_stack.c's functions built with frame pointers
 * (-fno-omit-frame-pointer): their CFA is rbp + 16 after the prologue.
 */
#include <alloca.h>
#include <string.h>

#include "stack_shapes.h"

FRAME int fp_chain(int depth, struct stack_pair *p)
{
    int n = depth == 0 ? stack_leaf(p) : nofp_chain(depth - 1, p);
    KEEP_FRAME(n);
    return n + 1;
}

FRAME int fp_alloca(int n, struct stack_pair *p)
{
    char *buf = alloca((size_t)n);
    memset(buf, 1, (size_t)n);
    KEEP_FRAME(buf);
    int r = stack_leaf(p);
    KEEP_FRAME(r);
    return r + buf[n - 1];
}
