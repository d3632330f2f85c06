/* v6mostly.siit._accel: the optional C accelerator of the SIIT data plane (issue 13).
 *
 * Theory of operation
 * -------------------
 * ``Accel(translator, fallback, packets, octets, config...)`` holds a copy of a Translator's
 * configuration (built by siit/accel.py, which also says what it refuses). Two entry points:
 *
 * * ``translate_into(buf, start, end)``: the in-place API of ``Translator.translate_into``.
 *   The common case (_accel_xlat.h) is translated here; anything else goes, untouched, to
 *   ``fallback`` (the pure-Python core), so results and counters are the core's own.
 * * ``run(fd, buf, token, w, werr, vnet, budget)``: read -> translate -> write for as many
 *   packets as the queue holds (at most ``budget``), with the GIL released. Reads do not block
 *   (RWF_NOWAIT, else poll with a zero timeout), except the first with ``block`` (below), so
 *   Python signal handlers run whenever this returns. ``token`` is the worker's read buffer
 *   (``rd[0]``): a stop
 *   handler swaps in a read-only one, and then this raises BufferError as ``os.readv`` does.
 *   Returns n >= 0: a packet of n bytes read at buf[20:] that the fast path declined (Python
 *   translates it); -1: the queue is empty; -2: call again (budget used up, or EINTR).
 *   A read error raises OSError; a failed write counts ``w[werr]``. With ``vnet`` (offload
 *   mode) a 10-byte virtio-net header comes first: packets without GSO are taken, with no
 *   offload or DATA_VALID (out with a zero header, as worker_loops.run_vnet) or with a
 *   partial checksum (NEEDS_CSUM, as worker_loops._vnet_fast); GSO super-packets (TCP, UDP)
 *   too once ``set_gso_counters`` said where to count them, translated whole (no MTU
 *   checks: the kernel cuts them after the write) under _vnet_fast's conditions.
 * * ``run(..., budget, out6, eth)`` (the CLAT, services/clat_loops.py): the same, but IPv6
 *   results leave through ``out6`` while IPv4 results still go back into ``fd``. ``eth`` None:
 *   ``out6`` is a raw IPv6 socket (IPPROTO_RAW), the packet is sent alone to its destination
 *   (bytes 24..40, port 0) as clat_loop's ``sendto``; ``eth`` 14 bytes (clat_loops.ETH_IPV6):
 *   ``out6`` is a TAP, written [vnet header, eth, packet] as clat_loops._tap_parts does (the
 *   header's csum_start and hdr_len, when set, count the 14 bytes). A failed send counts
 *   ``w[werr]`` too. ``out6`` -1 (the default): everything goes back into ``fd``.
 * * ``run(..., out6, eth, block)``: with ``block`` true the first read is the worker's
 *   blocking read (the queue fd is blocking), so the packet that wakes a worker up is
 *   translated and written before any Python runs: ~75 us less ping RTT on this VM than
 *   Python's ``os.readv`` with the cold caches of an idle interpreter. Interrupted by a
 *   signal before anything was read, it runs the handlers at once, with the read buffer
 *   still held (worker_loops._Loop.in_readv: a stop leaves now, as from os.readv), then
 *   returns -2. Later reads of the call never block: a signal that arrives meanwhile is
 *   handled when this returns, before the next blocking read.
 *
 * Counters: ``packets``/``octets`` are the Translator's (``Stats.packets``/``octets``): a
 * writable buffer of 8 uint64 (the shared memory of the workers) or any Python sequence
 * (then ``run`` is refused: it counts without the GIL).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "_accel_xlat.h"

#define VNET_LEN 10

typedef struct {
    PyObject_HEAD
    PyObject *xl, *fallback, *packets, *octets, *wkp, *xl_dict;
    Py_buffer pbuf, obuf;
    uint64_t *pc, *oc;      /* non-NULL: the counters are buffers */
    int nowait;             /* 0: try preadv2(RWF_NOWAIT); -1: the fd refused it, poll */
    /* The adaptive poll of run() (set_poll): spin up to poll_ns after a packet, at most
     * poll_cap_ns of spinning per second (poll_spent_ns since poll_epoch_ns). */
    long long poll_ns, poll_cap_ns, poll_epoch_ns, poll_spent_ns;
    Py_ssize_t poll_hits_idx, poll_spin_idx;
    /* set_gso_counters: where run() counts the GSO super-packets it translates (and their
     * segments) in the worker counters; gso_set 0: run() leaves super-packets to Python. */
    int gso_set;
    Py_ssize_t gso_idx, segs_idx;
    XlConfig c;
} Accel;

