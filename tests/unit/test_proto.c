/* Unit tests: wire encoding and decoding (protocol/proto.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "loopfd_proto.h"

static size_t encode(const struct lfd_msg *m, uint8_t *buf)
{
	size_t n = lfd_encode(m, buf, LFD_MAX_MSG);

	assert_true(n >= LFD_HEADER_SIZE);
	return n;
}

static void base(struct lfd_msg *m, uint16_t op)
{
	memset(m, 0, sizeof(*m));
	m->version = LFD_VERSION;
	m->op = op;
	m->seq = 0x01020304;
}

static void test_header_layout(void **state)
{
	uint8_t buf[LFD_MAX_MSG];
	struct lfd_msg m;
	size_t n;

	(void)state;
	base(&m, LFD_OP_RELEASE);
	m.u.release_req.id = 7;
	m.u.release_req.timeout_ms = 0x11223344;
	n = encode(&m, buf);
	assert_int_equal(n, LFD_HEADER_SIZE + LFD_RELEASE_REQ_SIZE);
	/* magic "LPFD", version 1, op 3, seq, body length: little-endian */
	assert_memory_equal(buf, "LPFD", 4);
	assert_int_equal(buf[4], 1);
	assert_int_equal(buf[5], 0);
	assert_int_equal(buf[6], LFD_OP_RELEASE);
	assert_int_equal(buf[8], 0x04);
	assert_int_equal(buf[11], 0x01);
	assert_int_equal(buf[12], LFD_RELEASE_REQ_SIZE);
	assert_int_equal(buf[16], 7);
	assert_int_equal(buf[20], 0x44);
	assert_int_equal(buf[23], 0x11);
}

static void roundtrip(const struct lfd_msg *in, size_t want_len)
{
	uint8_t buf[LFD_MAX_MSG];
	struct lfd_msg out;
	size_t n = encode(in, buf);

	assert_int_equal(n, want_len);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_NONE);
	assert_int_equal(out.op, in->op);
	assert_int_equal(out.seq, in->seq);
	assert_memory_equal(&out.u, &in->u, sizeof(in->u));
}

static void fill_device(struct lfd_device *d, uint32_t id)
{
	d->id = id;
	d->index = 3;
	d->major = 7;
	d->minor = 3;
	d->diskseq = 0x1122334455667788ull;
	d->size = 1ull << 40;
	d->flags = LFD_ATTACH_READ_ONLY | LFD_ATTACH_AUTOCLEAR;
	d->sector_size = 4096;
	d->offset = 1ull << 20;
	d->sizelimit = 1ull << 33;
	d->backing_dev = 0xfe00;
	d->backing_ino = UINT64_MAX;
}

static void test_roundtrip_every_op(void **state)
{
	struct lfd_msg m;
	uint32_t i;

	(void)state;
	base(&m, LFD_OP_HELLO);
	m.u.hello_req.min_version = 1;
	m.u.hello_req.max_version = 9;
	roundtrip(&m, 16 + LFD_HELLO_REQ_SIZE);

	base(&m, LFD_OP_HELLO | LFD_REPLY);
	m.u.hello_rep.version = 1;
	m.u.hello_rep.mode = LFD_MODE_LISTEN;
	m.u.hello_rep.features = 7;
	m.u.hello_rep.max_devices = 16;
	m.u.hello_rep.max_timeout_ms = LFD_MAX_TIMEOUT_MS;
	m.u.hello_rep.uid = 65534;
	m.u.hello_rep.gid = 65534;
	roundtrip(&m, 16 + LFD_HELLO_REP_SIZE);

	base(&m, LFD_OP_ATTACH);
	m.u.attach_req.flags = LFD_ATTACH_REQ_MASK;
	m.u.attach_req.sector_size = 512;
	m.u.attach_req.offset = UINT64_MAX;
	m.u.attach_req.sizelimit = 12345;
	roundtrip(&m, 16 + LFD_ATTACH_REQ_SIZE);

	base(&m, LFD_OP_ATTACH | LFD_REPLY);
	fill_device(&m.u.attach_rep, 1);
	roundtrip(&m, 16 + LFD_DEVICE_SIZE);

	base(&m, LFD_OP_RELEASE | LFD_REPLY);
	m.u.release_rep.id = 5;
	m.u.release_rep.waited_ms = 99;
	roundtrip(&m, 16 + LFD_RELEASE_REP_SIZE);

	base(&m, LFD_OP_LIST);
	roundtrip(&m, 16);

	base(&m, LFD_OP_LIST | LFD_REPLY);
	m.u.list_rep.count = LFD_MAX_DEVICES;
	for (i = 0; i < LFD_MAX_DEVICES; i++)
		fill_device(&m.u.list_rep.dev[i], i + 1);
	roundtrip(&m, 16 + LFD_LIST_HEAD_SIZE + LFD_MAX_DEVICES * LFD_DEVICE_SIZE);

	lfd_make_error(&m, 0x01020304, 0, LFD_R_QUOTA_USER, "limit %d", 16);
	roundtrip(&m, 16 + LFD_ERROR_SIZE);
	assert_int_equal(m.u.error.err, lfd_reason_errno(LFD_R_QUOTA_USER));
	assert_string_equal(m.u.error.text, "limit 16");
}

