/* drummachine's own JACK client: one client for every MIDI port of the engine (notes and clock
 * out, controller and clock in) and for the kit's audio outputs, with the process callback in C,
 * so no Python ever runs in JACK's real-time thread.
 *
 * Python (drummachine/midi/jack_midi.py, through ctypes) and the process callback talk only
 * through lock-free single-reader single-writer rings (libjack's jack_ringbuffer):
 *   out: Python writes each message with the time it is due (JACK's microsecond clock); the
 *        callback keeps what is not due yet in a heap and writes each message at its frame in the
 *        period that contains its time (frame-accurate; one due before the period began goes at
 *        frame 0 and is counted late);
 *   in:  the callback writes each event with its frame time and the time of that frame; Python's
 *        reader thread puts it on the engine's clock.
 * The kit's audio comes from the mixer process through a ring in shared memory (dm_ring: the
 * mixer writes frames, the callback copies them to the audio ports), so a mixer that dies leaves
 * the JACK graph as it was: the ports stay, silent until the next mixer writes.
 *
 * libjack is opened with dlopen("libjack.so.0") at run time and the few prototypes used are
 * declared here, so building needs no JACK headers (a Raspberry Pi with jackd2 has the library,
 * not the -dev package). Plain C, no Python API: ctypes loads it.
 *
 * Copyright the drummachine authors. Licensed under the Apache License, Version 2.0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* --- the part of JACK's API used here (jack/types.h, jack.h, midiport.h, ringbuffer.h) ---------- */
typedef uint32_t jack_nframes_t;
typedef uint64_t jack_time_t;
typedef struct _jack_client jack_client_t;
typedef struct _jack_port jack_port_t;
typedef struct {
    jack_nframes_t time;
    size_t size;
    unsigned char *buffer;
} jack_midi_event_t;
typedef struct _jack_ringbuffer jack_ringbuffer_t; /* only handled through libjack's functions */
typedef struct {
    jack_nframes_t min;
    jack_nframes_t max;
} jack_latency_range_t;
enum { JackCaptureLatency = 0, JackPlaybackLatency = 1 }; /* jack_latency_callback_mode_t */

enum { JackNoStartServer = 0x01 };
enum { JackPortIsInput = 0x1, JackPortIsOutput = 0x2, JackPortIsPhysical = 0x4 };
#define JACK_DEFAULT_MIDI_TYPE "8 bit raw midi"
#define JACK_DEFAULT_AUDIO_TYPE "32 bit float mono audio"

static struct {
    jack_client_t *(*client_open)(const char *, int, int *, ...);
    int (*client_close)(jack_client_t *);
    char *(*get_client_name)(jack_client_t *);
    int (*activate)(jack_client_t *);
    int (*deactivate)(jack_client_t *);
    int (*set_process_callback)(jack_client_t *, int (*)(jack_nframes_t, void *), void *);
    void (*on_shutdown)(jack_client_t *, void (*)(void *), void *);
    jack_port_t *(*port_register)(jack_client_t *, const char *, const char *, unsigned long, unsigned long);
    int (*port_unregister)(jack_client_t *, jack_port_t *);
    void *(*port_get_buffer)(jack_port_t *, jack_nframes_t);
    const char *(*port_name)(const jack_port_t *);
    int (*port_connected_to)(const jack_port_t *, const char *);
    const char **(*port_get_all_connections)(const jack_client_t *, const jack_port_t *);
    int (*connect)(jack_client_t *, const char *, const char *);
    int (*disconnect)(jack_client_t *, const char *, const char *);
    const char **(*get_ports)(jack_client_t *, const char *, const char *, unsigned long);
    void (*free)(void *);
    jack_nframes_t (*get_sample_rate)(jack_client_t *);
    jack_nframes_t (*get_buffer_size)(jack_client_t *);
    jack_time_t (*get_time)(void);
    jack_nframes_t (*last_frame_time)(const jack_client_t *);
    jack_time_t (*frames_to_time)(const jack_client_t *, jack_nframes_t);
    int (*get_cycle_times)(const jack_client_t *, jack_nframes_t *, jack_time_t *, jack_time_t *, float *);
    uint32_t (*midi_get_event_count)(void *);
    int (*midi_event_get)(jack_midi_event_t *, void *, uint32_t);
    void (*midi_clear_buffer)(void *);
    int (*midi_event_write)(void *, jack_nframes_t, const unsigned char *, size_t);
    jack_ringbuffer_t *(*rb_create)(size_t);
    void (*rb_free)(jack_ringbuffer_t *);
    size_t (*rb_read_space)(const jack_ringbuffer_t *);
    size_t (*rb_write_space)(const jack_ringbuffer_t *);
    size_t (*rb_read)(jack_ringbuffer_t *, char *, size_t);
    size_t (*rb_peek)(jack_ringbuffer_t *, char *, size_t);
    size_t (*rb_write)(jack_ringbuffer_t *, const char *, size_t);
    int (*rb_mlock)(jack_ringbuffer_t *);
    void (*port_get_latency_range)(jack_port_t *, int, jack_latency_range_t *);
    int (*set_xrun_callback)(jack_client_t *, int (*)(void *), void *);
} J;

static void *libjack;

