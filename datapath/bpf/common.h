//go:build ignore

/* Includes, kernel constants missing from the installed uapi headers, and
 * small helpers every other header uses. */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "event.h"

/* TCX verdicts (linux/bpf.h >= 6.6; the build host ships 6.1 uapi). */
#ifndef TCX_NEXT
#define TCX_NEXT -1
#define TCX_PASS 0
#define TCX_DROP 2
#endif

/* Counter "reason" for a packet forwarded by a hook with no endpoint entry. */
#define LOUPE_REASON_NO_ENDPOINT 0

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

static __always_inline __u8 obs_point_of(__u8 dir)
{
	return dir == LOUPE_DIR_EGRESS ? LOUPE_OBS_FROM_LXC : LOUPE_OBS_TO_LXC;
}