static PyObject *s_ip_id;

static int get_counters(PyObject *obj, Py_buffer *view, uint64_t **out)
{
    char f;
    *out = NULL;
    if (!PyObject_CheckBuffer(obj))
        return 0;
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        return 0;
    }
    f = view->format ? view->format[view->format[0] == '@' || view->format[0] == '='] : 0;
    if (view->itemsize != 8 || view->len < 64 || (f != 'Q' && f != 'L')) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "counters: expected 8 unsigned 64-bit integers");
        return -1;
    }
    *out = (uint64_t *)view->buf;
    return 0;
}

static int cmp_p6(const void *a, const void *b)
{
    return ((const XlEam *)b)->p6 - ((const XlEam *)a)->p6;
}

static int cmp_p4(const void *a, const void *b)
{
    return ((const XlEam *)b)->p4 - ((const XlEam *)a)->p4;
}

static int addr_arg(PyObject *o, uint8_t *out, Py_ssize_t n, int *has)
{
    *has = 0;
    if (o == Py_None)
        return 0;
    if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) != n) {
        PyErr_Format(PyExc_ValueError, "expected None or %zd bytes", n);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(o), (size_t)n);
    *has = 1;
    return 0;
}

/* Accel(xl, fallback, packets, octets, pool6, pool6_len, wkp_table, eam, v4addr, v6addr,
 *       amend_udp, decrement_ttl, expire_6to4, reset_tc, hairpinning, ip_id_base, ip_id_end) */
static int Accel_init(Accel *a, PyObject *args, PyObject *kw)
{
    PyObject *xl, *fb, *pk, *oc, *pool6, *wkp, *eam, *v4, *v6;
    int plen, amend, dec, exp, rtc, hp;
    long base, end;
    Py_ssize_t i, n;
    static const int pos[97][4] = {
        [32] = {4, 5, 6, 7}, [40] = {5, 6, 7, 9}, [48] = {6, 7, 9, 10},
        [56] = {7, 9, 10, 11}, [64] = {9, 10, 11, 12}, [96] = {12, 13, 14, 15}};
    if (kw && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "Accel() takes no keyword arguments");
        return -1;
    }
    if (a->xl) {
        PyErr_SetString(PyExc_TypeError, "Accel() is initialised once");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOOOOiOO!OOppppp" "ll", &xl, &fb, &pk, &oc, &pool6, &plen, &wkp,
                          &PyList_Type, &eam, &v4, &v6, &amend, &dec, &exp, &rtc, &hp, &base, &end))
        return -1;
    memset(&a->c, 0, sizeof a->c);
    if (pool6 != Py_None) {
        if (addr_arg(pool6, a->c.pool6, 16, &a->c.has_pool6) < 0)
            return -1;
        if (plen < 32 || plen > 96 || pos[plen][0] == 0) {
            PyErr_SetString(PyExc_ValueError, "pool6: RFC 6052 lengths only");
            return -1;
        }
        memcpy(a->c.pool6_pos, pos[plen], sizeof a->c.pool6_pos);
        a->c.pool6_head = pos[plen][0];
    }
    if (wkp != Py_None) {
        if (!PyBytes_Check(wkp) || PyBytes_GET_SIZE(wkp) != 65536) {
            PyErr_SetString(PyExc_ValueError, "wkp_table: expected 65536 bytes");
            return -1;
        }
        a->c.wkp_ok = (const uint8_t *)PyBytes_AS_STRING(wkp);
    }
    n = PyList_GET_SIZE(eam);
    if (n > XL_MAX_EAM) {
        PyErr_Format(PyExc_ValueError, "more than %d EAM entries", XL_MAX_EAM);
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(eam, i);
        const char *b6, *b4;
        Py_ssize_t l6, l4;
        XlEam *e = &a->c.eam6[i];
        if (!PyArg_ParseTuple(t, "y#iy#i", &b6, &l6, &e->p6, &b4, &l4, &e->p4))
            return -1;
        if (l6 != 16 || l4 != 4 || e->p6 < 0 || e->p6 > 128 || e->p4 < 0 || e->p4 > 32 ||
            128 - e->p6 < 32 - e->p4) {
            PyErr_SetString(PyExc_ValueError, "EAM entry: (net6, len6, net4, len4)");
            return -1;
        }
        e->net6 = xl_be128((const uint8_t *)b6);
        e->net4 = xl_be32((const uint8_t *)b4);
        a->c.eam4[i] = *e;
    }
    a->c.n_eam = (int)n;
    qsort(a->c.eam6, (size_t)n, sizeof(XlEam), cmp_p6);
    qsort(a->c.eam4, (size_t)n, sizeof(XlEam), cmp_p4);
    if (addr_arg(v4, a->c.v4addr, 4, &a->c.has_v4addr) < 0 ||
        addr_arg(v6, a->c.v6addr, 16, &a->c.has_v6addr) < 0)
        return -1;
    if (base < 0 || end > 65536 || base >= end) {
        PyErr_SetString(PyExc_ValueError, "ip_id slice");
        return -1;
    }
    a->c.amend_udp = amend, a->c.decrement_ttl = dec, a->c.expire_6to4 = exp;
    a->c.reset_tc = rtc, a->c.hairpinning = hp;
    a->c.ip_id_base = base, a->c.ip_id_end = end;
    a->c.ipv6_mtu = a->c.ipv4_mtu = a->c.frag_mtu = 0;  /* set_mtu() before use */
    if (get_counters(pk, &a->pbuf, &a->pc) < 0)
        return -1;
    if (get_counters(oc, &a->obuf, &a->oc) < 0 || (a->pc == NULL) != (a->oc == NULL)) {
        if (a->pc)
            PyBuffer_Release(&a->pbuf);
        if (a->oc)
            PyBuffer_Release(&a->obuf);
        a->pc = a->oc = NULL;
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "packets and octets: both buffers or neither");
        return -1;
    }
    a->xl_dict = PyObject_GenericGetDict(xl, NULL);
    if (!a->xl_dict || !PyDict_Check(a->xl_dict)) {
        PyErr_Clear();
        Py_CLEAR(a->xl_dict);
    }
    Py_INCREF(xl), Py_INCREF(fb), Py_INCREF(pk), Py_INCREF(oc), Py_INCREF(wkp);
    a->xl = xl, a->fallback = fb, a->packets = pk, a->octets = oc, a->wkp = wkp;
    return 0;
}

