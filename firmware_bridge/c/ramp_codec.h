/*
 * ramp_codec: firmware-side codec of the ramp-edge motor-controller protocol, version 1.
 *
 * docs/PROTOCOL.md is the normative description; firmware_bridge/codec.py and
 * firmware_bridge/messages.py are the Python reference; tests/vectors/frames.json holds the
 * golden frames this code is tested against (tests/test_c_codec.py).
 *
 * Portable C99: no malloc, no floating-point printf, no recursion, fixed buffers sized from
 * the spec's MAX constants. Joint vectors are little-endian IEEE-754 float32 on the wire and
 * are converted with explicit byte order (works on big- and little-endian CPUs).
 *
 * Strings (ramp_str_t) are views: after decoding they point into the buffer the frame was
 * decoded from (the decoder's buffer or the caller's message), valid until that buffer is
 * reused (the next ramp_decoder_feed call). They are not NUL-terminated.
 */
#ifndef RAMP_CODEC_H
#define RAMP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits (docs/PROTOCOL.md section 2.1). */
#define RAMP_PROTOCOL_VERSION 1u
#define RAMP_MAX_PAYLOAD 2048u
#define RAMP_CRC_BYTES 4u
#define RAMP_MAX_SEALED (RAMP_MAX_PAYLOAD + RAMP_CRC_BYTES)                 /* 2052 */
#define RAMP_MAX_ENCODED (RAMP_MAX_SEALED + RAMP_MAX_SEALED / 254u + 1u)     /* 2061 */
#define RAMP_MAX_FRAME (RAMP_MAX_ENCODED + 1u) /* serial frame with its 0x00 delimiter */
#define RAMP_MAX_JOINTS 32u
/* Nesting depth the payload validator follows (version-1 bodies nest 2 deep). */
#define RAMP_MAX_DEPTH 16u
/* Staging room ramp_encode_serial needs in front of the sealed payload: 2052 / 254 + 1. */
#define RAMP_COBS_SLACK (RAMP_MAX_SEALED / 254u + 1u)

/* Result codes. Each error maps to one class of the Python reference (firmware_bridge/errors.py). */
typedef enum {
    RAMP_OK = 0,             /* a frame / message is ready */
    RAMP_NEED_MORE = 1,      /* streaming decoder: no complete frame yet (not an error) */
    RAMP_ERR_FRAME = -1,     /* bad COBS encoding                    -> FrameError */
    RAMP_ERR_CRC = -2,       /* CRC mismatch, or 4 bytes or fewer    -> CrcError */
    RAMP_ERR_TOO_LONG = -3,  /* longer than MAX_ENCODED / MAX_SEALED -> FrameTooLongError */
    RAMP_ERR_MALFORMED = -4, /* payload breaks section 3             -> MalformedFrameError */
    RAMP_ERR_UNSUPPORTED = -5, /* valid frame, type not assigned     -> ProtocolError (ACK UNSUPPORTED) */
    RAMP_ERR_BAD_BODY = -6,  /* valid frame, body breaks section 6   -> ProtocolError (ACK BAD_REQUEST) */
    RAMP_ERR_ARG = -7,       /* encoder: bad argument (range, n, invalid UTF-8) */
    RAMP_ERR_BUFFER = -8     /* encoder: output buffer too small */
} ramp_status_t;

typedef enum {
    RAMP_HELLO = 0x01, RAMP_INFO = 0x02, RAMP_STATE_REQUEST = 0x03, RAMP_STATE = 0x04,
    RAMP_SETPOINT = 0x05, RAMP_MODE = 0x06, RAMP_ESTOP = 0x07, RAMP_CLEAR_FAULT = 0x08,
    RAMP_CAL_READ = 0x09, RAMP_CAL_DATA = 0x0A, RAMP_CAL_WRITE = 0x0B, RAMP_HEARTBEAT = 0x0C,
    RAMP_FAULT = 0x0D, RAMP_ACK = 0x0E
} ramp_type_t;

enum { RAMP_MODE_TORQUE_OFF = 0, RAMP_MODE_HOLD = 1, RAMP_MODE_POSITION = 2,
       RAMP_MODE_FAULT = 3, RAMP_MODE_ESTOP = 4 };
enum { RAMP_FAULT_NONE = 0, RAMP_FAULT_WATCHDOG = 1, RAMP_FAULT_JOINT_LIMIT = 2,
       RAMP_FAULT_ESTOP = 3, RAMP_FAULT_BAD_SETPOINT = 4, RAMP_FAULT_STALL = 5,
       RAMP_FAULT_INTERNAL = 6 };
enum { RAMP_ACK_OK = 0, RAMP_ACK_REJECTED = 1, RAMP_ACK_BAD_REQUEST = 2,
       RAMP_ACK_UNSUPPORTED = 3 };