/* Each entry: where in J, the symbol's name, required or not. */
#define SYM(field, name, required) {(void **)&J.field, name, required}
static const struct { void **slot; const char *name; int required; } SYMBOLS[] = {
    SYM(client_open, "jack_client_open", 1), SYM(client_close, "jack_client_close", 1),
    SYM(get_client_name, "jack_get_client_name", 1), SYM(activate, "jack_activate", 1),
    SYM(deactivate, "jack_deactivate", 1), SYM(set_process_callback, "jack_set_process_callback", 1),
    SYM(on_shutdown, "jack_on_shutdown", 1), SYM(port_register, "jack_port_register", 1),
    SYM(port_unregister, "jack_port_unregister", 1), SYM(port_get_buffer, "jack_port_get_buffer", 1),
    SYM(port_name, "jack_port_name", 1), SYM(port_connected_to, "jack_port_connected_to", 1),
    SYM(port_get_all_connections, "jack_port_get_all_connections", 1), SYM(connect, "jack_connect", 1),
    SYM(disconnect, "jack_disconnect", 1), SYM(get_ports, "jack_get_ports", 1), SYM(free, "jack_free", 1),
    SYM(get_sample_rate, "jack_get_sample_rate", 1), SYM(get_buffer_size, "jack_get_buffer_size", 1),
    SYM(get_time, "jack_get_time", 1), SYM(last_frame_time, "jack_last_frame_time", 1),
    SYM(frames_to_time, "jack_frames_to_time", 1), SYM(get_cycle_times, "jack_get_cycle_times", 0),
    SYM(midi_get_event_count, "jack_midi_get_event_count", 1), SYM(midi_event_get, "jack_midi_event_get", 1),
    SYM(midi_clear_buffer, "jack_midi_clear_buffer", 1), SYM(midi_event_write, "jack_midi_event_write", 1),
    SYM(rb_create, "jack_ringbuffer_create", 1), SYM(rb_free, "jack_ringbuffer_free", 1),
    SYM(rb_read_space, "jack_ringbuffer_read_space", 1), SYM(rb_write_space, "jack_ringbuffer_write_space", 1),
    SYM(rb_read, "jack_ringbuffer_read", 1), SYM(rb_peek, "jack_ringbuffer_peek", 1),
    SYM(rb_write, "jack_ringbuffer_write", 1), SYM(rb_mlock, "jack_ringbuffer_mlock", 1),
    SYM(port_get_latency_range, "jack_port_get_latency_range", 0),
    SYM(set_xrun_callback, "jack_set_xrun_callback", 0),
};

/* Load libjack; 0 when every required symbol is there, else -1 with the reason in err. */
int dm_load(const char *library, char *err, size_t errlen)
{
    if (libjack)
        return 0;
    void *lib = dlopen(library, RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(err, errlen, "%s", dlerror());
        return -1;
    }
    for (size_t i = 0; i < sizeof SYMBOLS / sizeof SYMBOLS[0]; i++) {
        *SYMBOLS[i].slot = dlsym(lib, SYMBOLS[i].name);
        if (!*SYMBOLS[i].slot && SYMBOLS[i].required) {
            snprintf(err, errlen, "%s has no %s", library, SYMBOLS[i].name);
            return -1; /* the library stays loaded: rtmidi may use it too */
        }
    }
    libjack = lib;
    return 0;
}

/* --- the client ----------------------------------------------------------------------------- */
#define MAX_PORTS 8
#define OUT_RING_RECORDS 4096 /* messages queued by Python not yet taken by the callback */
#define PENDING_MAX 4096      /* messages taken, not due yet */
#define IN_RING_BYTES (1 << 16)
#define MSG_MAX 6             /* out: notes, CCs, clock, start/stop; SysEx is not sent */
#define IN_MSG_MAX 1024       /* in: a longer event is dropped and counted */

enum { SLOT_FREE = 0, SLOT_ACTIVE = 1, SLOT_CLOSING = 2 };
enum { IGNORE_SYSEX = 1, IGNORE_ACTIVE_SENSE = 2, IGNORE_CLOCK = 4 };

typedef struct { /* one record of the out ring, fixed size */
    int64_t due_us;
    uint32_t flushes; /* panics asked before it was queued: one asked after drops it (a note) */
    uint8_t size, data[MSG_MAX];
} out_record;

typedef struct { /* pending in the callback's heap, ordered by (due, seq) */
    int64_t due_us;
    uint64_t seq;
    uint32_t flushes;
    uint8_t size, data[MSG_MAX];
} pending_msg;

typedef struct { /* the header of one event in the in ring, its bytes follow */
    uint64_t usecs;
    uint32_t frame;
    uint32_t size;
} in_header;

/* counters the callback keeps (Python reads them, so atomic) */
enum { ST_WRITTEN, ST_LATE, ST_LATE_MAX_US, ST_DROPPED, ST_RECEIVED, ST_IN_DROPPED, ST_IGNORED, ST_STALE, ST_PENDING, ST_COUNT };

typedef struct {
    _Atomic int state;
    int is_input;
    int ignore;
    jack_port_t *port;
    jack_ringbuffer_t *ring;
    pending_msg *pending; /* out only: a binary min-heap */
    int n_pending;
    uint64_t seq;
    uint8_t sounding[16][16]; /* out: notes on (channel, note bit), for flush */
    _Atomic uint32_t flushes_asked; /* out: panics asked (Python), and done (the callback) */
    uint32_t flushes_done;
    _Atomic uint64_t stats[ST_COUNT];
} dm_port;

typedef struct {
    jack_client_t *client;
    _Atomic int gone;          /* the server shut the client down */
    _Atomic uint64_t cycles;   /* process callbacks run */
    _Atomic uint64_t off_dll;  /* of them, periods JACK's DLL did not describe (the wake-up did) */
    _Atomic uint64_t jumps;    /* periods that did not begin where the one before ended */
    jack_nframes_t last_f0, last_n; /* the callback's own: the period before */
    jack_time_t last_t1;
    dm_port ports[MAX_PORTS];
    struct dm_audio *_Atomic audio; /* the kit's outputs, or NULL (the callback reads it each period) */
    _Atomic uint64_t xruns;    /* JACK's xruns (its notification thread) */
    uint64_t xruns_told;       /* the callback's own: how many of them the ring has heard of */
} dm_client;

static inline uint64_t st_get(dm_port *p, int k) { return atomic_load_explicit(&p->stats[k], memory_order_relaxed); }
static inline void st_add(dm_port *p, int k, uint64_t v)
{
    atomic_store_explicit(&p->stats[k], st_get(p, k) + v, memory_order_relaxed); /* one writer */
}

