/* A firmware-style main loop on top of ramp_codec (host-buildable example).
 *
 * Bytes come from the serial port one at a time; each complete frame is decoded, acted on and
 * answered (docs/PROTOCOL.md section 7.3): SETPOINT -> STATE, STATE_REQUEST -> STATE,
 * HELLO -> INFO, MODE -> ACK, HEARTBEAT -> ACK OK, another header version -> ACK UNSUPPORTED,
 * unknown types -> ACK UNSUPPORTED, bad bodies -> ACK BAD_REQUEST, bad frames -> nothing.
 * Motor control, fault latching, calibration and the watchdog (sections 8 to 10) are left out.
 *
 * On the host the "UART" replays a canned byte stream (garbage, a filler 0x00, the worked
 * example's SETPOINT, a HEARTBEAT, a HELLO) and prints each reply as "reply <hex>". On a target,
 * replace uart_read_byte, uart_write and micros with the board's drivers.
 *
 *   gcc -std=c99 -Wall -Wextra -pedantic ramp_codec.c example_main.c -o example && ./example
 */
#include "ramp_codec.h"

#include <stdio.h>

#define N_JOINTS 2u

/* ---- board glue (host stand-ins) ---------------------------------------------------------- */

static const uint8_t rx_stream[] = {
    0x11, 0x22, 0x33, 0x00, /* line noise, then a delimiter: resynchronised */
    /* SETPOINT seq 42: position [0.5, -0.25] in 10 ms (PROTOCOL.md section 12) */
    0x06, 0x95, 0x01, 0x05, 0x2a, 0xce, 0x0a, 0x0f, 0x42, 0x40, 0x93, 0xcd, 0x27, 0x10, 0xc4,
    0x08, 0x01, 0x01, 0x02, 0x3f, 0x01, 0x08, 0x80, 0xbe, 0xc0, 0xd8, 0xba, 0x9f, 0xb2, 0x00,
    /* HEARTBEAT seq 1 */
    0x05, 0x95, 0x01, 0x0c, 0x01, 0x06, 0x90, 0x28, 0x49, 0x12, 0x7a, 0x00,
    /* HELLO seq 1, versions 1..1, host "ramp-edge" */
    0x1b, 0x95, 0x01, 0x01, 0x01, 0xce, 0x07, 0x5b, 0xcd, 0x15, 0x93, 0x01, 0x01, 0xa9, 0x72,
    0x61, 0x6d, 0x70, 0x2d, 0x65, 0x64, 0x67, 0x65, 0xf5, 0x14, 0xd8, 0xe5, 0x00};
static size_t rx_pos;

static int uart_read_byte(uint8_t *b)
{
    if (rx_pos >= sizeof rx_stream) {
        return 0;
    }
    *b = rx_stream[rx_pos++];
    return 1;
}

static void uart_write(const uint8_t *data, size_t len)
{
    size_t i;
    printf("reply ");
    for (i = 0; i < len; i++) {
        printf("%02x", data[i]);
    }
    printf("\n");
}

static uint64_t micros(void)
{
    static uint64_t t = 5000000u;
    return t += 1000u;
}

/* ---- device state ------------------------------------------------------------------------- */

static ramp_decoder_t rx;
static ramp_msg_t request, reply; /* static: ~1 KiB each, keep them off the stack */
static uint8_t tx[RAMP_MAX_FRAME];
static float target[N_JOINTS], measured[N_JOINTS];
static uint8_t mode = RAMP_MODE_POSITION;

static void send(ramp_msg_t *m, uint8_t type, uint32_t seq)
{
    size_t n;
    m->version = RAMP_PROTOCOL_VERSION;
    m->type = type;
    m->seq = seq;
    m->t_us = micros();
    if (type == RAMP_INFO) {
        m->version = request.version; /* INFO echoes the HELLO's header version */
    }
    if (ramp_encode_serial(m, tx, sizeof tx, &n) == RAMP_OK) {
        uart_write(tx, n);
    }
}

static void send_ack(uint32_t seq, uint8_t status, const char *detail)
{
    reply.u.ack.status = status;
    reply.u.ack.detail = ramp_str(detail);
    send(&reply, RAMP_ACK, seq);
}

