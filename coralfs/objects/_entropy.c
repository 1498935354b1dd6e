/* An order-0 entropy coder for the streams the codecs squeeze (coralfs/objects/entropy.py):
 * static rANS over bytes, with the stream's own quantized frequencies in a small header.
 *
 * zstd codes literals with Huffman, which spends at least one bit on every symbol and a
 * whole number of bits on each: on the skewed streams of deltas (a bitmap with one change
 * in a hundred, the high byte of gaps, differences of 1-4) it stays 5-30% over the order-0
 * entropy. rANS spends a fraction of a bit where a symbol is likely.
 *
 * Stream layout (all integers little-endian):
 *   1 byte: scale - SCALE_MIN (bits 0-3; frequencies sum to 1 << scale, SCALE_MIN-SCALE_MAX,
 *           at least the number of symbols), log2(lanes) (bits 4-5; symbol i belongs to
 *           lane i % lanes, lanes up to LANES_MAX), narrow (bit 6: one lane of the narrow
 *           coder below); bit 7 zero
 *   1 byte: k - 1 (k distinct symbols)
 *   the frequency table as a bit string, least significant bit first, zero-padded to a byte:
 *     if k < 256, the symbols: a 0 bit then each symbol's distance from the one before
 *     (from -1) as an Elias gamma code, or a 1 bit then a 256-bit presence map;
 *     the index (among the k, ascending) of the symbol whose frequency is implied, in
 *     ceil(log2 k) bits; every other symbol's frequency (>= 1) as an Elias gamma code; the
 *     implied one is 1 << scale less their sum, and must be >= 1
 *   lanes 64-bit states, then the renormalization words (32-bit) in the order the decoder
 *   reads them; narrow: one 32-bit state in [NARROW_L, NARROW_L << 8), then the
 *   renormalization bytes in the order the decoder reads them.
 * The narrow coder (byte-wise renormalization, for streams under NARROW_BELOW symbols)
 * flushes 4 bytes instead of 8 a lane and rounds its body to a byte instead of a word: the
 * small streams of a delta frame (a small tensor's bitmap and differences) hold a few bytes
 * of information, where those 6 bytes are most of the cost; its branchy byte loop is
 * slower, which does not show on so few symbols.
 * The encoder picks the scale that makes header and body smallest (a small stream's table
 * costs more than a coarser quantization does), and implies its largest frequency.
 * The decoder reads a symbol's renormalization word (if any) right after decoding it, lanes
 * in order within each group of ``lanes`` symbols; after the last symbol every state must
 * be back at RANS_L and every byte consumed, so a damaged stream is refused, not misread.
 * States live in [RANS_L, RANS_L << 32): a decoded state is at least RANS_L >> scale, so
 * one word always brings it back, and whether it is needed is one comparison, done
 * without a branch (its outcome is as random as the data).
 *
 * Only the buffer protocol; the loops run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define RANS_L (1ull << 31)
#define SCALE_MIN 4
#define SCALE_MAX 16
#define LANES_MAX 8
#define LANE_SYMBOLS 32768 /* symbols a lane is given before another lane is added */
#define NARROW_L (1u << 23)
#define NARROW_BELOW 4096  /* shorter streams use the narrow coder */

static int bit_length(uint64_t v) {
    int b = 0;
    while (v) { b++; v >>= 1; }
    return b;
}

/* The frequencies of ``n`` symbols with counts ``c``: each present symbol >= 1, summing
 * to 1 << scale. Rounded to nearest; what rounding adds or takes goes to or comes from the
 * largest frequencies, where it costs the least. */
static void quantize(const uint64_t *c, uint64_t n, int scale, uint32_t *f) {
    const int64_t m = (int64_t)1 << scale;
    int64_t sum = 0;
    for (int s = 0; s < 256; s++) {
        if (!c[s]) { f[s] = 0; continue; }
        uint64_t q = (c[s] * (uint64_t)m + n / 2) / n;
        f[s] = q ? (uint32_t)q : 1;
        sum += f[s];
    }
    int64_t diff = m - sum;
    while (diff) {
        /* Growing: any present symbol; shrinking: one that stays >= 1. */
        const uint32_t floor = diff > 0 ? 0 : 1;
        int best = -1;
        for (int s = 0; s < 256; s++)
            if (f[s] > floor && (best < 0 || f[s] > f[best])) best = s;
        if (best < 0) break; /* cannot happen: the caller keeps k <= 1 << scale */
        if (diff > 0) { f[best] += (uint32_t)diff; diff = 0; }
        else {
            int64_t take = (int64_t)f[best] - 1;
            if (take > -diff) take = -diff;
            f[best] -= (uint32_t)take;
            diff += take;
        }
    }
}