static int before(const pending_msg *a, const pending_msg *b)
{
    return a->due_us < b->due_us || (a->due_us == b->due_us && a->seq < b->seq);
}

static void heap_push(dm_port *p, const pending_msg *m)
{
    int i = p->n_pending++;
    p->pending[i] = *m;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!before(&p->pending[i], &p->pending[parent]))
            break;
        pending_msg t = p->pending[i];
        p->pending[i] = p->pending[parent];
        p->pending[parent] = t;
        i = parent;
    }
}

static void heap_down(dm_port *p, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < p->n_pending && before(&p->pending[l], &p->pending[m]))
            m = l;
        if (r < p->n_pending && before(&p->pending[r], &p->pending[m]))
            m = r;
        if (m == i)
            return;
        pending_msg t = p->pending[i];
        p->pending[i] = p->pending[m];
        p->pending[m] = t;
        i = m;
    }
}

static void heap_pop(dm_port *p)
{
    p->pending[0] = p->pending[--p->n_pending];
    heap_down(p, 0);
}

static void track_sounding(dm_port *p, const uint8_t *d, int size)
{
    if (size < 3)
        return;
    int kind = d[0] & 0xF0, ch = d[0] & 0x0F, note = d[1] & 0x7F;
    if (kind == 0x90 && d[2] > 0)
        p->sounding[ch][note >> 3] |= (uint8_t)(1 << (note & 7));
    else if (kind == 0x80 || kind == 0x90)
        p->sounding[ch][note >> 3] &= (uint8_t)~(1 << (note & 7));
}

static void write_event(dm_port *p, void *buf, jack_nframes_t offset, const uint8_t *d, int size)
{
    if (J.midi_event_write(buf, offset, d, (size_t)size) == 0) {
        st_add(p, ST_WRITTEN, 1);
        track_sounding(p, d, size);
    } else {
        st_add(p, ST_DROPPED, 1); /* the port's buffer is full this period */
    }
}

/* A panic: the channel messages queued before it are dropped (clock and start/stop stay), and
 * every note that sounds gets its note-off now, at frame 0 (before any other write this period).
 * Asked through a counter, not the ring: a ring and heap full of notes must not hold it up. */
static void flush_notes(dm_port *p, void *buf, uint32_t asked)
{
    p->flushes_done = asked;
    int kept = 0;
    for (int i = 0; i < p->n_pending; i++)
        if (p->pending[i].data[0] >= 0xF0 || (int32_t)(p->pending[i].flushes - asked) >= 0)
            p->pending[kept++] = p->pending[i];
    p->n_pending = kept;
    for (int i = kept / 2 - 1; i >= 0; i--)
        heap_down(p, i);
    for (int ch = 0; ch < 16; ch++)
        for (int note = 0; note < 128; note++)
            if (p->sounding[ch][note >> 3] & (1 << (note & 7))) {
                uint8_t off[3] = {(uint8_t)(0x80 | ch), (uint8_t)note, 0};
                write_event(p, buf, 0, off, 3);
            }
}

/* A note-on due this long before the period began is not played: after the server stalled (or the
 * process was not scheduled) the notes queued meanwhile would all go at frame 0 of one period, a
 * burst of seconds of drumming at once. The groove goes on from where the time is; note-offs,
 * clock and the rest still go, late. */
#define STALE_US 100000

static int is_note_on(const pending_msg *m)
{
    return m->size >= 3 && (m->data[0] & 0xF0) == 0x90 && m->data[2] > 0;
}

static void process_out(dm_port *p, jack_nframes_t nframes, jack_time_t t0, jack_time_t t1)
{
    void *buf = J.port_get_buffer(p->port, nframes);
    J.midi_clear_buffer(buf);
    out_record r;
    uint32_t asked = atomic_load_explicit(&p->flushes_asked, memory_order_acquire);
    if (asked != p->flushes_done)
        flush_notes(p, buf, asked);
    /* take what Python queued: the heap keeps what is not due yet (full: it waits in the ring) */
    while (p->n_pending < PENDING_MAX && J.rb_read_space(p->ring) >= sizeof r) {
        J.rb_read(p->ring, (char *)&r, sizeof r);
        if (r.size == 0 || r.size > MSG_MAX)
            continue; /* Python checks; never trust it in the real-time thread */
        if ((int32_t)(r.flushes - asked) < 0 && r.data[0] < 0xF0)
            continue; /* a note queued before the last panic (one asked later: the next period's flush) */
        pending_msg m = {.due_us = r.due_us, .seq = p->seq++, .flushes = r.flushes, .size = r.size};
        memcpy(m.data, r.data, r.size);
        heap_push(p, &m);
    }
    /* write what is due before the next period begins, each at its own frame, in time order */
    double frames_per_us = (t1 > t0) ? (double)nframes / (double)(t1 - t0) : 0.0;
    jack_nframes_t last = 0;
    while (p->n_pending > 0 && p->pending[0].due_us < (int64_t)t1) {
        pending_msg *m = &p->pending[0];
        jack_nframes_t offset = 0;
        if (m->due_us <= 0) {
            /* "now" (a panic's all-notes-off): frame 0, not late */
        } else if (m->due_us < (int64_t)t0) {
            uint64_t late = (uint64_t)((int64_t)t0 - m->due_us);
            if (late > STALE_US && is_note_on(m)) {
                st_add(p, ST_STALE, 1);
                heap_pop(p);
                continue;
            }
            st_add(p, ST_LATE, 1);
            if (late > st_get(p, ST_LATE_MAX_US))
                atomic_store_explicit(&p->stats[ST_LATE_MAX_US], late, memory_order_relaxed);
        } else {
            double f = (double)(m->due_us - (int64_t)t0) * frames_per_us;
            offset = f >= nframes ? nframes - 1 : (jack_nframes_t)f;
        }
        if (offset < last)
            offset = last; /* JACK takes events in time order */
        last = offset;
        write_event(p, buf, offset, m->data, m->size);
        heap_pop(p);
    }
    atomic_store_explicit(&p->stats[ST_PENDING], (uint64_t)p->n_pending, memory_order_relaxed);
}