static int Accel_traverse(Accel *a, visitproc visit, void *arg)
{
    Py_VISIT(a->xl);
    Py_VISIT(a->fallback);
    Py_VISIT(a->packets);
    Py_VISIT(a->octets);
    Py_VISIT(a->wkp);
    Py_VISIT(a->xl_dict);
    return 0;
}

static int Accel_clear(Accel *a)
{
    if (a->pc)
        PyBuffer_Release(&a->pbuf);
    if (a->oc)
        PyBuffer_Release(&a->obuf);
    a->pc = a->oc = NULL;
    a->c.wkp_ok = NULL;
    a->c.has_pool6 = a->c.n_eam = 0;
    a->c.ipv6_mtu = a->c.ipv4_mtu = a->c.frag_mtu = 0;  /* declines everything from now */
    Py_CLEAR(a->xl);
    Py_CLEAR(a->fallback);
    Py_CLEAR(a->packets);
    Py_CLEAR(a->octets);
    Py_CLEAR(a->wkp);
    Py_CLEAR(a->xl_dict);
    return 0;
}

static void Accel_dealloc(Accel *a)
{
    PyObject_GC_UnTrack(a);
    Accel_clear(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *Accel_set_mtu(Accel *a, PyObject *args)
{
    long v6, v4, frag;
    if (!PyArg_ParseTuple(args, "lll", &v6, &v4, &frag))
        return NULL;
    a->c.ipv6_mtu = v6, a->c.ipv4_mtu = v4, a->c.frag_mtu = frag;
    Py_RETURN_NONE;
}

/* set_poll(poll_ns, cap_ns, hits_index, spin_index): when the queue is found empty, run()
 * keeps reading (non-blocking) for up to poll_ns before it returns "empty", spending at most
 * cap_ns per second on it; the worker counters at hits_index / spin_index count the packets a
 * poll found and the microseconds spent polling. poll_ns 0: no poll. */
static PyObject *Accel_set_poll(Accel *a, PyObject *args)
{
    long long poll, cap;
    Py_ssize_t hits, spin;
    if (!PyArg_ParseTuple(args, "LLnn", &poll, &cap, &hits, &spin))
        return NULL;
    if (poll < 0 || cap < 0 || hits < 0 || spin < 0) {
        PyErr_SetString(PyExc_ValueError, "set_poll(): negative argument");
        return NULL;
    }
    a->poll_ns = poll, a->poll_cap_ns = cap, a->poll_hits_idx = hits, a->poll_spin_idx = spin;
    a->poll_epoch_ns = 0, a->poll_spent_ns = 0;
    Py_RETURN_NONE;
}

/* set_gso_counters(gso_index, segs_index): run() translates GSO super-packets (TCP and
 * UDP, with a partial checksum: worker_loops._vnet_fast) and counts them and their segments
 * at these worker counters, as handle_vnet_packet does; until then it leaves them to Python. */
static PyObject *Accel_set_gso_counters(Accel *a, PyObject *args)
{
    Py_ssize_t g, sg;
    if (!PyArg_ParseTuple(args, "nn", &g, &sg))
        return NULL;
    if (g < 0 || sg < 0) {
        PyErr_SetString(PyExc_ValueError, "set_gso_counters(): negative index");
        return NULL;
    }
    a->gso_idx = g, a->segs_idx = sg, a->gso_set = 1;
    Py_RETURN_NONE;
}

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The time spent polling since ``since``, charged to this second's allowance. */
static void poll_charge(Accel *a, uint64_t *wc, long long since, long long now)
{
    if (now - a->poll_epoch_ns >= 1000000000LL)
        a->poll_epoch_ns = now, a->poll_spent_ns = 0;
    a->poll_spent_ns += now - since;
    wc[a->poll_spin_idx] += (uint64_t)((now - since) / 1000);
}

/* The translator's ``ip_id`` (its instance dict when it has one: the cheap way). */
static int load_ip_id(Accel *a)
{
    PyObject *o = a->xl_dict ? PyDict_GetItemWithError(a->xl_dict, s_ip_id) : NULL;
    long v;
    if (o)
        Py_INCREF(o);
    else if (PyErr_Occurred() || !(o = PyObject_GetAttr(a->xl, s_ip_id)))
        return -1;
    v = PyLong_AsLong(o);
    Py_DECREF(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    a->c.ip_id = v;
    return 0;
}

static int store_ip_id(Accel *a)
{
    PyObject *o = PyLong_FromLong(a->c.ip_id);
    int r;
    if (!o)
        return -1;
    r = a->xl_dict && PyDict_GetItemWithError(a->xl_dict, s_ip_id)
            ? PyDict_SetItem(a->xl_dict, s_ip_id, o)
            : PyObject_SetAttr(a->xl, s_ip_id, o);
    Py_DECREF(o);
    return r;
}

static int add_seq(PyObject *seq, Py_ssize_t i, long v)
{
    PyObject *old = PySequence_GetItem(seq, i), *one, *sum;
    int r = -1;
    if (!old)
        return -1;
    one = PyLong_FromLong(v);
    sum = one ? PyNumber_Add(old, one) : NULL;
    if (sum)
        r = PySequence_SetItem(seq, i, sum);
    Py_DECREF(old);
    Py_XDECREF(one);
    Py_XDECREF(sum);
    return r;
}

/* translate_into(buf, start, end) -> (out_start, out_end) | the fallback's answer */
static PyObject *Accel_translate_into(Accel *a, PyObject *const *args, Py_ssize_t nargs)
{
    uint8_t *buf;
    long start, end, os = 0, oe = 0;
    int cls = 0, r, idx = 0;
    if (nargs != 3 || !a->xl || !PyByteArray_CheckExact(args[0]) || !PyLong_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2]))
        goto fallback;
    start = PyLong_AsLong(args[1]);
    end = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        goto fallback;
    }
    if (start < XL_HEADROOM || end <= start || end > PyByteArray_GET_SIZE(args[0]))
        goto fallback;
    buf = (uint8_t *)PyByteArray_AS_STRING(args[0]);
    if (buf[start] >> 4 == 4) {
        r = xl_4to6(&a->c, buf, start, end, &os, &oe, &cls);
        idx = cls;
    } else if (buf[start] >> 4 == 6) {
        if (load_ip_id(a) < 0)
            return NULL;
        if (end > PyByteArray_GET_SIZE(args[0]))
            goto fallback;  /* (no Python code ran, but never trust a stale pointer) */
        buf = (uint8_t *)PyByteArray_AS_STRING(args[0]);
        r = xl_6to4(&a->c, buf, start, end, &os, &oe, &cls);
        if (r == 0 && store_ip_id(a) < 0)
            return NULL;
        idx = 4 + cls;
    } else {
        goto fallback;
    }
    if (r == XL_DECLINE)
        goto fallback;
    if (a->pc) {
        a->pc[idx] += 1;
        a->oc[idx] += (uint64_t)(oe - os);
    } else if (add_seq(a->packets, idx, 1) < 0 || add_seq(a->octets, idx, oe - os) < 0) {
        return NULL;
    }
    {
        PyObject *t = PyTuple_New(2), *x = PyLong_FromLong(os), *y = PyLong_FromLong(oe);
        if (!t || !x || !y) {
            Py_XDECREF(t), Py_XDECREF(x), Py_XDECREF(y);
            return NULL;
        }
        PyTuple_SET_ITEM(t, 0, x);
        PyTuple_SET_ITEM(t, 1, y);
        return t;
    }
fallback:
    if (!a->fallback) {
        PyErr_SetString(PyExc_RuntimeError, "Accel is not initialised");
        return NULL;
    }
    return PyObject_Vectorcall(a->fallback, args, (size_t)nargs, NULL);
}

