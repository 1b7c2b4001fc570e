// Package history is an agent's on-disk flow history: the flows of its ring
// kept for hours after the ring has overwritten them, bounded by age and by
// size.
//
// It stores records, not flows: each record is the protobuf wire bytes of a
// flow.Flow or a flow.LostEvent, with its time and its sequence number in the
// ring of the agent run that wrote it. Fields added to flows later (byte
// counts, L7) are stored without a change here.
//
// # Layout
//
// The store is one folder (mode 0700) of segment files (mode 0600) named
// NNNNNNNNNNNNNNNNNNNN.seg, numbered in the order they were started. A segment
// is an 8-byte magic, "LOUPEH1\n", then blocks. One block is one batch the
// writer flushed with one write(2):
//
//	offset size  field
//	0      4     magic 0x4b4c4250 ("PBLK" little-endian)
//	4      4     CRC-32C of bytes 8..47 and of the payload
//	8      4     payload length (compressed)
//	12     4     raw length (uncompressed), at most MaxBlockRaw
//	16     4     record count
//	20     4     flags: 1 = payload is zstd, 2 = payload is S2 (blocks
//	             of more than 2,000 records per second of their span:
//	             cheaper to write under a flood), 0 = not compressed
//	24     8     min record time, unix ns
//	32     8     max record time, unix ns
//	40     8     run: a random id of the agent run that wrote it
//	48     ...   payload
//
// The raw payload is records one after another:
//
//	kind u8 (1 flow, 2 lost event) | seq uvarint | time-min uvarint | len uvarint | bytes
//
// The block headers are the time index: the store keeps them in memory
// (about 60 bytes a block) and a query reads only the blocks whose time
// span meets its range.
//
// # Crashes
//
// A crash loses at most the batch the writer had not yet written. When the
// store opens, it checks every block of the newest segment (header, bounds,
// CRC, decompression) and cuts the file at the end of the last good block;
// older segments get the structural check only, and a block that fails its
// CRC when read ends that segment's reading. Each run writes new segments,
// so a torn tail is never appended to.
//
// # Retention
//
// After every block, segments that end before now-Retention are removed,
// then the oldest until the total is within MaxBytes. A segment is at most
// MaxBytes/8, so the bound holds within one segment. What was removed is
// remembered in expired.json (time span and record count per segment, the
// newest 1024), so a query reaching past the retention can say how much it
// cannot return.
package history