static void test_encode_refuses_invalid(void **state)
{
	uint8_t buf[LFD_MAX_MSG];
	struct lfd_msg m;

	(void)state;
	base(&m, 0x42);
	assert_int_equal(lfd_encode(&m, buf, sizeof(buf)), 0);
	base(&m, LFD_OP_LIST | LFD_REPLY);
	m.u.list_rep.count = LFD_MAX_DEVICES + 1;
	assert_int_equal(lfd_encode(&m, buf, sizeof(buf)), 0);
	base(&m, LFD_OP_ATTACH);
	assert_int_equal(lfd_encode(&m, buf, 20), 0);	/* too small */
}

static size_t sample(uint8_t *buf, uint16_t op)
{
	struct lfd_msg m;

	base(&m, op);
	return encode(&m, buf);
}

static void test_decode_refusals(void **state)
{
	uint8_t buf[LFD_MAX_MSG + 16] = { 0 };
	struct lfd_msg m;
	size_t n;

	(void)state;
	/* zero-length, short header, oversized */
	assert_int_equal(lfd_decode(buf, 0, &m), LFD_R_MALFORMED);
	n = sample(buf, LFD_OP_LIST);
	assert_int_equal(lfd_decode(buf, n - 1, &m), LFD_R_MALFORMED);
	assert_int_equal(lfd_decode(buf, LFD_MAX_MSG + 1, &m), LFD_R_MALFORMED);

	/* wrong magic */
	n = sample(buf, LFD_OP_RELEASE);
	buf[0] ^= 1;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);

	/* body length field disagrees with what arrived */
	n = sample(buf, LFD_OP_RELEASE);
	buf[12]++;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);

	/* truncated body with a consistent length field */
	n = sample(buf, LFD_OP_ATTACH);
	buf[12] = LFD_ATTACH_REQ_SIZE - 8;
	assert_int_equal(lfd_decode(buf, n - 8, &m), LFD_R_MALFORMED);

	/* extra bytes after a fixed-size body */
	n = sample(buf, LFD_OP_RELEASE);
	buf[n] = 0;
	buf[12]++;
	assert_int_equal(lfd_decode(buf, n + 1, &m), LFD_R_MALFORMED);

	/* version: echoed seq and op survive for the error reply */
	n = sample(buf, LFD_OP_RELEASE);
	buf[4] = 2;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_VERSION);
	assert_int_equal(m.seq, 0x01020304);

	/* unknown op */
	n = sample(buf, LFD_OP_LIST);
	buf[6] = 0x33;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_UNKNOWN_OP);
	assert_int_equal(m.op, 0x33);

	/* reserved fields must be zero */
	n = sample(buf, LFD_OP_HELLO);
	buf[16 + 4] = 1;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);
	n = sample(buf, LFD_OP_ATTACH);
	buf[16 + 31] = 0x80;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);
}

static void test_decode_list_count(void **state)
{
	uint8_t buf[LFD_MAX_MSG];
	struct lfd_msg m;
	size_t n;

	(void)state;
	base(&m, LFD_OP_LIST | LFD_REPLY);
	m.u.list_rep.count = 2;
	n = encode(&m, buf);
	/* count says 3, two entries present */
	buf[16] = 3;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);
	/* count over the cap */
	buf[16] = 0xff;
	buf[17] = 0xff;
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);
}

static void test_error_text_must_terminate(void **state)
{
	uint8_t buf[LFD_MAX_MSG];
	struct lfd_msg m;
	size_t n;

	(void)state;
	lfd_make_error(&m, 1, 0, LFD_R_BUSY, "x");
	n = encode(&m, buf);
	memset(buf + 16 + 8, 'A', LFD_MSG_TEXT);
	assert_int_equal(lfd_decode(buf, n, &m), LFD_R_MALFORMED);
}

