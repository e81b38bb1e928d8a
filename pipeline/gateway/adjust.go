package gateway

// AdjustChecksum updates an Internet checksum for the equal-length,
// even-length bytes old becoming new (RFC 1624). Other rewriters of captured
// packets (home assembly moves devices to new addresses) use it so that a
// payload the snap length cut still carries a right transport checksum.
func AdjustChecksum(sum uint16, old, new []byte) uint16 { return adjustBytes(sum, old, new) }

// Checksum is the Internet checksum of b over an initial partial sum (a
// pseudo-header's), for rewriters that build a header anew.
func Checksum(b []byte, initial uint32) uint16 { return checksum(b, initial) }