/* The bits of the header and body of a stream with counts ``c`` at ``scale``; its
 * frequencies into ``f``, the body's bits into ``body``. */
static int64_t header_bits(const uint32_t *f);
static double scale_cost(const uint64_t *c, uint64_t n, int scale, uint32_t *f, double *body) {
    quantize(c, n, scale, f);
    double b = 0;
    for (int s = 0; s < 256; s++) if (c[s]) b += (double)c[s] * (scale - log2((double)f[s]));
    *body = b;
    return b + (double)header_bits(f);
}

/* A bit string written least significant bit first. */
typedef struct { uint8_t *p; uint64_t acc; int n; } bits_out;

static void put_bits(bits_out *w, uint64_t v, int nb) {
    /* nb <= 32 */
    w->acc |= v << w->n;
    w->n += nb;
    while (w->n >= 8) { *w->p++ = (uint8_t)w->acc; w->acc >>= 8; w->n -= 8; }
}

static void put_gamma(bits_out *w, uint32_t v) {
    /* v >= 1: bit_length(v) - 1 zeros, a one, then v's bits below its top bit */
    const int nb = bit_length(v);
    put_bits(w, 1ull << (nb - 1), nb);
    put_bits(w, v & ((1u << (nb - 1)) - 1), nb - 1);
}

static int gamma_len(uint32_t v) { return 2 * bit_length(v) - 1; }

static int ceil_log2(int k) { int b = 0; while ((1 << b) < k) b++; return b; }

/* The index, among the present symbols, of the largest frequency (the implied one). */
static int implied_of(const uint32_t *f, int *k_out) {
    int k = 0, best = 0, best_i = 0;
    for (int s = 0; s < 256; s++) {
        if (!f[s]) continue;
        if (f[s] > f[best] || !f[best]) { best = s; best_i = k; }
        k++;
    }
    *k_out = k;
    return best_i;
}

/* The bits of the present symbols as gamma-coded distances. */
static int64_t distance_bits(const uint32_t *f) {
    int64_t b = 0;
    for (int s = 0, prev = -1; s < 256; s++) if (f[s]) { b += gamma_len((uint32_t)(s - prev)); prev = s; }
    return b;
}

/* The header's length in bits for frequencies ``f``. */
static int64_t header_bits(const uint32_t *f) {
    int k;
    const int imp = implied_of(f, &k);
    int64_t b = 16;
    if (k < 256) {
        const int64_t gaps = distance_bits(f);
        b += 1 + (gaps < 256 ? gaps : 256);
    }
    b += ceil_log2(k);
    for (int s = 0, i = 0; s < 256; s++) if (f[s]) { if (i != imp) b += gamma_len(f[s]); i++; }
    return b;
}

/* The header (at most HEAD_MAX bytes) into ``p``; returns its end. */
#define HEAD_MAX (2 + (1 + 256 + 8 + 255 * 33 + 7) / 8)
static uint8_t *put_header(uint8_t *p, int scale, int lanes, const uint32_t *f) {
    int k;
    const int imp = implied_of(f, &k);
    *p++ = (uint8_t)((scale - SCALE_MIN) | (ceil_log2(lanes) << 4));
    *p++ = (uint8_t)(k - 1);
    bits_out w = {p, 0, 0};
    if (k < 256) {
        if (distance_bits(f) < 256) {
            put_bits(&w, 0, 1);
            for (int s = 0, prev = -1; s < 256; s++) if (f[s]) { put_gamma(&w, (uint32_t)(s - prev)); prev = s; }
        } else {
            put_bits(&w, 1, 1);
            for (int s = 0; s < 256; s++) put_bits(&w, f[s] != 0, 1);
        }
    }
    put_bits(&w, (uint64_t)imp, ceil_log2(k));
    for (int s = 0, i = 0; s < 256; s++) if (f[s]) { if (i != imp) put_gamma(&w, f[s]); i++; }
    if (w.n) put_bits(&w, 0, 8 - w.n);
    return w.p;
}

