/* Host-only test driver for ramp_codec, used by tests/test_c_codec.py. Reads commands on stdin,
 * one per line, and answers with JSON lines on stdout:
 *
 *   S <hex>   feed the bytes to a persistent streaming decoder; one line per frame or error,
 *             then {"end":...} with the decoder's counters
 *   R         reset the streaming decoder and its counters
 *   M <hex>   decode one sealed payload (ZeroMQ message)
 *   E <type> <version> <seq> <t_us> <field>...   encode; fields in body order:
 *             uint: decimal; str: hex of its UTF-8 bytes ("-" if empty);
 *             f32 vector: hex of its little-endian bytes ("-" if empty, "nil" for no velocity);
 *             joint_names: comma-separated hex strings; drive_sign: hex of the int8 bytes
 *
 * Decoded bodies are printed in wire order: integers as numbers, str as "s:<hex>", vectors
 * as "b:<hex>" (rebuilt from the decoded floats), nil as null, joint_names as a list.
 * Floats are never formatted as decimals.
 */
#include "ramp_codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_CHARS (4L << 20) /* host-only driver: room for long streams */

static char line[LINE_MAX_CHARS];
static uint8_t bytes[LINE_MAX_CHARS / 2];
static char pool[LINE_MAX_CHARS]; /* storage for strings of an E command */
static size_t pool_used;
static ramp_decoder_t dec;

static const char *err_class(int rc)
{
    switch (rc) {
    case RAMP_ERR_FRAME: return "FrameError";
    case RAMP_ERR_CRC: return "CrcError";
    case RAMP_ERR_TOO_LONG: return "FrameTooLongError";
    case RAMP_ERR_MALFORMED: return "MalformedFrameError";
    case RAMP_ERR_UNSUPPORTED: return "ProtocolError";
    case RAMP_ERR_BAD_BODY: return "ProtocolError";
    case RAMP_ERR_ARG: return "ArgError";
    case RAMP_ERR_BUFFER: return "BufferError";
    default: return "Unknown";
    }
}

static const char *err_code(int rc)
{
    switch (rc) {
    case RAMP_ERR_UNSUPPORTED: return "UNSUPPORTED";
    case RAMP_ERR_BAD_BODY: return "BAD_BODY";
    default: return "";
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parse hex (or "-" for nothing) into out; returns the byte count or -1. */
static long parse_hex(const char *s, size_t slen, uint8_t *out)
{
    size_t i;
    if (slen == 1 && s[0] == '-') return 0;
    if (slen % 2) return -1;
    for (i = 0; i < slen; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i / 2] = (uint8_t)(hi * 16 + lo);
    }
    return (long)(slen / 2);
}

static void print_hex(const uint8_t *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) printf("%02x", b[i]);
}

static void p_str(ramp_str_t s)
{
    printf("\"s:");
    print_hex((const uint8_t *)s.ptr, s.len);
    printf("\"");
}

static void p_vec(const float *v, unsigned n)
{
    unsigned k;
    uint8_t b[4];
    printf("\"b:");
    for (k = 0; k < n; k++) {
        ramp_f32_to_le(v[k], b);
        print_hex(b, 4);
    }
    printf("\"");
}

