/* ramp_codec.c: see ramp_codec.h. C99, no malloc, no recursion, no floating-point formatting. */
#include "ramp_codec.h"

#include <string.h>

/* float must be IEEE-754 binary32 of 4 bytes for the memcpy conversions below. */
typedef char ramp_float_is_4_bytes[(sizeof(float) == 4) ? 1 : -1];

/* ------------------------------------------------------------------------------------------ */
/* CRC-32/ISO-HDLC, reflected polynomial 0xEDB88320, 16-entry (nibble) table: 64 bytes. */

static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

uint32_t ramp_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static void put_le32(uint32_t v, uint8_t *b)
{
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}

float ramp_f32_from_le(const uint8_t *b)
{
    uint32_t u = le32(b);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void ramp_f32_to_le(float f, uint8_t *b)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    put_le32(u, b);
}

ramp_str_t ramp_str(const char *s)
{
    ramp_str_t r;
    size_t n = strlen(s);
    r.ptr = s;
    r.len = (uint16_t)(n > 0xFFFFu ? 0xFFFFu : n);
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* COBS */

static size_t cobs_bound(size_t len) { return len + len / 254u + 1u; }

/* Forward encoder. Also safe when in lies RAMP_COBS_SLACK bytes after out and
 * len <= RAMP_MAX_SEALED: every write lands on a byte already read (see ramp_encode_serial). */
static size_t cobs_encode_fwd(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t r = 0, w = 1, cp = 0;
    uint8_t code = 1;
    while (r < len) {
        uint8_t b = in[r++];
        if (b != 0) {
            out[w++] = b;
            code++;
        }
        if (b == 0 || code == 0xFFu) {
            out[cp] = code;
            code = 1;
            cp = w;
            if (b == 0 || r < len) {
                w++;
            } else {
                return w; /* canonical: no empty block after a final 0xFF block */
            }
        }
    }
    out[cp] = code;
    return w;
}

int ramp_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    if (cap < cobs_bound(len)) {
        return RAMP_ERR_BUFFER;
    }
    *out_len = cobs_encode_fwd(in, len, out);
    return RAMP_OK;
}

int ramp_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t *out_len)
{
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = in[i++];
        size_t k;
        if (code == 0) {
            return RAMP_ERR_FRAME;
        }
        k = (size_t)code - 1u;
        if (k > len - i) {
            return RAMP_ERR_FRAME; /* block runs past the end */
        }
        while (k--) {
            if (in[i] == 0) {
                return RAMP_ERR_FRAME;
            }
            out[o++] = in[i++]; /* o < i: in-place decoding is safe */
        }
        if (code != 0xFFu && i < len) {
            out[o++] = 0;
        }
    }
    *out_len = o;
    return RAMP_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Minimal msgpack reader */

enum { K_NIL, K_BOOL, K_UINT, K_NINT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP, K_EXT };

typedef struct {
    const uint8_t *p;
    size_t n, i;
} rd_t;

typedef struct {
    int kind;
    uint64_t v;          /* K_UINT: value; K_STR/K_BIN/K_EXT: length; K_ARRAY/K_MAP: count */
    const uint8_t *data; /* K_STR/K_BIN/K_EXT: the bytes */
} tok_t;

static int rd_be(rd_t *r, unsigned nbytes, uint64_t *v)
{
    uint64_t x = 0;
    if (r->n - r->i < nbytes) {
        return 0;
    }
    while (nbytes--) {
        x = (x << 8) | r->p[r->i++];
    }
    *v = x;
    return 1;
}

/* Strict UTF-8 as Python decodes it: no overlongs, no surrogates, nothing above U+10FFFF. */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i++];
        unsigned more;
        uint8_t lo = 0x80u, hi = 0xBFu;
        if (c < 0x80u) {
            continue;
        } else if (c >= 0xC2u && c <= 0xDFu) {
            more = 1;
        } else if (c >= 0xE0u && c <= 0xEFu) {
            more = 2;
            if (c == 0xE0u) {
                lo = 0xA0u;
            } else if (c == 0xEDu) {
                hi = 0x9Fu;
            }
        } else if (c >= 0xF0u && c <= 0xF4u) {
            more = 3;
            if (c == 0xF0u) {
                lo = 0x90u;
            } else if (c == 0xF4u) {
                hi = 0x8Fu;
            }
        } else {
            return 0;
        }
        if (n - i < more || s[i] < lo || s[i] > hi) {
            return 0;
        }
        i++;
        while (--more) {
            if ((s[i] & 0xC0u) != 0x80u) {
                return 0;
            }
            i++;
        }
    }
    return 1;
}