static void test_fds_and_reasons(void **state)
{
	int r;

	(void)state;
	assert_int_equal(lfd_fds_for_op(LFD_OP_ATTACH), 1);
	assert_int_equal(lfd_fds_for_op(LFD_OP_ATTACH | LFD_REPLY), 1);
	assert_int_equal(lfd_fds_for_op(LFD_OP_HELLO), 0);
	assert_int_equal(lfd_fds_for_op(LFD_OP_RELEASE), 0);
	for (r = 1; r <= LFD_R_MAX; r++) {
		assert_true(lfd_reason_errno((enum lfd_reason)r) > 0);
		assert_non_null(lfd_reason_name((enum lfd_reason)r));
	}
	assert_string_equal(lfd_reason_name((enum lfd_reason)999), "unknown reason");
}

/* ---- batch ops ---------------------------------------------------------- */

static size_t encode_big(const struct lfd_msg *m, uint8_t *buf)
{
	size_t n = lfd_encode(m, buf, LFD_MAX_REPLY);

	assert_true(n >= LFD_HEADER_SIZE);
	return n;
}

static void test_attach_batch_layout(void **state)
{
	uint8_t buf[LFD_MAX_REPLY];
	struct lfd_msg m, out;
	size_t n;

	(void)state;
	base(&m, LFD_OP_ATTACH_BATCH);
	m.u.attach_batch_req.count = 2;
	m.u.attach_batch_req.e[1].flags = LFD_ATTACH_READ_ONLY;
	m.u.attach_batch_req.e[1].sector_size = 4096;
	m.u.attach_batch_req.e[1].offset = 0x0102030405060708ull;
	n = encode_big(&m, buf);
	assert_int_equal(n, LFD_HEADER_SIZE + LFD_BATCH_HEAD_SIZE +
			 2 * LFD_ATTACH_REQ_SIZE);
	assert_int_equal(buf[6], LFD_OP_ATTACH_BATCH);
	assert_int_equal(buf[16], 2);			/* count */
	assert_int_equal(buf[20], 0);			/* reserved */
	assert_int_equal(buf[24 + 32], LFD_ATTACH_READ_ONLY);
	assert_int_equal(buf[24 + 32 + 5], 0x10);	/* 4096 */
	assert_int_equal(buf[24 + 32 + 8], 0x08);	/* offset, little-endian */
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_NONE);
	assert_int_equal(out.u.attach_batch_req.count, 2);
	assert_int_equal(out.u.attach_batch_req.e[1].offset, 0x0102030405060708ull);
	assert_int_equal(lfd_fds_for_msg(&out), 2);
	assert_int_equal(lfd_fds_for_op(LFD_OP_ATTACH_BATCH), -1);

	base(&m, LFD_OP_ATTACH_BATCH | LFD_REPLY);
	m.u.attach_batch_rep.count = LFD_MAX_BATCH;
	m.u.attach_batch_rep.dev[63].id = 99;
	n = encode_big(&m, buf);
	assert_int_equal(n, 16 + 8 + 64 * LFD_DEVICE_SIZE);
	assert_true(n <= LFD_MAX_MSG);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_NONE);
	assert_int_equal(out.u.attach_batch_rep.dev[63].id, 99);
	assert_int_equal(lfd_fds_for_msg(&out), 64);
}

static void test_release_batch_layout(void **state)
{
	uint8_t buf[LFD_MAX_REPLY];
	struct lfd_msg m, out;
	size_t n;

	(void)state;
	base(&m, LFD_OP_RELEASE_BATCH);
	m.u.release_batch_req.count = 3;
	m.u.release_batch_req.timeout_ms = 0x11223344;
	m.u.release_batch_req.id[2] = 0x55;
	n = encode_big(&m, buf);
	assert_int_equal(n, 16 + 8 + 3 * 4);
	assert_int_equal(buf[20], 0x44);		/* timeout, not reserved */
	assert_int_equal(buf[24 + 8], 0x55);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_NONE);
	assert_int_equal(out.u.release_batch_req.timeout_ms, 0x11223344);
	assert_int_equal(lfd_fds_for_msg(&out), 0);

	/* The largest reply there is: 64 outcomes of 256 bytes. */
	base(&m, LFD_OP_RELEASE_BATCH | LFD_REPLY);
	m.u.release_batch_rep.count = LFD_MAX_BATCH;
	m.u.release_batch_rep.out[5].reason = LFD_R_BUSY;
	m.u.release_batch_rep.out[5].err = 16;
	strcpy(m.u.release_batch_rep.out[5].text, "busy");
	n = encode_big(&m, buf);
	assert_int_equal(n, LFD_MAX_REPLY);
	assert_int_equal(buf[24 + 5 * 256 + 4], LFD_R_BUSY);
	assert_memory_equal(buf + 24 + 5 * 256 + 16, "busy", 5);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_NONE);
	assert_string_equal(out.u.release_batch_rep.out[5].text, "busy");
	assert_int_equal(out.u.release_batch_rep.out[5].err, 16);
	/* An outcome text without its NUL is refused. */
	memset(buf + 24 + 7 * 256 + 16, 'x', LFD_MSG_TEXT);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	/* Too big for anything but this reply. */
	assert_int_equal(lfd_decode(buf, LFD_MAX_REPLY + 1, &out), LFD_R_MALFORMED);
}