static void print_body(const ramp_msg_t *m)
{
    unsigned k;
    switch (m->type) {
    case RAMP_HELLO:
        printf("%" PRIu32 ",%" PRIu32 ",", m->u.hello.version_min, m->u.hello.version_max);
        p_str(m->u.hello.host_name);
        break;
    case RAMP_INFO:
        printf("%" PRIu32 ",", m->u.info.protocol_version);
        p_str(m->u.info.firmware_version);
        printf(",");
        p_str(m->u.info.device_id);
        printf(",[");
        for (k = 0; k < m->u.info.n; k++) {
            if (k) printf(",");
            p_str(m->u.info.joint_names[k]);
        }
        printf("],");
        p_vec(m->u.info.position_min, m->u.info.n);
        printf(",");
        p_vec(m->u.info.position_max, m->u.info.n);
        printf(",");
        p_vec(m->u.info.velocity_max, m->u.info.n);
        printf(",%" PRIu32 ",%" PRIu32, m->u.info.watchdog_ms, m->u.info.servo_rate_hz);
        break;
    case RAMP_STATE:
        printf("%u,%u,", m->u.state.mode, m->u.state.fault);
        p_vec(m->u.state.position, m->u.state.n);
        printf(",");
        p_vec(m->u.state.velocity, m->u.state.n);
        printf(",");
        p_vec(m->u.state.effort, m->u.state.n);
        break;
    case RAMP_SETPOINT:
        printf("%" PRIu32 ",", m->u.setpoint.reach_in_us);
        p_vec(m->u.setpoint.position, m->u.setpoint.n);
        printf(",");
        if (m->u.setpoint.has_velocity) {
            p_vec(m->u.setpoint.velocity, m->u.setpoint.n);
        } else {
            printf("null");
        }
        break;
    case RAMP_MODE: printf("%u", m->u.mode.mode); break;
    case RAMP_ESTOP: p_str(m->u.estop.reason); break;
    case RAMP_CAL_DATA:
    case RAMP_CAL_WRITE:
        p_vec(m->u.cal.homing_offset, m->u.cal.n);
        printf(",\"b:");
        for (k = 0; k < m->u.cal.n; k++) printf("%02x", (unsigned)(uint8_t)m->u.cal.drive_sign[k]);
        printf("\",");
        p_vec(m->u.cal.position_min, m->u.cal.n);
        printf(",");
        p_vec(m->u.cal.position_max, m->u.cal.n);
        printf(",");
        p_str(m->u.cal.calibration_id);
        break;
    case RAMP_FAULT: printf("%u,", m->u.fault.code); p_str(m->u.fault.detail); break;
    case RAMP_ACK: printf("%u,", m->u.ack.status); p_str(m->u.ack.detail); break;
    default: break;
    }
}

static void print_frame(const ramp_frame_t *f)
{
    ramp_msg_t msg;
    int rc = ramp_decode_body(f, &msg);
    printf("{\"event\":\"frame\",\"version\":%u,\"type\":%u,\"seq\":%" PRIu32 ",\"t_us\":%" PRIu64,
           f->version, f->type, f->seq, f->t_us);
    if (rc == RAMP_OK) {
        printf(",\"body\":[");
        print_body(&msg);
        printf("]}\n");
    } else {
        printf(",\"error\":\"%s\",\"code\":\"%s\"}\n", err_class(rc), err_code(rc));
    }
}

static void print_error(int rc)
{
    printf("{\"event\":\"error\",\"error\":\"%s\"}\n", err_class(rc));
}

/* ---- E command ---------------------------------------------------------------------------- */

static char *tok_next(char **cur, size_t *len)
{
    char *s = *cur, *e;
    while (*s == ' ') s++;
    if (!*s) return NULL;
    e = s;
    while (*e && *e != ' ') e++;
    *len = (size_t)(e - s);
    *cur = e;
    return s;
}

static int t_uint(char **cur, uint64_t *v)
{
    size_t n;
    char *s = tok_next(cur, &n), *end;
    if (!s) return 0;
    *v = strtoull(s, &end, 10);
    return end == s + n;
}

static int t_u32(char **cur, uint32_t *v)
{
    uint64_t x;
    if (!t_uint(cur, &x) || x > 0xFFFFFFFFu) return 0;
    *v = (uint32_t)x;
    return 1;
}

static int t_u8(char **cur, uint8_t *v)
{
    uint64_t x;
    if (!t_uint(cur, &x) || x > 0xFFu) return 0;
    *v = (uint8_t)x;
    return 1;
}

