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

/* ln(1 + i/64), i = 0..64, for sm_neg_ln_unit. */
static const double sm_ln_steps[65] = {
    0, 0.015504186535965254, 0.030771658666753687, 0.045809536031294201,
    0.06062462181643484, 0.075223421237587532, 0.089612158689687138, 0.10379679368164356,
    0.11778303565638346, 0.13157635778871926, 0.14518200984449789, 0.15860503017663857,
    0.17185025692665923, 0.18492233849401199, 0.19782574332991987, 0.21056476910734964,
    0.22314355131420976, 0.23556607131276691, 0.24783616390458124, 0.25995752443692605,
    0.27193371548364176, 0.28376817313064462, 0.2954642128938359, 0.30702503529491187,
    0.31845373111853459, 0.32975328637246798, 0.34092658697059319, 0.3519764231571782,
    0.36290549368936847, 0.37371640979358406, 0.38441169891033206, 0.39499380824086899,
    0.40546510810816438, 0.41582789514371099, 0.42608439531090003, 0.43623676677491807,
    0.44628710262841953, 0.45623743348158763, 0.46608972992459924, 0.47584590486996392,
    0.48550781578170077, 0.49507726679785152, 0.50455601075239531, 0.51394575110223428,
    0.52324814376454787, 0.53246479886947184, 0.54159728243274441, 0.5506471179526623,
    0.55961578793542266, 0.56850473535266866, 0.57731536503482361, 0.58604904500357824,
    0.59470710774669278, 0.60329085143808425, 0.61180154110599294, 0.62024040975185757,
    0.62860865942237409, 0.63690746223706918, 0.6451379613735847, 0.65330127201274568,
    0.66139848224536502, 0.66943065394262924, 0.67739882359180614, 0.68530400309891937,
    0.69314718055994529,
};

/* -ln(q / 2^bits) for q in [1, 2^bits], bits <= 52: the sampler's
 * exponential draw.  q = m * 2^e with m in [1, 2); ln m from the table
 * above, linear between its points: below the true value by at most
 * (1/64)^2 / 8 = 3.1e-5, so the mean gap between samples is long by at
 * most that much, relatively (Go's sampler uses a table of log2 the same
 * way).  No division and a short chain: sm_ln's series costs about four
 * times as much. */
static inline double sm_neg_ln_unit(uint64_t q, unsigned bits)
{
    double x = (double)q;
    uint64_t b = sm_fm_bits(x);
    int e = (int)((b >> 52) & 0x7ff) - 1023;
    uint64_t frac = b & 0x000fffffffffffffull;
    unsigned i = (unsigned)(frac >> 46);                         /* top 6 bits */
    double t = (double)(frac & ((1ull << 46) - 1)) * (1.0 / 70368744177664.0); /* 2^46 */
    double ln_m = sm_ln_steps[i] + t * (sm_ln_steps[i + 1] - sm_ln_steps[i]);
    return ((double)bits - (double)e) * 0.69314718055994531 - ln_m;
}

#endif