static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void store32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void store64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* The renormalization words and final states of ``src`` written backwards, ending at
 * ``end`` and not before ``lo``; returns where they start, or NULL when they do not fit.
 * The division of a state by a frequency is a multiplication by its reciprocal:
 * rcp = ceil(2^(63 + l) / f) with l = ceil(log2 f) gives floor(x / f) exactly for every
 * x < 2^63 (the rounding error stays under 1 / f). */
static uint8_t *encode_body(const uint8_t *src, Py_ssize_t n, int scale, int lanes, const uint32_t *f,
                            const uint32_t *cum, uint8_t *lo, uint8_t *end) {
    uint64_t x[LANES_MAX], rcp[256], top[256];
    int shift[256];
    for (int s = 0; s < 256; s++) {
        if (!f[s]) continue;
        int l = 0;
        while ((1ull << l) < f[s]) l++;
        shift[s] = 63 + l;
        rcp[s] = (uint64_t)((((unsigned __int128)1 << (63 + l)) + f[s] - 1) / f[s]);
        top[s] = ((RANS_L >> scale) << 32) * f[s];
    }
    for (int j = 0; j < lanes; j++) x[j] = RANS_L;
    uint8_t *p = end;
    const Py_ssize_t mask = lanes - 1;
    const uint64_t m = 1ull << scale;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        const uint32_t s = src[i];
        uint64_t v = x[i & mask];
        if (p - lo < 4) return NULL;
        const uint64_t e = v >= top[s];
        store32(p - 4, (uint32_t)v);
        p -= 4 * e;
        v >>= 32 * e;
        const uint64_t q = (uint64_t)(((unsigned __int128)v * rcp[s]) >> shift[s]);
        x[i & mask] = v + cum[s] + q * (m - f[s]);
    }
    if (p - lo < 8 * lanes) return NULL;
    for (int j = lanes - 1; j >= 0; j--) {
        p -= 8;
        store64(p, x[j]);
    }
    return p;
}

/* The narrow coder's body and state of ``src`` written backwards, ending at ``end`` and
 * not before ``lo``; returns where they start, or NULL when they do not fit. */
static uint8_t *encode_narrow(const uint8_t *src, Py_ssize_t n, int scale, const uint32_t *f, const uint32_t *cum,
                              uint8_t *lo, uint8_t *end) {
    uint32_t x = NARROW_L;
    uint8_t *p = end;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        const uint32_t s = src[i];
        const uint32_t top = ((NARROW_L >> scale) << 8) * f[s];
        while (x >= top) {
            if (p <= lo) return NULL;
            *--p = (uint8_t)x;
            x >>= 8;
        }
        x = ((x / f[s]) << scale) + (x % f[s]) + cum[s];
    }
    if (p - lo < 4) return NULL;
    p -= 4;
    store32(p, x);
    return p;
}

PyDoc_STRVAR(encode_doc,
"encode(src, limit) -> bytes or None\n\n"
"The bytes ``src`` as an order-0 rANS stream (the layout at the top of _entropy.c), or\n"
"None when it would not be shorter than ``limit`` bytes (judged from the counts first,\n"
"so a stream that would not win costs one counting pass). An empty ``src`` gives None.");