/* Rewrite the count (and body length) of an encoded batch. */
static void set_count(uint8_t *buf, uint32_t count)
{
	buf[16] = (uint8_t)count;
	buf[17] = (uint8_t)(count >> 8);
	buf[18] = (uint8_t)(count >> 16);
	buf[19] = (uint8_t)(count >> 24);
}

static void test_batch_refusals(void **state)
{
	uint8_t buf[LFD_MAX_REPLY];
	struct lfd_msg m, out;
	size_t n;

	(void)state;
	/* count 0 and count over the bound encode nothing */
	base(&m, LFD_OP_ATTACH_BATCH);
	assert_int_equal(lfd_encode(&m, buf, sizeof(buf)), 0);
	m.u.attach_batch_req.count = LFD_MAX_BATCH + 1;
	assert_int_equal(lfd_encode(&m, buf, sizeof(buf)), 0);
	base(&m, LFD_OP_RELEASE_BATCH | LFD_REPLY);
	assert_int_equal(lfd_encode(&m, buf, sizeof(buf)), 0);

	/* N = 0 with a body that agrees (no entries): still refused */
	base(&m, LFD_OP_RELEASE_BATCH);
	m.u.release_batch_req.count = 1;
	n = encode_big(&m, buf);
	set_count(buf, 0);
	buf[12] = LFD_BATCH_HEAD_SIZE;
	assert_int_equal(lfd_decode(buf, n - 4, &out), LFD_R_MALFORMED);

	base(&m, LFD_OP_ATTACH_BATCH);
	m.u.attach_batch_req.count = 2;
	n = encode_big(&m, buf);
	set_count(buf, 0);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	set_count(buf, 3);			/* more than the body holds */
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	set_count(buf, 1);			/* fewer */
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	set_count(buf, 0x80000002u);		/* overflow attempts */
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	set_count(buf, 2);
	buf[20] = 1;				/* reserved */
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	buf[20] = 0;
	buf[24 + 32 + 24] = 1;			/* entry 1's reserved */
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	buf[24 + 32 + 24] = 0;
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_NONE);
	assert_int_equal(lfd_decode(buf, n - 1, &out), LFD_R_MALFORMED);
	assert_int_equal(lfd_decode(buf, 20, &out), LFD_R_MALFORMED);

	/* 65 ids: more than the bound even when the bytes agree */
	base(&m, LFD_OP_RELEASE_BATCH);
	m.u.release_batch_req.count = LFD_MAX_BATCH;
	n = encode_big(&m, buf);
	set_count(buf, LFD_MAX_BATCH + 1);
	memset(buf + n, 0, 4);
	n += 4;
	buf[12] = (uint8_t)(n - 16);
	buf[13] = (uint8_t)((n - 16) >> 8);
	assert_int_equal(lfd_decode(buf, n, &out), LFD_R_MALFORMED);
	/* A request may not use the reply's size allowance. */
	base(&m, LFD_OP_LIST);
	n = encode(&m, buf);
	assert_int_equal(lfd_decode(buf, LFD_MAX_MSG + 8, &out), LFD_R_MALFORMED);
	/* Encoding one byte short fails. */
	base(&m, LFD_OP_RELEASE_BATCH | LFD_REPLY);
	m.u.release_batch_rep.count = 2;
	assert_int_equal(lfd_encode(&m, buf, 16 + 8 + 2 * 256 - 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_layout),
		cmocka_unit_test(test_roundtrip_every_op),
		cmocka_unit_test(test_encode_refuses_invalid),
		cmocka_unit_test(test_decode_refusals),
		cmocka_unit_test(test_decode_list_count),
		cmocka_unit_test(test_error_text_must_terminate),
		cmocka_unit_test(test_fds_and_reasons),
		cmocka_unit_test(test_attach_batch_layout),
		cmocka_unit_test(test_release_batch_layout),
		cmocka_unit_test(test_batch_refusals),
	};

	return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