static int ignored(const dm_port *p, const unsigned char *d)
{
    if ((p->ignore & IGNORE_SYSEX) && (d[0] == 0xF0 || d[0] == 0xF7))
        return 1;
    if ((p->ignore & IGNORE_ACTIVE_SENSE) && d[0] == 0xFE)
        return 1;
    if ((p->ignore & IGNORE_CLOCK) && d[0] == 0xF8)
        return 1;
    return 0;
}

static void process_in(dm_port *p, jack_nframes_t nframes, jack_nframes_t f0, jack_time_t t0, jack_time_t t1)
{
    void *buf = J.port_get_buffer(p->port, nframes);
    uint32_t n = J.midi_get_event_count(buf);
    double us_per_frame = (double)(t1 - t0) / (double)nframes;
    for (uint32_t i = 0; i < n; i++) {
        jack_midi_event_t ev;
        if (J.midi_event_get(&ev, buf, i) != 0 || ev.size == 0 || !ev.buffer)
            continue;
        if (ignored(p, ev.buffer)) {
            st_add(p, ST_IGNORED, 1);
            continue;
        }
        if (ev.size > IN_MSG_MAX || J.rb_write_space(p->ring) < sizeof(in_header) + ev.size) {
            st_add(p, ST_IN_DROPPED, 1);
            continue;
        }
        in_header h = {.usecs = t0 + (jack_time_t)(ev.time * us_per_frame), .frame = f0 + ev.time,
                       .size = (uint32_t)ev.size};
        J.rb_write(p->ring, (const char *)&h, sizeof h);
        J.rb_write(p->ring, (const char *)ev.buffer, ev.size);
        st_add(p, ST_RECEIVED, 1);
    }
}

/* --- the kit's audio out --------------------------------------------------------------------
 * The ring lives in shared memory the engine creates (Python's SharedMemory) and the mixer process
 * maps: this header, then `capacity` frames of `channels` interleaved floats. One writer (the
 * mixer: dm_ring_write), one reader (this callback); positions count frames from the ring's
 * creation and never wrap. A mixer that starts skips what a dead one left (dm_ring_skip): those
 * frames were mixed for a time long gone. */
#define MAX_AUDIO 16
typedef struct {
    _Atomic uint64_t write;   /* frames written (the mixer) */
    _Atomic uint64_t read;    /* frames taken (the callback) */
    _Atomic uint64_t skip_to; /* frames before this are stale, never played (the mixer asks) */
    _Atomic uint64_t fed;     /* set by each write, cleared by the callback when the ring runs dry */
    _Atomic uint64_t dry;     /* periods the ring had fewer frames than asked while it was fed */
    _Atomic uint64_t seq;     /* the latest period's seqlock (odd while it is written) */
    _Atomic uint64_t cycle_read, cycle_ns, cycle_frames; /* that period: read at its start, its start
                                                            on CLOCK_MONOTONIC, its frames */
    _Atomic uint64_t rate, period, ports; /* the engine's: JACK's rate and period, ports registered (0: none) */
    _Atomic uint64_t periods;  /* periods the callback ran with the ring */
    uint64_t channels, capacity; /* set at creation; capacity a power of two */
    _Atomic uint64_t outputs;    /* the engine's: the sound card's playback ports on the server */
    _Atomic uint64_t opens;      /* clients the ports were registered on: a mixer plays one client's */
    _Atomic uint64_t xruns;      /* JACK's xruns while the ports were there (what PortAudio flags as underflows) */
} dm_ring;

struct dm_audio {
    _Atomic int state;
    int n;
    dm_ring *ring;
    jack_port_t *ports[MAX_AUDIO];
};

size_t dm_ring_bytes(uint32_t channels, uint32_t capacity)
{
    return sizeof(dm_ring) + (size_t)channels * capacity * sizeof(float);
}

static inline float *ring_frames(dm_ring *r) { return (float *)(r + 1); }

/* A new ring in `base` (dm_ring_bytes long); -1 when capacity is not a power of two. */
int dm_ring_init(void *base, uint32_t channels, uint32_t capacity)
{
    if (!capacity || (capacity & (capacity - 1)) || !channels || channels > MAX_AUDIO)
        return -1;
    memset(base, 0, dm_ring_bytes(channels, capacity));
    dm_ring *r = base;
    r->channels = channels;
    r->capacity = capacity;
    atomic_thread_fence(memory_order_release);
    return 0;
}

/* Frames that fit now. */
uint32_t dm_ring_space(void *base)
{
    dm_ring *r = base;
    uint64_t used = atomic_load_explicit(&r->write, memory_order_relaxed) -
                    atomic_load_explicit(&r->read, memory_order_acquire);
    return used >= r->capacity ? 0 : (uint32_t)(r->capacity - used);
}

/* Append n interleaved frames; -1 (nothing written) when they do not fit. */
int dm_ring_write(void *base, const float *frames, uint32_t n)
{
    dm_ring *r = base;
    if (n > dm_ring_space(base))
        return -1;
    uint64_t w = atomic_load_explicit(&r->write, memory_order_relaxed), mask = r->capacity - 1;
    size_t ch = r->channels;
    float *dst = ring_frames(r);
    uint64_t first = (w & mask), run = r->capacity - first < n ? r->capacity - first : n;
    memcpy(dst + first * ch, frames, run * ch * sizeof(float));
    if (run < n)
        memcpy(dst, frames + run * ch, (n - run) * ch * sizeof(float));
    atomic_store_explicit(&r->write, w + n, memory_order_release); /* the frames before the count */
    atomic_store_explicit(&r->fed, 1, memory_order_relaxed);
    return 0;
}