static PyObject *encode(PyObject *self, PyObject *args) {
    Py_buffer in;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*n:encode", &in, &limit)) return NULL;
    const uint8_t *src = in.buf;
    const Py_ssize_t n = in.len;
    PyObject *ret = NULL;
    uint8_t *buf = NULL;
    if (n == 0 || limit <= 0) { ret = Py_None; Py_INCREF(ret); goto done; }
    uint64_t c[4][256];
    uint32_t f[256], cum[256];
    int scale = SCALE_MIN;
    int lanes = 1;
    while (lanes < LANES_MAX && (Py_ssize_t)lanes * 2 * LANE_SYMBOLS <= n) lanes *= 2;
    const int narrow = n < NARROW_BELOW;
    double bits = 0;
    Py_ssize_t head_len = 0, got = -1;
    uint8_t head[HEAD_MAX];
    Py_BEGIN_ALLOW_THREADS
    memset(c, 0, sizeof c);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) { c[0][src[i]]++; c[1][src[i + 1]]++; c[2][src[i + 2]]++; c[3][src[i + 3]]++; }
    for (; i < n; i++) c[0][src[i]]++;
    for (int s = 0; s < 256; s++) c[0][s] += c[1][s] + c[2][s] + c[3][s];
    /* The scale whose table and body are smallest together: from the one the length
     * suggests, down while that is smaller, else up while that is (table + body is close
     * to unimodal in the scale; any scale decodes, so a near miss only costs bytes). */
    int k = 0;
    for (int s = 0; s < 256; s++) k += c[0][s] != 0;
    const int lowest = ceil_log2(k) > SCALE_MIN ? ceil_log2(k) : SCALE_MIN;
    int start = bit_length((uint64_t)n);
    start = start < lowest ? lowest : start > SCALE_MAX ? SCALE_MAX : start;
    double best = scale_cost(c[0], (uint64_t)n, start, f, &bits);
    scale = start;
    for (int dir = -1; dir <= 1; dir += 2) {
        int moved = 0;
        for (int sc = start + dir; sc >= lowest && sc <= SCALE_MAX; sc += dir) {
            uint32_t g[256];
            double body;
            const double b = scale_cost(c[0], (uint64_t)n, sc, g, &body);
            if (b >= best) break;
            best = b;
            bits = body;
            scale = sc;
            memcpy(f, g, sizeof g);
            moved = 1;
        }
        if (moved) break;
    }
    uint32_t acc = 0;
    for (int s = 0; s < 256; s++) {
        cum[s] = acc;
        acc += f[s];
    }
    head_len = put_header(head, scale, lanes, f) - head;
    head[0] |= (uint8_t)(narrow << 6);
    Py_END_ALLOW_THREADS
    /* The estimate is within a few bytes of the stream (the states' flush): skip the pass
     * when even it is not shorter. */
    if (head_len + (narrow ? 4 : 8 * lanes) + (Py_ssize_t)(bits / 8) >= limit) { ret = Py_None; Py_INCREF(ret); goto done; }
    buf = PyMem_Malloc((size_t)limit);
    if (!buf) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    uint8_t *start = narrow ? encode_narrow(src, n, scale, f, cum, buf + head_len, buf + limit)
                            : encode_body(src, n, scale, lanes, f, cum, buf + head_len, buf + limit);
    if (start) {
        memcpy(start - head_len, head, (size_t)head_len);
        got = buf + limit - (start - head_len);
        buf = start - head_len == buf ? buf : memmove(buf, start - head_len, (size_t)got);
    }
    Py_END_ALLOW_THREADS
    if (got < 0 || got >= limit) { ret = Py_None; Py_INCREF(ret); goto done; }
    ret = PyBytes_FromStringAndSize((const char *)buf, got);
done:
    PyMem_Free(buf);
    PyBuffer_Release(&in);
    return ret;
}

/* A bit string read least significant bit first, never past its end. */
typedef struct { const uint8_t *p, *end; uint64_t acc; int n; } bits_in;

static int get_bits(bits_in *r, int nb, uint32_t *v) {
    /* nb <= 32; -1 past the end */
    while (r->n < nb) {
        if (r->p >= r->end) return -1;
        r->acc |= (uint64_t)*r->p++ << r->n;
        r->n += 8;
    }
    *v = (uint32_t)(r->acc & ((1ull << nb) - 1));
    r->acc >>= nb;
    r->n -= nb;
    return 0;
}

static int get_gamma(bits_in *r, int max_bits, uint32_t *v) {
    int z = 0;
    uint32_t b;
    for (;;) {
        if (get_bits(r, 1, &b)) return -1;
        if (b) break;
        if (++z >= max_bits) return -1;
    }
    if (get_bits(r, z, &b)) return -1;
    *v = (1u << z) | b;
    return 0;
}