static int str_from_hex(const char *s, size_t n, ramp_str_t *out)
{
    long k = parse_hex(s, n, (uint8_t *)pool + pool_used);
    if (k < 0) return 0;
    out->ptr = pool + pool_used;
    out->len = (uint16_t)k;
    pool_used += (size_t)k;
    return 1;
}

static int t_str(char **cur, ramp_str_t *out)
{
    size_t n;
    char *s = tok_next(cur, &n);
    return s && str_from_hex(s, n, out);
}

/* f32 vector; returns 0 on error, 1 on a vector, 2 on "nil". */
static int t_vec(char **cur, float *v, uint8_t *n_out)
{
    size_t n, k;
    long b;
    uint8_t tmp[4 * RAMP_MAX_JOINTS];
    char *s = tok_next(cur, &n);
    if (!s) return 0;
    if (n == 3 && memcmp(s, "nil", 3) == 0) return 2;
    if (n > 2 * sizeof tmp) return 0;
    b = parse_hex(s, n, tmp);
    if (b < 0 || b % 4) return 0;
    for (k = 0; k < (size_t)b / 4; k++) v[k] = ramp_f32_from_le(tmp + 4 * k);
    *n_out = (uint8_t)(b / 4);
    return 1;
}

static int t_vec_n(char **cur, float *v, uint8_t n)
{
    uint8_t got = 0;
    return t_vec(cur, v, &got) == 1 && got == n;
}

static void cmd_encode(char *cur)
{
    static ramp_msg_t m;
    static uint8_t out[RAMP_MAX_FRAME];
    uint8_t msg_out[RAMP_MAX_SEALED];
    size_t n, mlen, k;
    int ok = 1, rc;
    uint8_t type;
    memset(&m, 0, sizeof m);
    pool_used = 0;
    if (!t_u8(&cur, &type) || !t_u8(&cur, &m.version) || !t_u32(&cur, &m.seq) ||
        !t_uint(&cur, &m.t_us)) {
        printf("{\"event\":\"error\",\"error\":\"bad command\"}\n");
        return;
    }
    m.type = type;
    switch (type) {
    case RAMP_HELLO:
        ok = t_u32(&cur, &m.u.hello.version_min) && t_u32(&cur, &m.u.hello.version_max) &&
             t_str(&cur, &m.u.hello.host_name);
        break;
    case RAMP_INFO: {
        char *s, *p, *end;
        ok = t_u32(&cur, &m.u.info.protocol_version) && t_str(&cur, &m.u.info.firmware_version) &&
             t_str(&cur, &m.u.info.device_id) && (s = tok_next(&cur, &n)) != NULL;
        if (!ok) break;
        end = s + n;
        m.u.info.n = 0;
        for (p = s; ok && p < end && m.u.info.n < RAMP_MAX_JOINTS;) {
            char *c = p;
            while (c < end && *c != ',') c++;
            ok = str_from_hex(p, (size_t)(c - p), &m.u.info.joint_names[m.u.info.n++]);
            p = c + 1;
        }
        ok = ok && t_vec_n(&cur, m.u.info.position_min, m.u.info.n) &&
             t_vec_n(&cur, m.u.info.position_max, m.u.info.n) &&
             t_vec_n(&cur, m.u.info.velocity_max, m.u.info.n) &&
             t_u32(&cur, &m.u.info.watchdog_ms) && t_u32(&cur, &m.u.info.servo_rate_hz);
        break;
    }
    case RAMP_STATE:
        ok = t_u8(&cur, &m.u.state.mode) && t_u8(&cur, &m.u.state.fault) &&
             t_vec(&cur, m.u.state.position, &m.u.state.n) == 1 &&
             t_vec_n(&cur, m.u.state.velocity, m.u.state.n) &&
             t_vec_n(&cur, m.u.state.effort, m.u.state.n);
        break;
    case RAMP_SETPOINT: {
        int v;
        ok = t_u32(&cur, &m.u.setpoint.reach_in_us) &&
             t_vec(&cur, m.u.setpoint.position, &m.u.setpoint.n) == 1;
        if (!ok) break;
        {
            uint8_t vn = 0;
            v = t_vec(&cur, m.u.setpoint.velocity, &vn);
            ok = v == 2 || (v == 1 && vn == m.u.setpoint.n);
            m.u.setpoint.has_velocity = (uint8_t)(v == 1);
        }
        break;
    }
    case RAMP_MODE: ok = t_u8(&cur, &m.u.mode.mode); break;
    case RAMP_ESTOP: ok = t_str(&cur, &m.u.estop.reason); break;
    case RAMP_CAL_DATA:
    case RAMP_CAL_WRITE: {
        char *s;
        uint8_t signs[RAMP_MAX_JOINTS];
        long b = -1;
        ok = t_vec(&cur, m.u.cal.homing_offset, &m.u.cal.n) == 1 &&
             (s = tok_next(&cur, &n)) != NULL && n <= 2 * sizeof signs &&
             (b = parse_hex(s, n, signs)) == (long)m.u.cal.n;
        if (!ok) break;
        for (k = 0; k < m.u.cal.n; k++) m.u.cal.drive_sign[k] = (int8_t)signs[k];
        ok = t_vec_n(&cur, m.u.cal.position_min, m.u.cal.n) &&
             t_vec_n(&cur, m.u.cal.position_max, m.u.cal.n) &&
             t_str(&cur, &m.u.cal.calibration_id);
        break;
    }
    case RAMP_FAULT: ok = t_u8(&cur, &m.u.fault.code) && t_str(&cur, &m.u.fault.detail); break;
    case RAMP_ACK: ok = t_u8(&cur, &m.u.ack.status) && t_str(&cur, &m.u.ack.detail); break;
    default: break;
    }
    if (!ok) {
        printf("{\"event\":\"error\",\"error\":\"bad command\"}\n");
        return;
    }
    rc = ramp_encode_serial(&m, out, sizeof out, &n);
    if (rc == RAMP_OK) rc = ramp_encode_message(&m, msg_out, sizeof msg_out, &mlen);
    if (rc != RAMP_OK) {
        print_error(rc);
        return;
    }
    printf("{\"event\":\"encoded\",\"serial\":\"");
    print_hex(out, n);
    printf("\",\"message\":\"");
    print_hex(msg_out, mlen);
    printf("\"}\n");
}

