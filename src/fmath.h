/*
 * fmath.h: the two transcendental functions the profiler needs, ln and
 * exp, without libm.
 *
 * The sampler draws exponential intervals (-ln(u) * rate) and the profile
 * writer undoes the sampling (1 / (1 - exp(-size/rate))).  Linking libm for
 * those two calls cost a program that does not link it itself (most small
 * C programs) about half a MiB of resident memory: the dynamic loader maps
 * libm, runs its IFUNC resolvers (spread over its text) and walks its hash
 * tables on every symbol look-up of the program.  Go's runtime draws its sample intervals
 * without libm too (a small log2 table); here a short series is exact to a
 * few units in the last place, which the profile's arithmetic needs.
 *
 * Both are for finite arguments; the callers pass u in (0, 1] and x <= 0.
 */
#ifndef SM_FMATH_H
#define SM_FMATH_H

#include <stdint.h>
#include <string.h>

#define SM_LN2_HI 6.93147180369123816490e-01 /* ln 2, high bits (exact times small ints) */
#define SM_LN2_LO 1.90821492927058770002e-10 /* ln 2 - SM_LN2_HI */

static inline uint64_t sm_fm_bits(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline double sm_fm_double(uint64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* Natural logarithm of x > 0 (normal or subnormal).  x = m * 2^e with m in
 * [sqrt(1/2), sqrt(2)); ln m = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.172, and
 * the odd series to z^19 leaves an error below 1e-16 relative. */
static inline double sm_ln(double x)
{
    if (!(x > 0))
        return x == 0 ? -__builtin_inf() : __builtin_nan("");
    int e = 0;
    uint64_t b = sm_fm_bits(x);
    if ((b >> 52) == 0) { /* subnormal: scale into the normal range */
        x *= 18014398509481984.0; /* 2^54 */
        e = -54;
        b = sm_fm_bits(x);
    }
    e += (int)((b >> 52) & 0x7ff) - 1023;
    double m = sm_fm_double((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e++;
    }
    double z = (m - 1) / (m + 1), z2 = z * z;
    double s = 1.0 / 19;
    s = s * z2 + 1.0 / 17;
    s = s * z2 + 1.0 / 15;
    s = s * z2 + 1.0 / 13;
    s = s * z2 + 1.0 / 11;
    s = s * z2 + 1.0 / 9;
    s = s * z2 + 1.0 / 7;
    s = s * z2 + 1.0 / 5;
    s = s * z2 + 1.0 / 3;
    s = s * z2 + 1.0;
    return (double)e * SM_LN2_HI + (2 * z * s + (double)e * SM_LN2_LO);
}

/* e^x.  x = k ln2 + r with |r| <= ln2/2; e^r by its Taylor series to r^14
 * (error below 1e-17), then scaled by 2^k through the exponent bits. */
static inline double sm_exp(double x)
{
    if (x != x)
        return x;
    if (x < -745.2)
        return 0.0;
    if (x > 709.78)
        return __builtin_inf();
    double kf = x * 1.4426950408889634; /* x / ln 2 */
    int k = (int)(kf < 0 ? kf - 0.5 : kf + 0.5);
    double r = (x - (double)k * SM_LN2_HI) - (double)k * SM_LN2_LO;
    double p = 1.0 / 87178291200.0; /* 1/14! */
    static const double inv_fact[] = {
        1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
        1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,
        1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,        1.0 / 2.0,
        1.0,                1.0,
    };
    for (unsigned i = 0; i < sizeof inv_fact / sizeof inv_fact[0]; i++)
        p = p * r + inv_fact[i];
    /* 2^k, in two steps where k leaves the normal range. */
    if (k < -1021) {
        p *= sm_fm_double((uint64_t)(1023 - 600) << 52); /* 2^-600 */
        k += 600;
    } else if (k > 1023) {
        p *= 2.0;
        k -= 1;
    }
    return p * sm_fm_double((uint64_t)(k + 1023) << 52);
}

#endif
