/*
 * stack_shapes.h - functions of many shapes for test_stack.c to capture
 * stacks through: built with and without frame pointers
 * (stack_shapes_fp.c, stack_shapes_nofp.c), in C++ (stack_shapes.cc) and in
 * a shared library (stack_shlib.c).  Each reaches stack_leaf(), which
 * captures the stack both ways.
 */
#ifndef SM_TEST_STACK_SHAPES_H
#define SM_TEST_STACK_SHAPES_H

#ifdef __cplusplus
extern "C" {
#endif

/* noipa: not inlined, cloned or folded with a look-alike, so each is one
 * real frame.  The empty asm after a call keeps it from becoming a jump,
 * which would take the caller's frame away. */
#if defined(__clang__)
#define FRAME __attribute__((noinline))
#else
#define FRAME __attribute__((noipa))
#endif
#define KEEP_FRAME(v) __asm__ volatile("" : "+r"(v))

struct stack_pair;

/* test_stack.c: capture the stack both ways into p; returns a count. */
int stack_leaf(struct stack_pair *p);

/* stack_shapes_fp.c, -fno-omit-frame-pointer. */
int fp_chain(int depth, struct stack_pair *p);     /* alternates with nofp_chain */
int fp_alloca(int n, struct stack_pair *p);        /* alloca of n bytes */

/* stack_shapes_nofp.c, -fomit-frame-pointer. */
int nofp_chain(int depth, struct stack_pair *p);   /* alternates with fp_chain */
int nofp_recurse(int depth, struct stack_pair *p); /* depth frames of itself */
int nofp_vla(int n, struct stack_pair *p);         /* a variable-length array */
int nofp_big_frame(struct stack_pair *p);          /* 64 KiB of locals */
int nofp_huge_frame(struct stack_pair *p);         /* 1.5 MiB of locals */
int nofp_leaf_offset(struct stack_pair *p);        /* the leaf's own frame: rsp-based */

/* stack_shapes.cc: which = 0 a template, 1 a lambda through std::function,
 * 2 a try block with a handler, 3 a virtual call, 4 an exception caught
 * before the capture. */
int cxx_shape(int which, struct stack_pair *p);

/* stack_shlib.c, loaded with dlopen: depth frames of its own, then cb. */
typedef int (*stack_cb)(struct stack_pair *p);
typedef int (*shlib_chain_fn)(int depth, stack_cb cb, struct stack_pair *p);

#ifdef __cplusplus
}
#endif

#endif
