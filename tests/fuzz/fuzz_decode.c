/*
 * libFuzzer over lfd_decode, the first code that reads a peer's bytes.
 *
 * Every input must be decoded or refused with one of the three reasons
 * lfd_decode may give, without reading past the input (ASan).  Every input
 * that decodes must be exactly what lfd_encode makes of the result, byte
 * for byte (every message has one exact size and reserved fields are
 * zero, so the format leaves no freedom), and decoding that again must give
 * the same message: the two halves of proto.c agree on the format.
 * Encoding into a buffer one byte short must fail, not overflow.
 *
 *   make fuzz FUZZ_SECONDS=N      make fuzz-smoke (corpus replay + a short run)
 */
#include "loopfd_proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_decode: %s\n", what);
		abort();
	}
}

/* The helpers on reasons take any value a peer may send. */
static void exercise_reason(uint32_t r)
{
	const char *name = lfd_reason_name((enum lfd_reason)r);

	check(name != NULL && name[0] != '\0', "reason without a name");
	check(lfd_reason_errno((enum lfd_reason)r) > 0 || r == LFD_R_NONE,
	      "reason without an errno");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct lfd_msg m, again;
	static uint8_t buf[LFD_MAX_REPLY];
	enum lfd_reason r;
	uint8_t *short_buf;
	size_t n;
	int fds;

	r = lfd_decode(data, size, &m);
	exercise_reason(r);
	fds = lfd_fds_for_msg(&m);
	check(fds >= 0 && fds <= LFD_MAX_BATCH,
	      "fd count out of range");
	if (r != LFD_R_NONE) {
		check(r == LFD_R_MALFORMED || r == LFD_R_VERSION || r == LFD_R_UNKNOWN_OP,
		      "decode refused with a reason it may not give");
		return 0;
	}
	if (m.op == LFD_OP_ERROR)
		exercise_reason(m.u.error.reason);

	n = lfd_encode(&m, buf, sizeof(buf));
	check(n == size, "re-encoded message has another size");
	check(memcmp(buf, data, size) == 0, "re-encoded message differs");
	check(lfd_decode(buf, n, &again) == LFD_R_NONE, "re-encoded message does not decode");
	/* lfd_decode zeroes the whole struct first: padding compares too. */
	check(memcmp(&m, &again, sizeof(m)) == 0, "decode(encode(m)) != m");

	/* Exactly n bytes are needed: one fewer must be refused (ASan
	 * catches a write past the heap block). */
	short_buf = malloc(n - 1);
	check(short_buf != NULL, "out of memory");
	check(lfd_encode(&m, short_buf, n - 1) == 0, "encoded into a buffer too small");
	free(short_buf);
	return 0;
}