/* One read that never blocks; -1 with errno EAGAIN when the queue is empty. */
static ssize_t read_nowait(Accel *a, int fd, uint8_t *p, size_t cap)
{
    struct iovec iov = {p, cap};
    struct pollfd pfd = {fd, POLLIN, 0};
    int r;
    if (a->nowait == 0) {
        ssize_t n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
        if (n >= 0 || (errno != EOPNOTSUPP && errno != EINVAL && errno != ESPIPE))
            return n;
        a->nowait = -1;
    }
    r = poll(&pfd, 1, 0);
    if (r <= 0) {
        if (r == 0)
            errno = EAGAIN;
        return -1;
    }
    return readv(fd, &iov, 1);
}

/* A packet with a partial checksum and no GSO (virtio-net NEEDS_CSUM): worker_loops._vnet_fast
 * before the translation, condition by condition. The checksum field holds the pseudo-header
 * sum: complemented, the translator's RFC 1624 update gives the new pseudo-header sum.
 * Returns the field's position (complemented now), or -1: not this case. */
typedef struct {
    uint16_t hdr_len, gso_size, out_l3, co;
    uint8_t gso_in, gso_type;   /* as read; after the translation (TCPV4 <-> TCPV6) */
    uint64_t segs;              /* a super-packet: the segments it stands for; else 0 */
} VnetCsum;

