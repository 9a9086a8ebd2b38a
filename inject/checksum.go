package inject

import "encoding/binary"

// The Internet checksum (RFC 1071) is the one's complement of the one's
// complement sum of 16-bit words. The sum is accumulated in 64 bits, 32 bits
// at a time, which is equivalent (end-around carries commute) and folded to
// 16 bits only at the end; nothing here allocates.

// checksumAdd adds b (an even offset into the packet) to the running sum s.
// An odd trailing byte is padded with zero, as RFC 1071 prescribes, so only
// the last chunk of a message may have odd length.
func checksumAdd(s uint64, b []byte) uint64 {
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

// checksumFinish folds s to 16 bits and complements it: the value to store
// in a checksum field.
func checksumFinish(s uint64) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
