/*
 * stack_shapes.cc - C++ frames for test_stack.c: a template, a lambda
 * called through std::function, a try block (an FDE with a personality
 * routine and an LSDA), a virtual call, and a capture after an exception
 * was thrown and caught.
 */
#include <functional>
#include <stdexcept>

#include "stack_shapes.h"

namespace {

template <typename T>
FRAME int through_template(T depth, struct stack_pair *p)
{
    int n = depth > 0 ? through_template<T>(depth - 1, p) : stack_leaf(p);
    KEEP_FRAME(n);
    return n + 1;
}

struct shape {
    virtual ~shape() {}
    virtual int run(struct stack_pair *p) = 0;
};

struct leaf_shape : shape {
    FRAME int run(struct stack_pair *p) override
    {
        int n = stack_leaf(p);
        KEEP_FRAME(n);
        return n + 1;
    }
};

FRAME int thrower(int v)
{
    if (v > 0)
        throw std::runtime_error("shape");
    return v;
}

FRAME int with_handler(struct stack_pair *p, int v)
{
    int n = 0;
    try {
        n = thrower(v);
        n += stack_leaf(p);
    } catch (const std::exception &) {
        n = -1;
    }
    KEEP_FRAME(n);
    return n;
}

FRAME int after_catch(struct stack_pair *p)
{
    int caught = with_handler(p, 1);
    KEEP_FRAME(caught);
    int n = with_handler(p, 0);
    KEEP_FRAME(n);
    return n + caught;
}

}  // namespace

extern "C" FRAME int cxx_shape(int which, struct stack_pair *p)
{
    int n = 0;
    switch (which) {
    case 0:
        n = through_template<long>(3, p);
        break;
    case 1: {
        std::function<int(struct stack_pair *)> f = [](struct stack_pair *q) {
            int r = stack_leaf(q);
            KEEP_FRAME(r);
            return r + 1;
        };
        n = f(p);
        break;
    }
    case 2:
        n = with_handler(p, 0);
        break;
    case 3: {
        leaf_shape s;
        shape *volatile sp = &s;
        n = sp->run(p);
        break;
    }
    default:
        n = after_catch(p);
        break;
    }
    KEEP_FRAME(n);
    return n;
}
