/*
 * Two SHA-256 streams over one buffer, interleaved on one core with the x86 SHA extensions.
 *
 * Why: the one-pass hashing (registry/hashing.py) needs the SHA-256 of the whole file and
 * Civitai's AutoV3 (the SHA-256 of everything after the safetensors header): two independent
 * SHA-256 streams over nearly the same bytes.  One SHA-NI stream is bound by the latency of
 * sha256rnds2, not by its throughput, so two streams whose rounds are interleaved run on one
 * core in much less than twice the time of one (measured: docs/benchmarks.md, "Hashing").  That
 * leaves the second core to the other hashers and the reading.
 *
 * update(data, a_begin, b_begin) feeds data[a_begin:] to stream A and data[b_begin:] to stream B
 * (the caller decides where AutoV3 starts, and may feed one stream alone).  Both are plain FIPS 180-4 SHA-256; the tests compare
 * them with hashlib over random splits.  The GIL is released while blocks are compressed.
 *
 * Built only where the compiler knows the SHA extensions (GCC/Clang on x86-64); elsewhere, or on
 * a CPU without them (`AVAILABLE` is False, and making a Sha256Pair raises RuntimeError),
 * modelsafe uses two hashlib streams instead.  One object may be fed by two threads at once only
 * one stream each (update(d, 0, len(d)) and update(d, len(d), 0)), as registry/hashing.py does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define MS_HAVE_SHANI 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define MS_HAVE_SHANI 0
#endif

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

typedef struct {
    uint32_t h[8];        /* H0..H7 */
    uint64_t length;      /* bytes fed */
    uint8_t pending[64];  /* a partial block */
    size_t npending;
} stream_t;

#if MS_HAVE_SHANI
#define MS_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* One group of four rounds for one state; `w` holds the four message words. */
#define MS_ROUNDS4(s0, s1, w, i)                                                    \
    do {                                                                             \
        __m128i m_ = _mm_add_epi32((w), _mm_loadu_si128((const __m128i *)&K256[4 * (i)])); \
        (s1) = _mm_sha256rnds2_epu32((s1), (s0), m_);                                \
        m_ = _mm_shuffle_epi32(m_, 0x0E);                                            \
        (s0) = _mm_sha256rnds2_epu32((s0), (s1), m_);                                \
    } while (0)

/* W[i] (words 4i..4i+3) from the four before it, in the rolling array w[0..3]. */
#define MS_SCHEDULE(w, i)                                                               \
    (w)[(i) & 3] = _mm_sha256msg2_epu32(                                                \
        _mm_add_epi32(_mm_sha256msg1_epu32((w)[(i) & 3], (w)[((i) - 3) & 3]),            \
                      _mm_alignr_epi8((w)[((i) - 1) & 3], (w)[((i) - 2) & 3], 4)),     \
        (w)[((i) - 1) & 3])

MS_TARGET static inline void to_lanes(const uint32_t h[8], __m128i *abef, __m128i *cdgh)
{
    __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]); /* ABCD */
    __m128i st1 = _mm_loadu_si128((const __m128i *)&h[4]); /* EFGH */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                       /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);                       /* HGFE */
    *abef = _mm_alignr_epi8(tmp, st1, 8);                     /* ABEF */
    *cdgh = _mm_blend_epi16(st1, tmp, 0xF0);                  /* CDGH */
}

MS_TARGET static inline void from_lanes(uint32_t h[8], __m128i abef, __m128i cdgh)
{
    __m128i tmp = _mm_shuffle_epi32(abef, 0x1B);  /* FEBA */
    cdgh = _mm_shuffle_epi32(cdgh, 0xB1);         /* DCHG */
    abef = _mm_blend_epi16(tmp, cdgh, 0xF0);      /* DCBA */
    cdgh = _mm_alignr_epi8(cdgh, tmp, 8);         /* ABEF -> HGFE */
    _mm_storeu_si128((__m128i *)&h[0], abef);
    _mm_storeu_si128((__m128i *)&h[4], cdgh);
}