typedef struct {
    const char *ptr; /* UTF-8 bytes, not NUL-terminated; may be NULL when len is 0 */
    uint16_t len;
} ramp_str_t;

/* A frame whose header is valid (codec level): body is the msgpack array, not yet interpreted. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint32_t seq;
    uint64_t t_us;
    const uint8_t *body; /* msgpack bytes of the body array, inside the decoded buffer */
    uint16_t body_len;
} ramp_frame_t;

typedef struct {
    uint8_t version; /* header fields */
    uint8_t type;    /* ramp_type_t */
    uint32_t seq;
    uint64_t t_us;
    union {
        struct { uint32_t version_min, version_max; ramp_str_t host_name; } hello;
        struct {
            uint32_t protocol_version;
            ramp_str_t firmware_version, device_id;
            uint8_t n;
            ramp_str_t joint_names[RAMP_MAX_JOINTS];
            float position_min[RAMP_MAX_JOINTS], position_max[RAMP_MAX_JOINTS];
            float velocity_max[RAMP_MAX_JOINTS];
            uint32_t watchdog_ms, servo_rate_hz;
        } info;
        struct {
            uint8_t mode, fault, n;
            float position[RAMP_MAX_JOINTS], velocity[RAMP_MAX_JOINTS], effort[RAMP_MAX_JOINTS];
        } state;
        struct {
            uint32_t reach_in_us;
            uint8_t n, has_velocity; /* has_velocity 0: velocity is nil */
            float position[RAMP_MAX_JOINTS], velocity[RAMP_MAX_JOINTS];
        } setpoint;
        struct { uint8_t mode; } mode;
        struct { ramp_str_t reason; } estop;
        struct { /* CAL_DATA and CAL_WRITE */
            uint8_t n;
            float homing_offset[RAMP_MAX_JOINTS];
            int8_t drive_sign[RAMP_MAX_JOINTS];
            float position_min[RAMP_MAX_JOINTS], position_max[RAMP_MAX_JOINTS];
            ramp_str_t calibration_id;
        } cal;
        struct { uint8_t code; ramp_str_t detail; } fault;
        struct { uint8_t status; ramp_str_t detail; } ack;
    } u;
} ramp_msg_t;

/* Streaming receiver for a serial link: feed it every byte as it arrives. */
typedef struct {
    uint8_t buf[RAMP_MAX_ENCODED]; /* COBS bytes of the frame in progress; decoded in place */
    uint16_t len;
    uint32_t frames, crc_failures, malformed, oversize;
} ramp_decoder_t;

/* CRC-32/ISO-HDLC (zlib.crc32). Start with crc = 0 and chain calls. */
uint32_t ramp_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* COBS without the delimiter. encode: out may not overlap in; returns RAMP_ERR_BUFFER if cap is
 * too small. decode: out may equal in (in-place); out needs len bytes. */
int ramp_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);
int ramp_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t *out_len);

/* Codec level (section 3): parse a payload (CRC already checked) / a sealed payload (ZeroMQ). */
int ramp_decode_payload(const uint8_t *payload, size_t len, ramp_frame_t *frame);
int ramp_decode_message(const uint8_t *sealed, size_t len, ramp_frame_t *frame);

void ramp_decoder_init(ramp_decoder_t *dec);
void ramp_decoder_reset(ramp_decoder_t *dec); /* drop a partial frame, keep the counters */
/* RAMP_NEED_MORE, RAMP_OK (frame valid until the next call), or the error that dropped the
 * frame just completed (already counted in crc_failures / malformed / oversize). */
int ramp_decoder_feed(ramp_decoder_t *dec, uint8_t byte, ramp_frame_t *frame);

/* Message level (section 6): RAMP_OK, RAMP_ERR_UNSUPPORTED or RAMP_ERR_BAD_BODY. */
int ramp_decode_body(const ramp_frame_t *frame, ramp_msg_t *msg);

/* Encoders. payload: msgpack only; message: sealed payload (ZeroMQ); serial: COBS + 0x00.
 * ramp_encode_serial needs cap >= sealed length + RAMP_COBS_SLACK + 1 (RAMP_MAX_FRAME always
 * suffices); it stages the sealed payload in out and COBS-encodes it in place. */
int ramp_encode_payload(const ramp_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len);
int ramp_encode_message(const ramp_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len);
int ramp_encode_serial(const ramp_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len);

/* Explicit little-endian float32 conversion (IEEE-754 binary32 assumed and checked). */
float ramp_f32_from_le(const uint8_t *b);
void ramp_f32_to_le(float f, uint8_t *b);

ramp_str_t ramp_str(const char *nul_terminated);

#ifdef __cplusplus
}
#endif
#endif /* RAMP_CODEC_H */