static void send_state(uint32_t seq)
{
    unsigned k;
    reply.u.state.mode = mode;
    reply.u.state.fault = RAMP_FAULT_NONE;
    reply.u.state.n = N_JOINTS;
    for (k = 0; k < N_JOINTS; k++) {
        reply.u.state.position[k] = measured[k];
        reply.u.state.velocity[k] = 0.0f;
        reply.u.state.effort[k] = 0.0f;
    }
    send(&reply, RAMP_STATE, seq);
}

static void send_info(uint32_t seq)
{
    static const char *const names[N_JOINTS] = {"shoulder", "elbow"};
    unsigned k;
    reply.u.info.protocol_version = RAMP_PROTOCOL_VERSION;
    reply.u.info.firmware_version = ramp_str("example-0.1");
    reply.u.info.device_id = ramp_str("example-0");
    reply.u.info.n = N_JOINTS;
    for (k = 0; k < N_JOINTS; k++) {
        reply.u.info.joint_names[k] = ramp_str(names[k]);
        reply.u.info.position_min[k] = -3.0f;
        reply.u.info.position_max[k] = 3.0f;
        reply.u.info.velocity_max[k] = 2.0f;
    }
    reply.u.info.watchdog_ms = 100;
    reply.u.info.servo_rate_hz = 1000;
    send(&reply, RAMP_INFO, seq);
}

static void handle(const ramp_frame_t *frame)
{
    unsigned k;
    int rc = ramp_decode_body(frame, &request);
    if (frame->type != RAMP_HELLO && frame->version != RAMP_PROTOCOL_VERSION) {
        send_ack(frame->seq, RAMP_ACK_UNSUPPORTED, "protocol version mismatch");
        return;
    }
    if (rc == RAMP_ERR_UNSUPPORTED) {
        send_ack(frame->seq, RAMP_ACK_UNSUPPORTED, "unknown message type");
        return;
    }
    if (rc != RAMP_OK) {
        send_ack(frame->seq, RAMP_ACK_BAD_REQUEST, "body does not match its type");
        return;
    }
    switch (request.type) {
    case RAMP_HELLO: /* answered whatever the header version; the reply echoes it */
        send_info(frame->seq);
        break;
    case RAMP_MODE:
        if (request.u.mode.mode > RAMP_MODE_POSITION) {
            send_ack(frame->seq, RAMP_ACK_BAD_REQUEST, "mode FAULT/ESTOP cannot be requested");
        } else {
            mode = request.u.mode.mode;
            send_ack(frame->seq, RAMP_ACK_OK, mode == RAMP_MODE_POSITION ? "POSITION" : "");
        }
        break;
    case RAMP_SETPOINT:
        if (mode == RAMP_MODE_POSITION && request.u.setpoint.n == N_JOINTS) {
            for (k = 0; k < N_JOINTS; k++) {
                target[k] = request.u.setpoint.position[k];
                measured[k] = target[k]; /* stand-in for the servo loop reaching it */
            }
        }
        send_state(frame->seq); /* always answered with STATE */
        break;
    case RAMP_STATE_REQUEST:
        send_state(frame->seq);
        break;
    case RAMP_HEARTBEAT:
        send_ack(frame->seq, RAMP_ACK_OK, "");
        break;
    default:
        send_ack(frame->seq, RAMP_ACK_UNSUPPORTED, "not handled by this example");
        break;
    }
}

int main(void)
{
    uint8_t byte;
    ramp_frame_t frame;
    ramp_decoder_init(&rx);
    while (uart_read_byte(&byte)) { /* a real main loop never ends */
        if (ramp_decoder_feed(&rx, byte, &frame) == RAMP_OK) {
            handle(&frame);
        }
        /* bad frames are dropped and counted in rx.crc_failures / malformed / oversize */
    }
    printf("frames %lu crc_failures %lu malformed %lu oversize %lu\n", (unsigned long)rx.frames,
           (unsigned long)rx.crc_failures, (unsigned long)rx.malformed,
           (unsigned long)rx.oversize);
    return (rx.frames == 3u && rx.malformed == 1u) ? 0 : 1; /* the noise fails COBS */
}