MS_TARGET static void compress1(uint32_t h[8], const uint8_t *p, size_t blocks)
{
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i s0, s1;
    to_lanes(h, &s0, &s1);
    for (; blocks; blocks--, p += 64) {
        __m128i w[4];
        const __m128i save0 = s0, save1 = s1;
        for (int i = 0; i < 4; i++) {
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
            MS_ROUNDS4(s0, s1, w[i], i);
        }
#pragma GCC unroll 12
        for (int i = 4; i < 16; i++) {
            MS_SCHEDULE(w, i);
            MS_ROUNDS4(s0, s1, w[i & 3], i);
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
    }
    from_lanes(h, s0, s1);
}

/* `blocks` blocks of each of two independent streams, their rounds interleaved. */
MS_TARGET static void compress2(uint32_t ha[8], const uint8_t *pa, uint32_t hb[8],
                                const uint8_t *pb, size_t blocks)
{
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i a0, a1, b0, b1;
    to_lanes(ha, &a0, &a1);
    to_lanes(hb, &b0, &b1);
    for (; blocks; blocks--, pa += 64, pb += 64) {
        __m128i wa[4], wb[4];
        const __m128i sa0 = a0, sa1 = a1, sb0 = b0, sb1 = b1;
        for (int i = 0; i < 4; i++) {
            wa[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * i)), mask);
            wb[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * i)), mask);
            MS_ROUNDS4(a0, a1, wa[i], i);
            MS_ROUNDS4(b0, b1, wb[i], i);
        }
#pragma GCC unroll 12
        for (int i = 4; i < 16; i++) {
            MS_SCHEDULE(wa, i);
            MS_SCHEDULE(wb, i);
            MS_ROUNDS4(a0, a1, wa[i & 3], i);
            MS_ROUNDS4(b0, b1, wb[i & 3], i);
        }
        a0 = _mm_add_epi32(a0, sa0);
        a1 = _mm_add_epi32(a1, sa1);
        b0 = _mm_add_epi32(b0, sb0);
        b1 = _mm_add_epi32(b1, sb1);
    }
    from_lanes(ha, a0, a1);
    from_lanes(hb, b0, b1);
}

/* Code that ran before on this core (ISA-L's CRC-32 with AVX-512, for one) may leave the upper
 * halves of the vector registers dirty; the SSE-encoded SHA code below then runs about half as
 * fast (measured on AMD Zen: 1.1 vs 0.54 s/GiB).  vzeroupper first, where the CPU has AVX. */
static int have_avx;

__attribute__((target("avx"))) static void clear_upper(void) { _mm256_zeroupper(); }

static void prepare_vector_state(void)
{
    if (have_avx)
        clear_upper();
}

static int cpu_has_avx(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 27)) || !(c & (1u << 28))) /* OSXSAVE, AVX */
        return 0;
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 6) == 6; /* the OS saves XMM and YMM state */
}

static int cpu_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19))) /* SSSE3, SSE4.1 */
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1; /* SHA */
}
#else
static void compress1(uint32_t h[8], const uint8_t *p, size_t blocks)
{
    (void)h; (void)p; (void)blocks;
}
static void compress2(uint32_t ha[8], const uint8_t *pa, uint32_t hb[8], const uint8_t *pb,
                      size_t blocks)
{
    (void)ha; (void)pa; (void)hb; (void)pb; (void)blocks;
}
static int cpu_has_shani(void) { return 0; }
static int cpu_has_avx(void) { return 0; }
static void prepare_vector_state(void) {}
static int have_avx;
#endif

static void stream_init(stream_t *s)
{
    memcpy(s->h, H0, sizeof H0);
    s->length = 0;
    s->npending = 0;
}

/* Top up the pending block from *p; compress it when full.  Leaves *p block-aligned for this
 * stream or *n == 0.  A stream given no bytes is not touched at all: two threads may feed the
 * two streams of one object at the same time (update with a_begin or b_begin = len). */
static void stream_fill(stream_t *s, const uint8_t **p, size_t *n)
{
    if (*n == 0 || s->npending == 0)
        return;
    size_t take = 64 - s->npending;
    if (take > *n)
        take = *n;
    memcpy(s->pending + s->npending, *p, take);
    s->npending += take;
    *p += take;
    *n -= take;
    if (s->npending == 64) {
        compress1(s->h, s->pending, 1);
        s->npending = 0;
    }
}

static void stream_stash(stream_t *s, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(s->pending + s->npending, p, n);
    s->npending += n;
}