#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_UDP_L4 5
#define GSO_ECN 0x80

/* worker_loops._seg_len: the largest IP packet this super-packet will be cut into. */
static long seg_len(const uint8_t *q, long len, unsigned gso, long gso_size, long l4)
{
    long l4_len;
    gso &= 0x7F;
    if (!(gso == GSO_TCPV4 || gso == GSO_TCPV6 || gso == GSO_UDP_L4) || !gso_size ||
        l4 + 13 > len)
        return len;
    l4_len = gso != GSO_UDP_L4 ? (q[l4 + 12] >> 4) * 4 : 8;
    return l4 + l4_len + gso_size < len ? l4 + l4_len + gso_size : len;
}

static long vnet_partial(Accel *a, uint8_t *buf, ssize_t n, VnetCsum *vh)
{
    long start = XL_HEADROOM + VNET_LEN, end = XL_HEADROOM + (long)n, pos, l3, nl;
    uint8_t *q = buf + start;
    uint16_t cs, c;
    unsigned proto;
    if (n < 50)
        return -1;
    memcpy(&vh->hdr_len, buf + XL_HEADROOM + 2, 2);
    memcpy(&vh->gso_size, buf + XL_HEADROOM + 4, 2);
    memcpy(&cs, buf + XL_HEADROOM + 6, 2);
    memcpy(&vh->co, buf + XL_HEADROOM + 8, 2);
    vh->gso_in = vh->gso_type = buf[XL_HEADROOM + 1], vh->segs = 0;
    if (vh->gso_type) {  /* a super-packet (handle_vnet_packet, then _vnet_fast) */
        unsigned base = vh->gso_type & 0x7F;
        long hl = vh->hdr_len, x = end - start - hl;
        if (!a->gso_set || (vh->gso_type & ~GSO_ECN & 0xFF) != base ||
            !(base == GSO_TCPV4 || base == GSO_TCPV6 || base == GSO_UDP_L4))
            return -1;
        if (vh->gso_size)
            vh->segs = x <= 0 ? 1 : (uint64_t)((x + vh->gso_size - 1) / vh->gso_size);
        if (base == GSO_TCPV4)
            vh->gso_type = (vh->gso_type & GSO_ECN) | GSO_TCPV6;
        else if (base == GSO_TCPV6)
            vh->gso_type = (vh->gso_type & GSO_ECN) | GSO_TCPV4;
    }
    if (q[0] >> 4 == 4) {
        l3 = (q[0] & 15) << 2, proto = q[9], vh->out_l3 = 40;
        if (q[8] <= 1 ||
            !((q[6] & 0x40) ||
              seg_len(q, end - start, buf[XL_HEADROOM + 1], vh->gso_size, cs) + 20 <=
                  a->c.frag_mtu))
            return -1;
    } else if (q[0] >> 4 == 6) {
        l3 = 40, proto = q[6], vh->out_l3 = 20;
        if (q[7] <= 1 || end - start - 20 > 65535)
            return -1;
    } else {
        return -1;
    }
    if (cs != l3 || !((proto == 6 && vh->co == 16) || (proto == 17 && vh->co == 6)))
        return -1;
    pos = start + l3 + vh->co;
    nl = vh->hdr_len ? (long)vh->hdr_len + vh->out_l3 - l3 : 0;
    if (pos + 2 > end || nl < 0 || nl > 65535)
        return -1;  /* (Python: struct.error, counted as a worker error) */
    vh->hdr_len = (uint16_t)nl;
    c = (uint16_t)((((unsigned)buf[pos] << 8) | buf[pos + 1]) ^ 0xFFFF);
    if (c == 0)
        return -1;  /* would read as "no UDP checksum" */
    xl_put16(buf + pos, c);
    return pos;
}