/* What a new mixer does first: what waits in the ring is not played, and its own frames follow. */
uint64_t dm_ring_skip(void *base)
{
    dm_ring *r = base;
    uint64_t w = atomic_load_explicit(&r->write, memory_order_relaxed);
    atomic_store_explicit(&r->skip_to, w, memory_order_release);
    return w;
}

/* The sound card's playback ports on the server the ports are on (the engine says). */
void dm_ring_set_outputs(void *base, uint32_t outputs)
{
    atomic_store(&((dm_ring *)base)->outputs, outputs);
}

/* write, read, skip_to, dry, rate, period, ports, periods, the latest period (read at its start,
 * its start in CLOCK_MONOTONIC ns, its frames) read whole, the sound card's outputs, the opens,
 * JACK's xruns. */
void dm_ring_state(void *base, uint64_t *out)
{
    dm_ring *r = base;
    for (int tries = 0; tries < 1000; tries++) {
        uint64_t s0 = atomic_load_explicit(&r->seq, memory_order_acquire);
        if (s0 & 1)
            continue;
        out[8] = atomic_load_explicit(&r->cycle_read, memory_order_relaxed);
        out[9] = atomic_load_explicit(&r->cycle_ns, memory_order_relaxed);
        out[10] = atomic_load_explicit(&r->cycle_frames, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&r->seq, memory_order_relaxed) == s0)
            break;
    }
    out[0] = atomic_load(&r->write);
    out[1] = atomic_load(&r->read);
    out[2] = atomic_load(&r->skip_to);
    out[3] = atomic_load(&r->dry);
    out[4] = atomic_load(&r->rate);
    out[5] = atomic_load(&r->period);
    out[6] = atomic_load(&r->ports);
    out[7] = atomic_load(&r->periods);
    out[11] = atomic_load(&r->outputs);
    out[12] = atomic_load(&r->opens);
    out[13] = atomic_load(&r->xruns);
}