static void stream_digest(const stream_t *s, uint8_t out[32])
{
    stream_t t = *s;
    uint8_t tail[128];
    size_t n = t.npending;
    memcpy(tail, t.pending, n);
    tail[n++] = 0x80;
    size_t total = (n + 8 <= 64) ? 64 : 128;
    memset(tail + n, 0, total - n);
    uint64_t bits = t.length * 8;
    for (int i = 0; i < 8; i++)
        tail[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    compress1(t.h, tail, total / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(t.h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(t.h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(t.h[i] >> 8);
        out[4 * i + 3] = (uint8_t)t.h[i];
    }
}

typedef struct {
    PyObject_HEAD
    stream_t a;
    char apart[64]; /* a and b on different cache lines: two threads may feed one each */
    stream_t b;
} PairObject;

static int available; /* SHA extensions compiled in and present on this CPU */

static PyObject *pair_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return NULL;
    if (!available) {
        PyErr_SetString(PyExc_RuntimeError,
                        "no x86 SHA extensions here (_sha256x2.AVAILABLE is False)");
        return NULL;
    }
    PairObject *self = (PairObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    stream_init(&self->a);
    stream_init(&self->b);
    return (PyObject *)self;
}

static PyObject *pair_update(PairObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t a_begin, b_begin;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &a_begin, &b_begin))
        return NULL;
    if (a_begin < 0 || a_begin > view.len || b_begin < 0 || b_begin > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a_begin and b_begin must lie within the data");
        return NULL;
    }
    const uint8_t *pa = (const uint8_t *)view.buf + a_begin;
    const uint8_t *pb = (const uint8_t *)view.buf + b_begin;
    size_t na = (size_t)(view.len - a_begin), nb = (size_t)(view.len - b_begin);
    if (na)
        self->a.length += na;
    if (nb)
        self->b.length += nb;
    Py_BEGIN_ALLOW_THREADS
    prepare_vector_state();
    stream_fill(&self->a, &pa, &na);
    stream_fill(&self->b, &pb, &nb);
    size_t ba = na / 64, bb = nb / 64;
    size_t both = ba < bb ? ba : bb;
    if (both)
        compress2(self->a.h, pa, self->b.h, pb, both);
    if (ba > both)
        compress1(self->a.h, pa + 64 * both, ba - both);
    if (bb > both)
        compress1(self->b.h, pb + 64 * both, bb - both);
    stream_stash(&self->a, pa + 64 * ba, na - 64 * ba);
    stream_stash(&self->b, pb + 64 * bb, nb - 64 * bb);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *digests(PairObject *self, PyObject *Py_UNUSED(ignored))
{
    uint8_t da[32], db[32];
    prepare_vector_state();
    stream_digest(&self->a, da);
    stream_digest(&self->b, db);
    return Py_BuildValue("(y#y#)", (const char *)da, (Py_ssize_t)32, (const char *)db,
                         (Py_ssize_t)32);
}

static PyMethodDef pair_methods[] = {
    {"update", (PyCFunction)pair_update, METH_VARARGS,
     "update(data, a_begin, b_begin): feed data[a_begin:] to stream A and data[b_begin:] to stream B\n"
     "(len(data) feeds a stream nothing); whole blocks of both are compressed interleaved."},
    {"digests", (PyCFunction)digests, METH_NOARGS,
     "digests() -> (a, b): the two SHA-256 digests (32 bytes each) of what was fed so far."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "modelsafe.registry._sha256x2.Sha256Pair",
    .tp_basicsize = sizeof(PairObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Two SHA-256 streams over one buffer (A: all of it, B: a suffix), interleaved.",
    .tp_methods = pair_methods,
    .tp_new = pair_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_sha256x2",
    .m_doc = "Two interleaved SHA-256 streams with the x86 SHA extensions (registry/_sha256x2.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__sha256x2(void)
{
    if (PyType_Ready(&PairType) < 0)
        return NULL;
    have_avx = cpu_has_avx();
    available = MS_HAVE_SHANI && cpu_has_shani();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PairType);
    if (PyModule_AddObject(m, "Sha256Pair", (PyObject *)&PairType) < 0) {
        Py_DECREF(&PairType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *flag = PyBool_FromLong(available);
    if (PyModule_AddObject(m, "AVAILABLE", flag) < 0) {
        Py_DECREF(flag);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
