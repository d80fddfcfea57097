/*
 * stack_shlib.c - a shared library for test_stack.c, loaded with dlopen:
 * frames from another object's .eh_frame, built without frame pointers,
 * and an object to unload (the unwinder's cache must forget it).
 */
#include "stack_shapes.h"

FRAME int shlib_chain(int depth, stack_cb cb, struct stack_pair *p)
{
    int n = depth == 0 ? cb(p) : shlib_chain(depth - 1, cb, p);
    KEEP_FRAME(n);
    return n + 1;
}