/* The header of a stream: scale, lanes, frequencies; returns the header's length or -1. */
static Py_ssize_t get_header(const uint8_t *p, Py_ssize_t len, int *scale, int *lanes, int *narrow, uint32_t *f) {
    if (len < 2 || p[0] >> 7) return -1;
    *narrow = (p[0] >> 6) & 1;
    *scale = SCALE_MIN + (p[0] & 15);
    *lanes = 1 << ((p[0] >> 4) & 3);
    const int k = p[1] + 1;
    if (*scale > SCALE_MAX || (*narrow && *lanes != 1) || k > (1 << *scale)) return -1;
    bits_in r = {p + 2, p + len, 0, 0};
    uint8_t present[256];
    uint32_t v;
    if (k == 256) memset(present, 1, sizeof present);
    else {
        memset(present, 0, sizeof present);
        if (get_bits(&r, 1, &v)) return -1;
        if (v) {
            int seen = 0;
            for (int s = 0; s < 256; s++) {
                if (get_bits(&r, 1, &v)) return -1;
                seen += present[s] = (uint8_t)v;
            }
            if (seen != k) return -1;
        } else {
            for (int j = 0, s = -1; j < k; j++) {
                if (get_gamma(&r, 9, &v)) return -1;
                s += (int)v;
                if (s > 255) return -1;
                present[s] = 1;
            }
        }
    }
    uint32_t imp;
    if (get_bits(&r, ceil_log2(k), &imp) || (int)imp >= k) return -1;
    uint64_t sum = 0;
    int imp_s = -1;
    for (int s = 0, i = 0; s < 256; s++) {
        f[s] = 0;
        if (!present[s]) continue;
        if ((uint32_t)i++ == imp) { imp_s = s; continue; }
        if (get_gamma(&r, SCALE_MAX + 1, &v)) return -1;
        f[s] = v;
        sum += v;
    }
    if (sum >= (1u << *scale)) return -1;
    f[imp_s] = (uint32_t)((1u << *scale) - sum);
    if (r.acc) return -1; /* the padding is zero */
    return r.p - p;
}

#define DECODE_ONE(J, CHECKED)                                                               \
    do {                                                                                     \
        uint64_t v_ = x[J];                                                                  \
        const uint32_t slot_ = (uint32_t)v_ & mask;                                          \
        const uint32_t s_ = sym[slot_];                                                      \
        v_ = f[s_] * (v_ >> scale) + slot_ - cum[s_];                                        \
        const uint64_t r_ = v_ < RANS_L;                                                     \
        if (CHECKED && r_ && end - p < 4) return -1;                                         \
        const uint64_t w_ = (v_ << 32) | load32(p);                                          \
        v_ = r_ ? w_ : v_;                                                                   \
        p += 4 * r_;                                                                         \
        x[J] = v_;                                                                           \
        *o++ = (uint8_t)s_;                                                                  \
    } while (0)

