/*
 * stack_shapes_nofp.c - test_stack.c's functions built without frame
 * pointers (-fomit-frame-pointer): CFA from rsp, or from rbp where a
 * variable-length array needs a frame pointer anyway.
 */
#include <string.h>

#include "stack_shapes.h"

FRAME int nofp_chain(int depth, struct stack_pair *p)
{
    int n = depth == 0 ? stack_leaf(p) : fp_chain(depth - 1, p);
    KEEP_FRAME(n);
    return n + 1;
}

FRAME int nofp_recurse(int depth, struct stack_pair *p)
{
    int n = depth == 0 ? stack_leaf(p) : nofp_recurse(depth - 1, p);
    KEEP_FRAME(n);
    return n + 1;
}

FRAME int nofp_vla(int n, struct stack_pair *p)
{
    char buf[n];
    memset(buf, 2, sizeof buf);
    char *b = buf;
    KEEP_FRAME(b);
    int r = stack_leaf(p);
    KEEP_FRAME(r);
    return r + b[n - 1];
}

FRAME int nofp_big_frame(struct stack_pair *p)
{
    char buf[64 * 1024];
    memset(buf, 3, sizeof buf);
    char *b = buf;
    KEEP_FRAME(b);
    int r = stack_leaf(p);
    KEEP_FRAME(r);
    return r + b[100];
}

FRAME int nofp_huge_frame(struct stack_pair *p)
{
    char buf[1536 * 1024];
    memset(buf, 4, sizeof buf);
    char *b = buf;
    KEEP_FRAME(b);
    int r = stack_leaf(p);
    KEEP_FRAME(r);
    return r + b[100];
}

FRAME int nofp_leaf_offset(struct stack_pair *p)
{
    volatile int pad[37];
    pad[0] = 1;
    int r = stack_leaf(p);
    KEEP_FRAME(r);
    return r + pad[0];
}