static PyObject *Accel_run(Accel *a, PyObject *args)
{
    int fd, vnet, budget, i, err = 0, out6 = -1, block = 0;
    ssize_t pre = -1;
    Py_ssize_t werr;
    long res = -2;
    PyObject *bufobj, *token, *wobj, *ethobj = Py_None;
    Py_buffer bb, tb, wb;
    uint8_t *buf, eth[14];
    uint64_t *wc;
    struct sockaddr_in6 sa6;
    if (!PyArg_ParseTuple(args, "iOOOnpi|iOp", &fd, &bufobj, &token, &wobj, &werr, &vnet,
                          &budget, &out6, &ethobj, &block))
        return NULL;
    if (ethobj != Py_None && (!PyBytes_Check(ethobj) || PyBytes_GET_SIZE(ethobj) != 14)) {
        PyErr_SetString(PyExc_ValueError, "run(): eth: expected None or 14 bytes");
        return NULL;
    }
    if (ethobj != Py_None)
        memcpy(eth, PyBytes_AS_STRING(ethobj), 14);
    memset(&sa6, 0, sizeof sa6);
    sa6.sin6_family = AF_INET6;  /* port, flow information and scope 0, as clat_loop's */
    if (PyObject_GetBuffer(token, &tb, PyBUF_WRITABLE) < 0)
        return NULL;  /* the stop handler's read-only buffer: BufferError, as os.readv */
    PyBuffer_Release(&tb);
    if (!a->pc) {
        PyErr_SetString(PyExc_TypeError, "run() needs counters in shared memory (buffers)");
        return NULL;
    }
    if (PyObject_GetBuffer(bufobj, &bb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (bb.len < XL_HEADROOM + VNET_LEN + 1500) {
        PyBuffer_Release(&bb);
        PyErr_SetString(PyExc_ValueError, "run(): buffer too small");
        return NULL;
    }
    if (get_counters(wobj, &wb, &wc) < 0 || !wc || werr < 0 || werr >= wb.len / 8 ||
        (a->poll_ns && (a->poll_hits_idx >= wb.len / 8 || a->poll_spin_idx >= wb.len / 8)) ||
        (a->gso_set && (a->gso_idx >= wb.len / 8 || a->segs_idx >= wb.len / 8))) {
        if (wc)
            PyBuffer_Release(&wb);
        PyBuffer_Release(&bb);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "run(): worker counters");
        return NULL;
    }
    if (load_ip_id(a) < 0) {
        PyBuffer_Release(&wb);
        PyBuffer_Release(&bb);
        return NULL;
    }
    buf = (uint8_t *)bb.buf;
    if (block) {
        /* The worker's blocking read, here so that the packet that wakes it up is translated
         * and sent before any Python runs. Interrupted (EINTR) before anything was read: the
         * signal handlers run now, with the read buffer still held (worker_loops._Loop.in_readv:
         * a stop request then leaves at once, as from os.readv), then -2. */
        struct iovec iov = {buf + XL_HEADROOM, (size_t)(bb.len - XL_HEADROOM)};
        int e;
        Py_BEGIN_ALLOW_THREADS
        pre = readv(fd, &iov, 1);
        e = errno;
        Py_END_ALLOW_THREADS
        if (pre < 0) {
            PyBuffer_Release(&wb);
            PyBuffer_Release(&bb);
            if (e != EINTR && e != EAGAIN) {
                errno = e;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            if (PyErr_CheckSignals() < 0)
                return NULL;
            return PyLong_FromLong(-2);
        }
    }
    Py_BEGIN_ALLOW_THREADS
    /* The adaptive poll: ``spin`` is when the queue was found empty (0: it was not). The
     * window runs from there: the clock is read only while polling, never per packet. */
    long long spin = 0;
    for (i = 0; i < budget; i++) {
        long start = XL_HEADROOM, os = 0, oe = 0;
        int cls = 0, r = XL_DECLINE, idx = 0;
        long csum_pos = -1;
        VnetCsum vh;
        ssize_t n = pre >= 0 ? pre : read_nowait(a, fd, buf + XL_HEADROOM,
                                                 (size_t)(bb.len - XL_HEADROOM)), w;
        pre = -1;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (a->poll_ns) {
                    long long now = mono_ns();
                    if (!spin)
                        spin = now;
                    if (now - spin < a->poll_ns &&
                        (now - a->poll_epoch_ns >= 1000000000LL ||
                         a->poll_spent_ns + (now - spin) < a->poll_cap_ns)) {
                        i--;  /* an empty read is not a packet of the budget */
                        continue;
                    }
                    poll_charge(a, wc, spin, now);
                }
                res = -1;
            } else if (errno != EINTR) {
                err = errno;
            }
            break;
        }
        if (spin) {  /* the poll found this packet: no wake-up for it */
            long long now = mono_ns();
            poll_charge(a, wc, spin, now);
            wc[a->poll_hits_idx] += 1;
            spin = 0;
        }
        if (vnet) {
            start += VNET_LEN;
            if (n < VNET_LEN + 1 || (buf[XL_HEADROOM + 1] && buf[XL_HEADROOM] != 1) ||
                buf[XL_HEADROOM] > 2 ||
                (buf[XL_HEADROOM] == 1 && (csum_pos = vnet_partial(a, buf, n, &vh)) < 0)) {
                res = n;  /* a header only Python's handle_vnet_packet reads */
                break;
            }
            if (csum_pos >= 0 && out6 >= 0 && ethobj != Py_None && vh.out_l3 == 40 &&
                vh.hdr_len > 65535 - 14) {  /* no TAP header for it (Python: struct.error) */
                buf[csum_pos] ^= 0xFF;
                buf[csum_pos + 1] ^= 0xFF;
                res = n;
                break;
            }
        }
        a->c.gso = csum_pos >= 0 && vh.gso_in;  /* as handle_vnet_packet sets xl.gso */
        if (XL_HEADROOM + n > start) {
            uint8_t v = buf[start] >> 4;
            if (v == 4)
                r = xl_4to6(&a->c, buf, start, XL_HEADROOM + n, &os, &oe, &cls);
            else if (v == 6)
                r = xl_6to4(&a->c, buf, start, XL_HEADROOM + n, &os, &oe, &cls);
            idx = v == 6 ? 4 + cls : cls;
        }
        a->c.gso = 0;  /* translate_into (Python's calls) always checks the MTU */
        if (r == XL_DECLINE) {
            if (csum_pos >= 0) {  /* as read: Python starts again from the header */
                buf[csum_pos] ^= 0xFF;
                buf[csum_pos + 1] ^= 0xFF;
            }
            res = n;
            break;
        }
        a->pc[idx] += 1;
        a->oc[idx] += (uint64_t)(oe - os);
        if (csum_pos >= 0) {  /* worker_loops._vnet_fast, after the translation */
            long p2 = os + vh.out_l3 + vh.co;
            buf[p2] ^= 0xFF;
            buf[p2 + 1] ^= 0xFF;
            os -= VNET_LEN;
            buf[os] = 1, buf[os + 1] = vh.gso_type;
            if (vh.gso_in) {  /* counted as handle_vnet_packet counts */
                wc[a->gso_idx] += 1;
                wc[a->segs_idx] += vh.segs;
            }
            memcpy(buf + os + 2, &vh.hdr_len, 2);
            memcpy(buf + os + 4, &vh.gso_size, 2);
            memcpy(buf + os + 6, &vh.out_l3, 2);
            memcpy(buf + os + 8, &vh.co, 2);
        } else if (vnet) {
            os -= VNET_LEN;
            memset(buf + os, 0, VNET_LEN);
        }
        if (out6 >= 0 && buf[os + (vnet ? VNET_LEN : 0)] >> 4 == 6) {
            uint8_t *p = buf + os + (vnet ? VNET_LEN : 0);
            if (ethobj == Py_None) {  /* the raw socket: the packet alone, to its destination */
                memcpy(&sa6.sin6_addr, p + 24, 16);
                while ((w = sendto(out6, p, (size_t)(buf + oe - p), 0, (struct sockaddr *)&sa6,
                                   sizeof sa6)) < 0 && errno == EINTR)
                    ;
            } else {  /* the TAP: header (offsets past the Ethernet header), eth, packet */
                uint8_t hdr[VNET_LEN] = {0};
                struct iovec iov[3] = {{hdr, VNET_LEN}, {eth, 14}, {p, (size_t)(buf + oe - p)}};
                uint16_t hl = 0, cs;
                if (vnet && (buf[os] || buf[os + 1])) {  /* flags or gso_type: not a zero one */
                    memcpy(hdr, buf + os, VNET_LEN);
                    memcpy(&hl, hdr + 2, 2);
                    memcpy(&cs, hdr + 6, 2);
                    if (hl)
                        hl += 14, memcpy(hdr + 2, &hl, 2);
                    if (hdr[0] & 1)
                        cs += 14, memcpy(hdr + 6, &cs, 2);
                }
                while ((w = writev(out6, iov, 3)) < 0 && errno == EINTR)
                    ;
            }
        } else {
            while ((w = write(fd, buf + os, (size_t)(oe - os))) < 0 && errno == EINTR)
                ;
        }
        if (w < 0)
            wc[werr] += 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&wb);
    PyBuffer_Release(&bb);
    if (store_ip_id(a) < 0)
        return NULL;
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(res);
}