static void process_audio(struct dm_audio *a, jack_nframes_t nframes, uint64_t start_ns)
{
    float *buf[MAX_AUDIO];
    for (int k = 0; k < a->n; k++)
        buf[k] = J.port_get_buffer(a->ports[k], nframes);
    dm_ring *r = a->ring;
    uint64_t w = atomic_load_explicit(&r->write, memory_order_acquire);
    uint64_t rd = atomic_load_explicit(&r->read, memory_order_relaxed);
    uint64_t skip = atomic_load_explicit(&r->skip_to, memory_order_acquire);
    if (rd < skip && skip <= w)
        rd = skip;
    uint64_t avail = w >= rd ? w - rd : 0, mask = r->capacity - 1;
    if (avail > r->capacity) /* cannot happen with one writer that checks the space */
        rd = w, avail = 0;
    jack_nframes_t take = avail < nframes ? (jack_nframes_t)avail : nframes;
    size_t ch = r->channels;
    const float *src = ring_frames(r);
    for (int k = 0; k < a->n; k++) {
        float *out = buf[k];
        if (!out)
            continue;
        if ((size_t)k < ch)
            for (jack_nframes_t i = 0; i < take; i++)
                out[i] = src[((rd + i) & mask) * ch + k];
        else
            memset(out, 0, take * sizeof(float));
        memset(out + take, 0, (nframes - take) * sizeof(float));
    }
    uint64_t s = atomic_load_explicit(&r->seq, memory_order_relaxed);
    atomic_store_explicit(&r->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&r->cycle_read, rd, memory_order_relaxed);
    atomic_store_explicit(&r->cycle_ns, start_ns, memory_order_relaxed);
    atomic_store_explicit(&r->cycle_frames, nframes, memory_order_relaxed);
    atomic_store_explicit(&r->seq, s + 2, memory_order_release);
    atomic_store_explicit(&r->read, rd + take, memory_order_release);
    if (take < nframes && atomic_load_explicit(&r->fed, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&r->dry, 1, memory_order_relaxed);
        if (!take) /* dry a whole period: the writer is gone or very late; counted once */
            atomic_store_explicit(&r->fed, 0, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&r->periods, 1, memory_order_relaxed);
}

/* JACK's real-time thread: no allocation, no lock, no system call of ours.
 *
 * Where this period lies in time: JACK's DLL says when it began (t0) and when the next begins (t1),
 * smoothing the driver's wake-ups; a sound card's clock keeps it right, and this callback then
 * runs within the period it computes (t0 <= now < t1, or the server is about to miss the period).
 * A driver without a steady clock (the dummy backend on a loaded host: wake-ups tens of ms off
 * the DLL, both ways) breaks that; the period is then taken to begin now, so a message is never
 * placed by a time the period is not near. Either way a period begins where the one before
 * ended unless that is more than half a period off: switching between the two readings, or a
 * wake-up's jitter, must not bunch the messages between them at one frame. */
static int process(jack_nframes_t nframes, void *arg)
{
    dm_client *c = arg;
    jack_nframes_t f0;
    jack_time_t t0, t1;
    float period_us;
    if (!J.get_cycle_times || J.get_cycle_times(c->client, &f0, &t0, &t1, &period_us) != 0) {
        f0 = J.last_frame_time(c->client);
        t0 = J.frames_to_time(c->client, f0);
        t1 = J.frames_to_time(c->client, f0 + nframes);
    }
    jack_time_t now = J.get_time();
    jack_time_t span = t1 > t0 ? t1 - t0 : (jack_time_t)(1e6 * nframes / J.get_sample_rate(c->client));
    if (t1 <= t0 || now < t0 || now >= t1 + span) {
        t0 = now;
        atomic_fetch_add_explicit(&c->off_dll, 1, memory_order_relaxed);
    }
    if (c->last_n && f0 == c->last_f0 + c->last_n) {
        int64_t step = (int64_t)t0 - (int64_t)c->last_t1;
        if (step > -(int64_t)span / 2 && step < (int64_t)span / 2)
            t0 = c->last_t1;
        else
            atomic_fetch_add_explicit(&c->jumps, 1, memory_order_relaxed);
    }
    t1 = t0 + span;
    c->last_f0 = f0;
    c->last_n = nframes;
    c->last_t1 = t1;
    for (int i = 0; i < MAX_PORTS; i++) {
        dm_port *p = &c->ports[i];
        if (atomic_load_explicit(&p->state, memory_order_acquire) != SLOT_ACTIVE)
            continue;
        if (p->is_input)
            process_in(p, nframes, f0, t0, t1);
        else
            process_out(p, nframes, t0, t1);
    }
    struct dm_audio *a = c->audio;
    if (a && atomic_load_explicit(&a->state, memory_order_acquire) == SLOT_ACTIVE) {
        struct timespec mono; /* the period's start on the clock the mixer process reads */
        clock_gettime(CLOCK_MONOTONIC, &mono);
        uint64_t mono_ns = (uint64_t)mono.tv_sec * 1000000000ull + (uint64_t)mono.tv_nsec;
        uint64_t behind_ns = now > t0 ? (now - t0) * 1000ull : 0;
        process_audio(a, nframes, mono_ns > behind_ns ? mono_ns - behind_ns : mono_ns);
        uint64_t xruns = atomic_load_explicit(&c->xruns, memory_order_relaxed);
        if (xruns != c->xruns_told) {
            atomic_fetch_add_explicit(&a->ring->xruns, xruns - c->xruns_told, memory_order_relaxed);
            c->xruns_told = xruns;
        }
    }
    atomic_fetch_add_explicit(&c->cycles, 1, memory_order_release);
    return 0;
}

static void shutdown_cb(void *arg)
{
    atomic_store(&((dm_client *)arg)->gone, 1);
}

/* JACK's notification thread: a period the graph did not finish in time (counted here; the
 * process callback, which alone may touch the ring, tells the ring) */
static int xrun_cb(void *arg)
{
    atomic_fetch_add(&((dm_client *)arg)->xruns, 1);
    return 0;
}

/* Open and activate a client (never starts a server). NULL on failure, JACK's status in *status. */
dm_client *dm_open(const char *name, int *status)
{
    *status = 0;
    if (!libjack)
        return NULL;
    dm_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->client = J.client_open(name, JackNoStartServer, status);
    if (!c->client) {
        free(c);
        return NULL;
    }
    J.set_process_callback(c->client, process, c);
    J.on_shutdown(c->client, shutdown_cb, c);
    if (J.set_xrun_callback)
        J.set_xrun_callback(c->client, xrun_cb, c);
    if (J.activate(c->client) != 0) {
        J.client_close(c->client);
        free(c);
        *status |= 0x10000; /* not activated */
        return NULL;
    }
    return c;
}

const char *dm_client_name(dm_client *c) { return J.get_client_name(c->client); }
int dm_gone(dm_client *c) { return atomic_load(&c->gone); }
uint64_t dm_cycles(dm_client *c) { return atomic_load(&c->cycles); }
uint64_t dm_off_dll(dm_client *c) { return atomic_load(&c->off_dll); }
uint64_t dm_jumps(dm_client *c) { return atomic_load(&c->jumps); }
/* Only with a client open: libjack sets its clock up when a client opens (before, it crashes). */
uint64_t dm_time(void) { return libjack ? J.get_time() : 0; }
uint32_t dm_sample_rate(dm_client *c) { return J.get_sample_rate(c->client); }
uint32_t dm_buffer_size(dm_client *c) { return J.get_buffer_size(c->client); }

static void free_port(dm_port *p)
{
    if (p->ring)
        J.rb_free(p->ring);
    if (p->pending) {
        munlock(p->pending, PENDING_MAX * sizeof(pending_msg));
        free(p->pending);
    }
    p->ring = NULL;
    p->pending = NULL;
    p->port = NULL;
    atomic_store(&p->state, SLOT_FREE);
}

/* Close the client (the server's, even a dead one's, resources go with it) and free everything. */
void dm_close(dm_client *c)
{
    if (!c)
        return;
    J.client_close(c->client); /* no callback runs after this returns */
    for (int i = 0; i < MAX_PORTS; i++)
        if (c->ports[i].ring || c->ports[i].pending)
            free_port(&c->ports[i]);
    if (c->audio) { /* the ring is the engine's shared memory, not ours: it only hears the ports went */
        atomic_store(&c->audio->ring->ports, 0);
        free(c->audio);
    }
    free(c);
}

/* Register a MIDI port; its slot (0..MAX_PORTS-1), or -1 (no slot), -2 (JACK refused the name). */
int dm_port_add(dm_client *c, const char *short_name, int is_input, int ignore)
{
    int slot = -1;
    for (int i = 0; i < MAX_PORTS; i++)
        if (atomic_load(&c->ports[i].state) == SLOT_FREE && !c->ports[i].ring) {
            slot = i;
            break;
        }
    if (slot < 0)
        return -1;
    dm_port *p = &c->ports[slot];
    memset(p->sounding, 0, sizeof p->sounding);
    atomic_store(&p->flushes_asked, 0);
    p->flushes_done = 0;
    for (int k = 0; k < ST_COUNT; k++)
        atomic_store(&p->stats[k], 0);
    p->is_input = is_input;
    p->ignore = ignore;
    p->n_pending = 0;
    p->seq = 0;
    p->ring = J.rb_create(is_input ? IN_RING_BYTES : OUT_RING_RECORDS * sizeof(out_record));
    if (!is_input) {
        p->pending = calloc(PENDING_MAX, sizeof(pending_msg));
        if (p->pending)
            mlock(p->pending, PENDING_MAX * sizeof(pending_msg)); /* may be refused: not fatal */
    }
    if (!p->ring || (!is_input && !p->pending)) {
        free_port(p);
        return -1;
    }
    J.rb_mlock(p->ring);
    p->port = J.port_register(c->client, short_name, JACK_DEFAULT_MIDI_TYPE,
                              is_input ? JackPortIsInput : JackPortIsOutput, 0);
    if (!p->port) {
        free_port(p);
        return -2;
    }
    atomic_store_explicit(&p->state, SLOT_ACTIVE, memory_order_release); /* the callback sees it whole */
    return slot;
}

/* Take a port away. The callback stops touching it first: two callbacks after it was marked, or
 * none if the server is gone. 0: freed; 1: the server is alive but ran no callback within
 * wait_ms, so the memory is left (never freed under a callback that may still run). */
int dm_port_remove(dm_client *c, int slot, int wait_ms)
{
    if (slot < 0 || slot >= MAX_PORTS)
        return 0;
    dm_port *p = &c->ports[slot];
    atomic_store(&p->state, SLOT_CLOSING);
    uint64_t start = atomic_load(&c->cycles);
    struct timespec nap = {0, 1000000};
    for (int waited = 0; atomic_load(&c->cycles) < start + 2; waited++) {
        if (atomic_load(&c->gone))
            break;
        if (waited >= wait_ms)
            return 1;
        nanosleep(&nap, NULL);
    }
    if (p->port && !atomic_load(&c->gone))
        J.port_unregister(c->client, p->port);
    free_port(p);
    return 0;
}

static jack_port_t *port_of(dm_client *c, int slot)
{
    if (slot < 0 || slot >= MAX_PORTS || atomic_load(&c->ports[slot].state) != SLOT_ACTIVE)
        return NULL;
    return c->ports[slot].port;
}

const char *dm_port_name(dm_client *c, int slot)
{
    jack_port_t *port = port_of(c, slot);
    return port ? J.port_name(port) : NULL;
}

/* Connect (or disconnect) our port and another by its full name, in the port's direction. */
int dm_port_connect(dm_client *c, int slot, const char *other, int connect)
{
    jack_port_t *port = port_of(c, slot);
    if (!port)
        return -1;
    const char *mine = J.port_name(port);
    const char *src = c->ports[slot].is_input ? other : mine;
    const char *dst = c->ports[slot].is_input ? mine : other;
    return connect ? J.connect(c->client, src, dst) : J.disconnect(c->client, src, dst);
}

/* How long JACK reckons the port's messages take to reach the outside world (the ports it feeds,
 * and whatever those feed: a MIDI interface's buffering, a synth's audio output), in frames: the
 * longest of its playback latency range; -1 when this libjack cannot say. */
long dm_port_playback_latency(dm_client *c, int slot)
{
    jack_port_t *port = port_of(c, slot);
    if (!port || !J.port_get_latency_range)
        return -1;
    jack_latency_range_t range = {0, 0};
    J.port_get_latency_range(port, JackPlaybackLatency, &range);
    return (long)range.max;
}

int dm_port_connected_to(dm_client *c, int slot, const char *other)
{
    jack_port_t *port = port_of(c, slot);
    return port ? J.port_connected_to(port, other) : 0;
}

/* Join a JACK name list into out as lines; the length needed (out may be too small: ask again). */
static size_t join_names(const char **names, char *out, size_t outlen)
{
    size_t need = 0;
    if (outlen)
        out[0] = 0;
    for (int i = 0; names && names[i]; i++) {
        size_t n = strlen(names[i]);
        if (need + n + 2 <= outlen) {
            memcpy(out + need, names[i], n);
            out[need + n] = '\n';
            out[need + n + 1] = 0;
        }
        need += n + 1;
    }
    if (names)
        J.free(names);
    return need + 1;
}

size_t dm_port_connections(dm_client *c, int slot, char *out, size_t outlen)
{
    jack_port_t *port = port_of(c, slot);
    if (!port) {
        if (outlen)
            out[0] = 0;
        return 1;
    }
    return join_names(J.port_get_all_connections(c->client, port), out, outlen);
}

/* The system's MIDI ports that take input (inputs=1) or give output (inputs=0). */
size_t dm_list_ports(dm_client *c, int inputs, char *out, size_t outlen)
{
    return join_names(J.get_ports(c->client, NULL, JACK_DEFAULT_MIDI_TYPE,
                                  inputs ? JackPortIsInput : JackPortIsOutput), out, outlen);
}

/* Python's side of the out ring (one writer: the caller holds the sink's lock).
 * 0: queued; -1: the ring is full (dropped); -2: not a message this sends. */
int dm_send(dm_client *c, int slot, int64_t due_us, const uint8_t *data, int size)
{
    if (!port_of(c, slot) || c->ports[slot].is_input)
        return -2;
    if (size < 1 || size > MSG_MAX || data[0] < 0x80 || data[0] == 0xF0)
        return -2;
    dm_port *p = &c->ports[slot];
    out_record r = {.due_us = due_us, .flushes = atomic_load(&p->flushes_asked), .size = (uint8_t)size};
    memcpy(r.data, data, (size_t)size);
    if (J.rb_write_space(p->ring) < sizeof r)
        return -1;
    J.rb_write(p->ring, (const char *)&r, sizeof r);
    return 0;
}

int dm_flush_notes(dm_client *c, int slot)
{
    if (!port_of(c, slot) || c->ports[slot].is_input)
        return -2;
    atomic_fetch_add_explicit(&c->ports[slot].flushes_asked, 1, memory_order_release);
    return 0;
}

/* Python's side of the in ring (one reader): the next event's size (its bytes in out, its time in
 * *usecs and *frame), 0 if none; a negative size: out is too small, the event was dropped. */
int dm_receive(dm_client *c, int slot, uint8_t *out, int outlen, uint64_t *usecs, uint32_t *frame)
{
    if (!port_of(c, slot) || !c->ports[slot].is_input)
        return 0;
    jack_ringbuffer_t *ring = c->ports[slot].ring;
    in_header h;
    if (J.rb_read_space(ring) < sizeof h)
        return 0;
    J.rb_peek(ring, (char *)&h, sizeof h);
    if (J.rb_read_space(ring) < sizeof h + h.size)
        return 0; /* the writer wrote the header first: the bytes follow within the period */
    J.rb_read(ring, (char *)&h, sizeof h);
    *usecs = h.usecs;
    *frame = h.frame;
    if ((int)h.size > outlen) {
        char sink[256];
        for (uint32_t left = h.size; left > 0;) {
            uint32_t n = left < sizeof sink ? left : sizeof sink;
            J.rb_read(ring, sink, n);
            left -= n;
        }
        return -(int)h.size;
    }
    J.rb_read(ring, (char *)out, h.size);
    return (int)h.size;
}

void dm_port_stats(dm_client *c, int slot, uint64_t *out)
{
    for (int k = 0; k < ST_COUNT; k++)
        out[k] = (slot >= 0 && slot < MAX_PORTS) ? atomic_load(&c->ports[slot].stats[k]) : 0;
}

/* --- the kit's audio ports ------------------------------------------------------------------- */

/* Register `channels` audio outputs named prefix0, prefix1, ... played from the ring at `ring`
 * (dm_ring_init'ed; the engine keeps it mapped while the ports exist), and tell the ring JACK's
 * rate and period. 0, or -1 (already there, no memory), -2 (JACK refused a port: none kept). */
int dm_audio_open(dm_client *c, void *ring, const char *prefix, int channels)
{
    if (c->audio || channels < 1 || channels > MAX_AUDIO)
        return -1;
    struct dm_audio *a = calloc(1, sizeof *a);
    if (!a)
        return -1;
    a->ring = ring;
    for (int k = 0; k < channels; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s%d", prefix, k);
        a->ports[k] = J.port_register(c->client, name, JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0);
        if (!a->ports[k]) {
            for (int j = 0; j < k; j++)
                J.port_unregister(c->client, a->ports[j]);
            free(a);
            return -2;
        }
        a->n = k + 1;
    }
    dm_ring *r = ring;
    atomic_store(&r->rate, J.get_sample_rate(c->client));
    atomic_store(&r->period, J.get_buffer_size(c->client));
    atomic_store(&r->ports, (uint64_t)channels);
    atomic_fetch_add(&r->opens, 1);
    c->xruns_told = atomic_load(&c->xruns); /* the ring hears of the xruns from now on */
    c->audio = a;
    atomic_store_explicit(&a->state, SLOT_ACTIVE, memory_order_release);
    return 0;
}

/* Take the audio ports away, as dm_port_remove a MIDI port: 0 done, 1 left allocated (the server
 * ran no callback within wait_ms). The ring says no ports from then on. */
int dm_audio_close(dm_client *c, int wait_ms)
{
    struct dm_audio *a = c->audio;
    if (!a)
        return 0;
    atomic_store(&a->state, SLOT_CLOSING);
    atomic_store(&a->ring->ports, 0);
    uint64_t start = atomic_load(&c->cycles);
    struct timespec nap = {0, 1000000};
    for (int waited = 0; atomic_load(&c->cycles) < start + 2; waited++) {
        if (atomic_load(&c->gone))
            break;
        if (waited >= wait_ms)
            return 1;
        nanosleep(&nap, NULL);
    }
    if (!atomic_load(&c->gone))
        for (int k = 0; k < a->n; k++)
            J.port_unregister(c->client, a->ports[k]);
    c->audio = NULL;
    free(a);
    return 0;
}

static jack_port_t *audio_port(dm_client *c, int k)
{
    struct dm_audio *a = c->audio;
    return a && k >= 0 && k < a->n ? a->ports[k] : NULL;
}

const char *dm_audio_port_name(dm_client *c, int k)
{
    jack_port_t *port = audio_port(c, k);
    return port ? J.port_name(port) : NULL;
}

int dm_audio_connect(dm_client *c, int k, const char *other, int connect)
{
    jack_port_t *port = audio_port(c, k);
    if (!port)
        return -1;
    return connect ? J.connect(c->client, J.port_name(port), other)
                   : J.disconnect(c->client, J.port_name(port), other);
}

int dm_audio_connected_to(dm_client *c, int k, const char *other)
{
    jack_port_t *port = audio_port(c, k);
    return port ? J.port_connected_to(port, other) : 0;
}

size_t dm_audio_connections(dm_client *c, int k, char *out, size_t outlen)
{
    jack_port_t *port = audio_port(c, k);
    return join_names(port ? J.port_get_all_connections(c->client, port) : NULL, out, outlen);
}

/* The longest playback latency of the audio ports, in frames: the server's periods to the sound
 * card and whatever they are routed through; -1 when this libjack cannot say. */
long dm_audio_latency(dm_client *c)
{
    struct dm_audio *a = c->audio;
    if (!a || !J.port_get_latency_range)
        return -1;
    long most = 0;
    for (int k = 0; k < a->n; k++) {
        jack_latency_range_t range = {0, 0};
        J.port_get_latency_range(a->ports[k], JackPlaybackLatency, &range);
        if ((long)range.max > most)
            most = (long)range.max;
    }
    return most;
}

/* The physical audio outputs (the sound card's playback ports, that take input), in order. */
size_t dm_list_playback(dm_client *c, char *out, size_t outlen)
{
    return join_names(J.get_ports(c->client, NULL, JACK_DEFAULT_AUDIO_TYPE, JackPortIsInput | JackPortIsPhysical),
                      out, outlen);
}