int main(void)
{
    ramp_decoder_init(&dec);
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        ramp_frame_t frame;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (line[0] == 'R') {
            ramp_decoder_init(&dec);
            printf("{\"event\":\"reset\"}\n");
        } else if (line[0] == 'S' && len >= 2) {
            long n = parse_hex(line + 2, len - 2, bytes), i;
            for (i = 0; i < n; i++) {
                int rc = ramp_decoder_feed(&dec, bytes[i], &frame);
                if (rc == RAMP_OK) print_frame(&frame);
                else if (rc != RAMP_NEED_MORE) print_error(rc);
            }
            printf("{\"event\":\"end\",\"ok\":%s,\"frames\":%" PRIu32 ",\"crc_failures\":%" PRIu32
                   ",\"malformed\":%" PRIu32 ",\"oversize\":%" PRIu32 "}\n",
                   n < 0 ? "false" : "true", dec.frames, dec.crc_failures, dec.malformed,
                   dec.oversize);
        } else if (line[0] == 'M' && len >= 2) {
            long n = parse_hex(line + 2, len - 2, bytes);
            int rc = n < 0 ? RAMP_ERR_ARG : ramp_decode_message(bytes, (size_t)n, &frame);
            if (rc == RAMP_OK) print_frame(&frame);
            else print_error(rc);
        } else if (line[0] == 'E') {
            cmd_encode(line + 1);
        } else {
            printf("{\"event\":\"error\",\"error\":\"unknown command\"}\n");
        }
        fflush(stdout);
    }
    return 0;
}