static PyMethodDef Accel_methods[] = {
    {"translate_into", (PyCFunction)(void (*)(void))Accel_translate_into, METH_FASTCALL,
     "translate_into(buf, start, end): the fast path, else the fallback."},
    {"run", (PyCFunction)Accel_run, METH_VARARGS,
     "run(fd, buf, token, w, werr, vnet, budget[, out6, eth, block]): read, translate and "
     "write in C."},
    {"set_gso_counters", (PyCFunction)Accel_set_gso_counters, METH_VARARGS,
     "set_gso_counters(gso_index, segs_index): run() takes GSO super-packets too."},
    {"set_poll", (PyCFunction)Accel_set_poll, METH_VARARGS,
     "set_poll(poll_ns, cap_ns, hits_index, spin_index): the adaptive poll of run()."},
    {"set_mtu", (PyCFunction)Accel_set_mtu, METH_VARARGS,
     "set_mtu(ipv6_mtu, ipv4_mtu, frag_mtu)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AccelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "v6mostly.siit._accel.Accel",
    .tp_basicsize = sizeof(Accel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C fast path of one Translator (see siit/accel.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Accel_init,
    .tp_dealloc = (destructor)Accel_dealloc,
    .tp_traverse = (traverseproc)Accel_traverse,
    .tp_clear = (inquiry)Accel_clear,
    .tp_methods = Accel_methods,
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT, "_accel", "C fast path of the SIIT translator.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__accel(void)
{
    PyObject *m;
    const char *env = getenv("V6MOSTLY_ACCEL");
    if (PyType_Ready(&AccelType) < 0)
        return NULL;
    s_ip_id = PyUnicode_InternFromString("ip_id");
    if (!s_ip_id)
        return NULL;
    m = PyModule_Create(&accel_module);
    if (!m)
        return NULL;
    Py_INCREF(&AccelType);
    if (PyModule_AddObject(m, "Accel", (PyObject *)&AccelType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_EAM", XL_MAX_EAM) < 0 ||
        /* The switch V6MOSTLY_ACCEL=0, read once here so that siit/accel.py (a sans-I/O core
         * module, docs/architecture.md §1) needs no os.environ. */
        PyModule_AddIntConstant(m, "DISABLED_BY_ENV", env != NULL && strcmp(env, "0") == 0) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