/* msgpack-python turns ext type -1 into a Timestamp and refuses invalid ones. */
static int timestamp_ok(const uint8_t *d, uint64_t len)
{
    uint32_t ns;
    if (len == 4) {
        return 1;
    }
    if (len == 8) {
        ns = ((uint32_t)d[0] << 22) | ((uint32_t)d[1] << 14) | ((uint32_t)d[2] << 6) |
             ((uint32_t)d[3] >> 2); /* top 30 bits, big-endian */
        return ns <= 999999999u;
    }
    if (len == 12) {
        ns = ((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8) | d[3];
        return ns <= 999999999u;
    }
    return 0;
}

/* Read one value's head; str, bin, ext and float data are consumed too. 0: malformed. */
static int rd_tok(rd_t *r, tok_t *t)
{
    uint8_t b;
    uint64_t len = 0;
    unsigned w;
    if (r->i >= r->n) {
        return 0;
    }
    b = r->p[r->i++];
    t->data = NULL;
    t->v = 0;
    if (b <= 0x7Fu) {
        t->kind = K_UINT;
        t->v = b;
        return 1;
    }
    if (b >= 0xE0u) {
        t->kind = K_NINT;
        return 1;
    }
    if (b <= 0x8Fu) {
        t->kind = K_MAP;
        t->v = b & 0x0Fu;
        return 1;
    }
    if (b <= 0x9Fu) {
        t->kind = K_ARRAY;
        t->v = b & 0x0Fu;
        return 1;
    }
    if (b <= 0xBFu) {
        t->kind = K_STR;
        len = b & 0x1Fu;
        goto data;
    }
    switch (b) {
    case 0xC0: t->kind = K_NIL; return 1;
    case 0xC2: case 0xC3: t->kind = K_BOOL; t->v = b & 1u; return 1;
    case 0xC4: case 0xC5: case 0xC6:
        t->kind = K_BIN;
        w = 1u << (b - 0xC4u);
        if (!rd_be(r, w, &len)) return 0;
        goto data;
    case 0xC7: case 0xC8: case 0xC9:
        t->kind = K_EXT;
        w = 1u << (b - 0xC7u);
        if (!rd_be(r, w, &len)) return 0;
        len += 1; /* the type byte */
        goto data;
    case 0xCA: case 0xCB:
        t->kind = K_FLOAT;
        len = (b == 0xCA) ? 4 : 8;
        goto data;
    case 0xCC: case 0xCD: case 0xCE: case 0xCF:
        t->kind = K_UINT;
        return rd_be(r, 1u << (b - 0xCCu), &t->v);
    case 0xD0: case 0xD1: case 0xD2: case 0xD3:
        w = 1u << (b - 0xD0u);
        if (!rd_be(r, w, &t->v)) return 0;
        if (t->v >> (8u * w - 1u)) {
            t->kind = K_NINT; /* a negative value */
            t->v = 0;
        } else {
            t->kind = K_UINT; /* a signed format holding a non-negative value */
        }
        return 1;
    case 0xD4: case 0xD5: case 0xD6: case 0xD7: case 0xD8:
        t->kind = K_EXT;
        len = (1u << (b - 0xD4u)) + 1u;
        goto data;
    case 0xD9: case 0xDA: case 0xDB:
        t->kind = K_STR;
        if (!rd_be(r, 1u << (b - 0xD9u), &len)) return 0;
        goto data;
    case 0xDC: case 0xDD:
        t->kind = K_ARRAY;
        return rd_be(r, (b == 0xDC) ? 2u : 4u, &t->v);
    case 0xDE: case 0xDF:
        t->kind = K_MAP;
        return rd_be(r, (b == 0xDE) ? 2u : 4u, &t->v);
    default: /* 0xC1 */
        return 0;
    }
data:
    if (len > r->n - r->i) {
        return 0;
    }
    t->data = r->p + r->i;
    r->i += (size_t)len;
    if (t->kind == K_STR) {
        t->v = len;
        return utf8_ok(t->data, (size_t)len);
    }
    if (t->kind == K_EXT) {
        t->v = len - 1u;
        if ((int8_t)t->data[0] == -1 && !timestamp_ok(t->data + 1, len - 1u)) {
            return 0;
        }
        t->data += 1;
    } else {
        t->v = len;
    }
    return 1;
}

/* Check that one whole msgpack value follows (iteratively, depth-limited); advance past it.
 * Map keys must be str or bin, as msgpack-python's strict_map_key demands. */
static int rd_skip_value(rd_t *r)
{
    uint32_t left[RAMP_MAX_DEPTH + 1u];
    uint8_t is_map[RAMP_MAX_DEPTH + 1u];
    unsigned depth = 1;
    tok_t t;
    left[0] = 1;
    is_map[0] = 0;
    while (depth) {
        unsigned top = depth - 1u;
        int key;
        if (left[top] == 0) {
            depth--;
            continue;
        }
        key = is_map[top] && (left[top] % 2u == 0u);
        left[top]--;
        if (!rd_tok(r, &t)) {
            return 0;
        }
        if (key && t.kind != K_STR && t.kind != K_BIN) {
            return 0;
        }
        if (t.kind == K_ARRAY || t.kind == K_MAP) {
            uint64_t items = (t.kind == K_MAP) ? 2u * t.v : t.v;
            if (items > r->n - r->i) {
                return 0; /* each item needs at least one byte */
            }
            if (items) {
                if (depth > RAMP_MAX_DEPTH) {
                    return 0;
                }
                left[depth] = (uint32_t)items;
                is_map[depth] = (uint8_t)(t.kind == K_MAP);
                depth++;
            }
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Codec level */

static int rd_hdr_uint(rd_t *r, uint64_t max, uint64_t *v)
{
    tok_t t;
    if (!rd_tok(r, &t) || t.kind != K_UINT || t.v > max) {
        return 0;
    }
    *v = t.v;
    return 1;
}

int ramp_decode_payload(const uint8_t *payload, size_t len, ramp_frame_t *frame)
{
    rd_t r;
    tok_t t;
    uint64_t version, type, seq, t_us;
    size_t body_at;
    if (len > RAMP_MAX_PAYLOAD) {
        return RAMP_ERR_MALFORMED;
    }
    r.p = payload;
    r.n = len;
    r.i = 0;
    if (!rd_skip_value(&r) || r.i != len) {
        return RAMP_ERR_MALFORMED; /* not msgpack, or trailing bytes */
    }
    r.i = 0;
    if (!rd_tok(&r, &t) || t.kind != K_ARRAY || t.v != 5) {
        return RAMP_ERR_MALFORMED;
    }
    if (!rd_hdr_uint(&r, 0xFFu, &version) || !rd_hdr_uint(&r, 0xFFu, &type) ||
        !rd_hdr_uint(&r, 0xFFFFFFFFu, &seq) || !rd_hdr_uint(&r, UINT64_MAX, &t_us)) {
        return RAMP_ERR_MALFORMED;
    }
    body_at = r.i;
    if (!rd_tok(&r, &t) || t.kind != K_ARRAY) {
        return RAMP_ERR_MALFORMED;
    }
    frame->version = (uint8_t)version;
    frame->type = (uint8_t)type;
    frame->seq = (uint32_t)seq;
    frame->t_us = t_us;
    frame->body = payload + body_at;
    frame->body_len = (uint16_t)(len - body_at); /* the body is the last value */
    return RAMP_OK;
}

static int unseal_and_decode(const uint8_t *sealed, size_t len, ramp_frame_t *frame)
{
    size_t n;
    if (len <= RAMP_CRC_BYTES) {
        return RAMP_ERR_CRC;
    }
    n = len - RAMP_CRC_BYTES;
    if (ramp_crc32(0, sealed, n) != le32(sealed + n)) {
        return RAMP_ERR_CRC;
    }
    return ramp_decode_payload(sealed, n, frame);
}

int ramp_decode_message(const uint8_t *sealed, size_t len, ramp_frame_t *frame)
{
    if (len > RAMP_MAX_SEALED) {
        return RAMP_ERR_TOO_LONG;
    }
    return unseal_and_decode(sealed, len, frame);
}

void ramp_decoder_init(ramp_decoder_t *dec)
{
    memset(dec, 0, sizeof *dec);
}

void ramp_decoder_reset(ramp_decoder_t *dec)
{
    dec->len = 0;
}

int ramp_decoder_feed(ramp_decoder_t *dec, uint8_t byte, ramp_frame_t *frame)
{
    size_t n, m;
    int rc;
    if (byte != 0) {
        if (dec->len >= RAMP_MAX_ENCODED) {
            /* More than MAX_ENCODED bytes without a delimiter: drop them (this one too) and
             * count one oversize frame, before anything is stored past the buffer. What follows
             * up to the next 0x00 is collected afresh: it is the bad frame's tail and fails COBS
             * or the CRC, unless a sender restarted with a 0x00 (docs/PROTOCOL.md 2.3). */
            dec->len = 0;
            dec->oversize++;
            return RAMP_ERR_TOO_LONG;
        }
        dec->buf[dec->len++] = byte;
        return RAMP_NEED_MORE;
    }
    n = dec->len;
    dec->len = 0;
    if (n == 0) {
        return RAMP_NEED_MORE; /* filler delimiter: not a frame, not an error */
    }
    rc = ramp_cobs_decode(dec->buf, n, dec->buf, &m); /* in place */
    if (rc == RAMP_OK) {
        /* m may exceed MAX_SEALED here (many 0x00): its payload is then too long (malformed). */
        rc = unseal_and_decode(dec->buf, m, frame);
    }
    switch (rc) {
    case RAMP_OK: dec->frames++; break;
    case RAMP_ERR_CRC: dec->crc_failures++; break;
    default: dec->malformed++; break; /* bad COBS or section 3 */
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Message level */

static int b_uint(rd_t *r, uint64_t max, uint64_t *v)
{
    tok_t t;
    if (!rd_tok(r, &t) || t.kind != K_UINT || t.v > max) {
        return 0;
    }
    *v = t.v;
    return 1;
}

static int b_u32(rd_t *r, uint32_t *v)
{
    uint64_t x;
    if (!b_uint(r, 0xFFFFFFFFu, &x)) {
        return 0;
    }
    *v = (uint32_t)x;
    return 1;
}

static int b_u8(rd_t *r, uint8_t max, uint8_t *v)
{
    uint64_t x;
    if (!b_uint(r, max, &x)) {
        return 0;
    }
    *v = (uint8_t)x;
    return 1;
}

static int b_str(rd_t *r, ramp_str_t *s)
{
    tok_t t;
    if (!rd_tok(r, &t) || t.kind != K_STR) {
        return 0;
    }
    s->ptr = (const char *)t.data;
    s->len = (uint16_t)t.v;
    return 1;
}

/* A joint vector: bin of n little-endian values of `size` bytes (4: float32, 1: int8).
 * want < 0: any n up to RAMP_MAX_JOINTS; else exactly want values. */
static int b_vec(rd_t *r, unsigned size, int want, float *f, int8_t *i8, uint8_t *n_out)
{
    tok_t t;
    size_t k, n;
    if (!rd_tok(r, &t) || t.kind != K_BIN || t.v % size != 0) {
        return 0;
    }
    n = (size_t)(t.v / size);
    if (n > RAMP_MAX_JOINTS || (want >= 0 && n != (size_t)want)) {
        return 0;
    }
    for (k = 0; k < n; k++) {
        if (size == 4) {
            f[k] = ramp_f32_from_le(t.data + 4u * k);
        } else {
            i8[k] = (int8_t)t.data[k];
        }
    }
    if (n_out) {
        *n_out = (uint8_t)n;
    }
    return 1;
}

static int b_f32(rd_t *r, int want, float *f, uint8_t *n_out)
{
    return b_vec(r, 4, want, f, NULL, n_out);
}

static int body_arity(uint8_t type)
{
    static const int8_t arity[15] = {-1, 3, 9, 0, 5, 3, 1, 1, 0, 0, 5, 5, 0, 2, 2};
    return type < 15 ? arity[type] : -1;
}

static int decode_body(rd_t *r, uint8_t type, ramp_msg_t *m)
{
    unsigned k, j;
    uint8_t n;
    switch (type) {
    case RAMP_HELLO:
        return b_u32(r, &m->u.hello.version_min) && b_u32(r, &m->u.hello.version_max) &&
               b_str(r, &m->u.hello.host_name);
    case RAMP_INFO: {
        tok_t t;
        if (!b_u32(r, &m->u.info.protocol_version) || !b_str(r, &m->u.info.firmware_version) ||
            !b_str(r, &m->u.info.device_id) || !rd_tok(r, &t) || t.kind != K_ARRAY ||
            t.v == 0 || t.v > RAMP_MAX_JOINTS) {
            return 0;
        }
        n = (uint8_t)t.v;
        for (k = 0; k < n; k++) {
            if (!b_str(r, &m->u.info.joint_names[k])) {
                return 0;
            }
            for (j = 0; j < k; j++) { /* no duplicates */
                const ramp_str_t *a = &m->u.info.joint_names[j], *b = &m->u.info.joint_names[k];
                if (a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0)) {
                    return 0;
                }
            }
        }
        m->u.info.n = n;
        return b_f32(r, n, m->u.info.position_min, NULL) &&
               b_f32(r, n, m->u.info.position_max, NULL) &&
               b_f32(r, n, m->u.info.velocity_max, NULL) && b_u32(r, &m->u.info.watchdog_ms) &&
               b_u32(r, &m->u.info.servo_rate_hz);
    }
    case RAMP_STATE:
        return b_u8(r, RAMP_MODE_ESTOP, &m->u.state.mode) &&
               b_u8(r, RAMP_FAULT_INTERNAL, &m->u.state.fault) &&
               b_f32(r, -1, m->u.state.position, &m->u.state.n) &&
               b_f32(r, m->u.state.n, m->u.state.velocity, NULL) &&
               b_f32(r, m->u.state.n, m->u.state.effort, NULL);
    case RAMP_SETPOINT:
        if (!b_u32(r, &m->u.setpoint.reach_in_us) ||
            !b_f32(r, -1, m->u.setpoint.position, &m->u.setpoint.n)) {
            return 0;
        }
        if (r->i < r->n && r->p[r->i] == 0xC0u) { /* nil */
            r->i++;
            m->u.setpoint.has_velocity = 0;
            return 1;
        }
        m->u.setpoint.has_velocity = 1;
        return b_f32(r, m->u.setpoint.n, m->u.setpoint.velocity, NULL);
    case RAMP_MODE:
        return b_u8(r, RAMP_MODE_ESTOP, &m->u.mode.mode);
    case RAMP_ESTOP:
        return b_str(r, &m->u.estop.reason);
    case RAMP_CAL_DATA:
    case RAMP_CAL_WRITE:
        if (!b_f32(r, -1, m->u.cal.homing_offset, &m->u.cal.n) ||
            !b_vec(r, 1, m->u.cal.n, NULL, m->u.cal.drive_sign, NULL)) {
            return 0;
        }
        for (k = 0; k < m->u.cal.n; k++) {
            if (m->u.cal.drive_sign[k] != 1 && m->u.cal.drive_sign[k] != -1) {
                return 0;
            }
        }
        return b_f32(r, m->u.cal.n, m->u.cal.position_min, NULL) &&
               b_f32(r, m->u.cal.n, m->u.cal.position_max, NULL) &&
               b_str(r, &m->u.cal.calibration_id);
    case RAMP_FAULT:
        return b_u8(r, RAMP_FAULT_INTERNAL, &m->u.fault.code) && b_str(r, &m->u.fault.detail);
    case RAMP_ACK:
        return b_u8(r, RAMP_ACK_UNSUPPORTED, &m->u.ack.status) && b_str(r, &m->u.ack.detail);
    default: /* no fields */
        return 1;
    }
}

int ramp_decode_body(const ramp_frame_t *frame, ramp_msg_t *msg)
{
    rd_t r;
    tok_t t;
    int arity = body_arity(frame->type);
    memset(msg, 0, sizeof *msg);
    msg->version = frame->version;
    msg->type = frame->type;
    msg->seq = frame->seq;
    msg->t_us = frame->t_us;
    if (arity < 0) {
        return RAMP_ERR_UNSUPPORTED;
    }
    r.p = frame->body;
    r.n = frame->body_len;
    r.i = 0;
    if (!rd_tok(&r, &t) || t.kind != K_ARRAY || t.v != (uint64_t)arity) {
        return RAMP_ERR_BAD_BODY;
    }
    return decode_body(&r, frame->type, msg) ? RAMP_OK : RAMP_ERR_BAD_BODY;
}

/* ------------------------------------------------------------------------------------------ */
/* Minimal msgpack writer: shortest forms, as msgpack-python writes them. */

typedef struct {
    uint8_t *p;
    size_t cap, n; /* n counts every byte, also those past cap (then nothing is written) */
    int err;
} wr_t;

static void w_byte(wr_t *w, uint8_t b)
{
    if (w->n < w->cap) {
        w->p[w->n] = b;
    }
    w->n++;
}

static void w_tag_be(wr_t *w, uint8_t tag, uint64_t v, unsigned nbytes)
{
    w_byte(w, tag);
    while (nbytes--) {
        w_byte(w, (uint8_t)(v >> (8u * nbytes)));
    }
}

static void w_uint(wr_t *w, uint64_t v)
{
    if (v < 0x80u) {
        w_byte(w, (uint8_t)v);
    } else if (v <= 0xFFu) {
        w_tag_be(w, 0xCC, v, 1);
    } else if (v <= 0xFFFFu) {
        w_tag_be(w, 0xCD, v, 2);
    } else if (v <= 0xFFFFFFFFu) {
        w_tag_be(w, 0xCE, v, 4);
    } else {
        w_tag_be(w, 0xCF, v, 8);
    }
}

static void w_array(wr_t *w, uint32_t n)
{
    if (n < 16u) {
        w_byte(w, (uint8_t)(0x90u | n));
    } else if (n <= 0xFFFFu) {
        w_tag_be(w, 0xDC, n, 2);
    } else {
        w_tag_be(w, 0xDD, n, 4);
    }
}

static void w_raw(wr_t *w, const uint8_t *d, size_t n)
{
    while (n--) {
        w_byte(w, *d++);
    }
}

static void w_str(wr_t *w, ramp_str_t s)
{
    if (s.len && (s.ptr == NULL || !utf8_ok((const uint8_t *)s.ptr, s.len))) {
        w->err = RAMP_ERR_ARG;
        return;
    }
    if (s.len < 32u) {
        w_byte(w, (uint8_t)(0xA0u | s.len));
    } else if (s.len <= 0xFFu) {
        w_tag_be(w, 0xD9, s.len, 1);
    } else {
        w_tag_be(w, 0xDA, s.len, 2);
    }
    if (s.len) {
        w_raw(w, (const uint8_t *)s.ptr, s.len);
    }
}

static void w_bin_head(wr_t *w, uint32_t n)
{
    if (n <= 0xFFu) {
        w_tag_be(w, 0xC4, n, 1);
    } else if (n <= 0xFFFFu) {
        w_tag_be(w, 0xC5, n, 2);
    } else {
        w_tag_be(w, 0xC6, n, 4);
    }
}

static void w_f32(wr_t *w, const float *v, unsigned n)
{
    unsigned k;
    uint8_t b[4];
    w_bin_head(w, 4u * n);
    for (k = 0; k < n; k++) {
        ramp_f32_to_le(v[k], b);
        w_raw(w, b, 4);
    }
}

static void w_check(wr_t *w, int ok)
{
    if (!ok) {
        w->err = RAMP_ERR_ARG;
    }
}

static void encode_body(wr_t *w, const ramp_msg_t *m)
{
    unsigned k, n;
    switch (m->type) {
    case RAMP_HELLO:
        w_array(w, 3);
        w_uint(w, m->u.hello.version_min);
        w_uint(w, m->u.hello.version_max);
        w_str(w, m->u.hello.host_name);
        break;
    case RAMP_INFO:
        n = m->u.info.n;
        w_check(w, n >= 1u && n <= RAMP_MAX_JOINTS);
        if (w->err) return;
        w_array(w, 9);
        w_uint(w, m->u.info.protocol_version);
        w_str(w, m->u.info.firmware_version);
        w_str(w, m->u.info.device_id);
        w_array(w, n);
        for (k = 0; k < n; k++) {
            w_str(w, m->u.info.joint_names[k]);
        }
        w_f32(w, m->u.info.position_min, n);
        w_f32(w, m->u.info.position_max, n);
        w_f32(w, m->u.info.velocity_max, n);
        w_uint(w, m->u.info.watchdog_ms);
        w_uint(w, m->u.info.servo_rate_hz);
        break;
    case RAMP_STATE:
        n = m->u.state.n;
        w_check(w, n <= RAMP_MAX_JOINTS && m->u.state.mode <= RAMP_MODE_ESTOP &&
                       m->u.state.fault <= RAMP_FAULT_INTERNAL);
        if (w->err) return;
        w_array(w, 5);
        w_uint(w, m->u.state.mode);
        w_uint(w, m->u.state.fault);
        w_f32(w, m->u.state.position, n);
        w_f32(w, m->u.state.velocity, n);
        w_f32(w, m->u.state.effort, n);
        break;
    case RAMP_SETPOINT:
        n = m->u.setpoint.n;
        w_check(w, n <= RAMP_MAX_JOINTS);
        if (w->err) return;
        w_array(w, 3);
        w_uint(w, m->u.setpoint.reach_in_us);
        w_f32(w, m->u.setpoint.position, n);
        if (m->u.setpoint.has_velocity) {
            w_f32(w, m->u.setpoint.velocity, n);
        } else {
            w_byte(w, 0xC0);
        }
        break;
    case RAMP_MODE:
        w_check(w, m->u.mode.mode <= RAMP_MODE_ESTOP);
        w_array(w, 1);
        w_uint(w, m->u.mode.mode);
        break;
    case RAMP_ESTOP:
        w_array(w, 1);
        w_str(w, m->u.estop.reason);
        break;
    case RAMP_CAL_DATA:
    case RAMP_CAL_WRITE:
        n = m->u.cal.n;
        w_check(w, n <= RAMP_MAX_JOINTS);
        if (w->err) return;
        for (k = 0; k < n; k++) {
            w_check(w, m->u.cal.drive_sign[k] == 1 || m->u.cal.drive_sign[k] == -1);
        }
        w_array(w, 5);
        w_f32(w, m->u.cal.homing_offset, n);
        w_bin_head(w, n);
        for (k = 0; k < n; k++) {
            w_byte(w, (uint8_t)m->u.cal.drive_sign[k]);
        }
        w_f32(w, m->u.cal.position_min, n);
        w_f32(w, m->u.cal.position_max, n);
        w_str(w, m->u.cal.calibration_id);
        break;
    case RAMP_FAULT:
        w_check(w, m->u.fault.code <= RAMP_FAULT_INTERNAL);
        w_array(w, 2);
        w_uint(w, m->u.fault.code);
        w_str(w, m->u.fault.detail);
        break;
    case RAMP_ACK:
        w_check(w, m->u.ack.status <= RAMP_ACK_UNSUPPORTED);
        w_array(w, 2);
        w_uint(w, m->u.ack.status);
        w_str(w, m->u.ack.detail);
        break;
    case RAMP_STATE_REQUEST:
    case RAMP_CLEAR_FAULT:
    case RAMP_CAL_READ:
    case RAMP_HEARTBEAT:
        w_array(w, 0);
        break;
    default:
        w->err = RAMP_ERR_ARG;
        break;
    }
}

int ramp_encode_payload(const ramp_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len)
{
    wr_t w;
    w.p = out;
    w.cap = cap;
    w.n = 0;
    w.err = RAMP_OK;
    w_array(&w, 5);
    w_uint(&w, msg->version);
    w_uint(&w, msg->type);
    w_uint(&w, msg->seq);
    w_uint(&w, msg->t_us);
    encode_body(&w, msg);
    if (w.err) {
        return w.err;
    }
    if (w.n > RAMP_MAX_PAYLOAD) {
        return RAMP_ERR_TOO_LONG;
    }
    if (w.n > cap) {
        return RAMP_ERR_BUFFER;
    }
    *out_len = w.n;
    return RAMP_OK;
}

int ramp_encode_message(const ramp_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t n;
    int rc;
    if (cap < RAMP_CRC_BYTES) {
        return RAMP_ERR_BUFFER;
    }
    rc = ramp_encode_payload(msg, out, cap - RAMP_CRC_BYTES, &n);
    if (rc != RAMP_OK) {
        return rc;
    }
    put_le32(ramp_crc32(0, out, n), out + n);
    *out_len = n + RAMP_CRC_BYTES;
    return RAMP_OK;
}

int ramp_encode_serial(const ramp_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t n, m;
    int rc;
    if (cap < RAMP_COBS_SLACK + 1u + RAMP_CRC_BYTES) {
        return RAMP_ERR_BUFFER;
    }
    /* Stage the sealed payload RAMP_COBS_SLACK bytes in and COBS-encode it forward into out:
     * the output runs ahead of the input by at most len / 254 + 1 <= RAMP_COBS_SLACK bytes,
     * so no unread byte is overwritten. */
    rc = ramp_encode_message(msg, out + RAMP_COBS_SLACK, cap - RAMP_COBS_SLACK - 1u, &n);
    if (rc != RAMP_OK) {
        return rc;
    }
    m = cobs_encode_fwd(out + RAMP_COBS_SLACK, n, out);
    out[m] = 0x00; /* delimiter */
    *out_len = m + 1u;
    return RAMP_OK;
}