/* ``n`` symbols of the stream body [p, end) into ``o``; 0, or -1 if the body is damaged. */
static int decode_body(const uint8_t *p, const uint8_t *end, uint8_t *o, Py_ssize_t n, int scale, int lanes,
                       const uint8_t *sym, const uint32_t *f, const uint32_t *cum) {
    uint64_t x[LANES_MAX];
    if (end - p < 8 * lanes) return -1;
    for (int j = 0; j < lanes; j++, p += 8) {
        x[j] = load64(p);
        if (x[j] < RANS_L || x[j] >> 63) return -1;
    }
    const uint32_t mask = (1u << scale) - 1;
    Py_ssize_t i = 0;
    /* While a whole group's words are left, no read needs a bounds check (the checked
     * loop below must not read a word past the end even where it would not use it). */
    if (lanes == 1) {
        for (; i < n && end - p >= 4; i++) DECODE_ONE(0, 0);
    } else if (lanes == 4) {
        for (; i + 4 <= n && end - p >= 16; i += 4) { DECODE_ONE(0, 0); DECODE_ONE(1, 0); DECODE_ONE(2, 0); DECODE_ONE(3, 0); }
    } else if (lanes == 8) {
        for (; i + 8 <= n && end - p >= 32; i += 8) {
            DECODE_ONE(0, 0); DECODE_ONE(1, 0); DECODE_ONE(2, 0); DECODE_ONE(3, 0);
            DECODE_ONE(4, 0); DECODE_ONE(5, 0); DECODE_ONE(6, 0); DECODE_ONE(7, 0);
        }
    } else {
        for (; i + lanes <= n && end - p >= 4 * lanes; i += lanes)
            for (int j = 0; j < lanes; j++) DECODE_ONE(j, 0);
    }
    for (; i < n; i++) {
        uint64_t v_ = x[i & (lanes - 1)];
        const uint32_t slot_ = (uint32_t)v_ & mask;
        const uint32_t s_ = sym[slot_];
        v_ = f[s_] * (v_ >> scale) + slot_ - cum[s_];
        if (v_ < RANS_L) {
            if (end - p < 4) return -1;
            v_ = (v_ << 32) | load32(p);
            p += 4;
        }
        x[i & (lanes - 1)] = v_;
        *o++ = (uint8_t)s_;
    }
    if (p != end) return -1;
    for (int j = 0; j < lanes; j++) if (x[j] != RANS_L) return -1;
    return 0;
}

/* ``n`` symbols of a narrow coder's body [p, end) into ``o``; 0, or -1 if it is damaged. */
static int decode_narrow(const uint8_t *p, const uint8_t *end, uint8_t *o, Py_ssize_t n, int scale,
                         const uint8_t *sym, const uint32_t *f, const uint32_t *cum) {
    if (end - p < 4) return -1;
    uint32_t x = load32(p);
    p += 4;
    if (x < NARROW_L || x >> 31) return -1;
    const uint32_t mask = (1u << scale) - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint32_t slot = x & mask, s = sym[slot];
        x = f[s] * (x >> scale) + slot - cum[s];
        while (x < NARROW_L) {
            if (p >= end) return -1;
            x = (x << 8) | *p++;
        }
        *o++ = (uint8_t)s;
    }
    return p == end && x == NARROW_L ? 0 : -1;
}

PyDoc_STRVAR(decode_doc,
"decode(stream, n) -> bytes\n\n"
"The ``n`` bytes an :func:`encode` stream holds; ValueError if it is damaged (a header out\n"
"of range, bytes missing or left over, a final state that is not the initial one).");

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer in;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*n:decode", &in, &n)) return NULL;
    PyObject *ret = NULL;
    int scale, lanes, narrow;
    uint32_t f[256], cum[256];
    uint8_t *sym = NULL;
    const Py_ssize_t head = get_header(in.buf, in.len, &scale, &lanes, &narrow, f);
    if (head < 0 || n < 0) { PyErr_SetString(PyExc_ValueError, "entropy-coded stream header out of range"); goto done; }
    sym = PyMem_Malloc((size_t)1 << scale);
    ret = PyBytes_FromStringAndSize(NULL, n);
    if (!sym || !ret) { Py_CLEAR(ret); if (!sym) PyErr_NoMemory(); goto done; }
    int bad;
    Py_BEGIN_ALLOW_THREADS
    uint32_t acc = 0;
    for (int s = 0; s < 256; s++) {
        cum[s] = acc;
        if (f[s]) memset(sym + acc, s, f[s]);
        acc += f[s];
    }
    const uint8_t *p = (const uint8_t *)in.buf + head;
    const uint8_t *end = (const uint8_t *)in.buf + in.len;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(ret);
    bad = narrow ? decode_narrow(p, end, o, n, scale, sym, f, cum) : decode_body(p, end, o, n, scale, lanes, sym, f, cum);
    Py_END_ALLOW_THREADS
    if (bad) { Py_CLEAR(ret); PyErr_SetString(PyExc_ValueError, "entropy-coded stream is damaged"); }
done:
    PyMem_Free(sym);
    PyBuffer_Release(&in);
    return ret;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, encode_doc},
    {"decode", decode, METH_VARARGS, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_entropy",
    "An order-0 rANS coder for squeezed streams (see coralfs/objects/entropy.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__entropy(void) { return PyModule_Create(&module); }
