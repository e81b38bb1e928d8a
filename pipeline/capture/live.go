package capture

import (
	"errors"
	"time"
)

// The live-capture types shared by live_linux.go and live_other.go.

// AnyInterface captures on every interface at once, as `tcpdump -i any`
// does: on a gateway, the LAN side is what comes out (see NewReader).
const AnyInterface = "any"

// LiveOptions tunes OpenLive. The zero value is a usable configuration.
type LiveOptions struct {
	// SnapLen is the most bytes kept of each packet; 0 means 262144, what
	// libpcap keeps. The features read the headers and the first dozen
	// payload bytes, so 256 keeps every feature for a gateway short of
	// memory.
	SnapLen int
	// Promiscuous also captures unicast frames for other hosts, which on a
	// switched port only matters for a mirror port or a bridge member.
	Promiscuous bool
	// BufferBytes is the kernel buffer that absorbs bursts while the reader
	// is busy; 0 means 4 MiB. The ring takes at least two blocks, each
	// holding at least one packet of SnapLen bytes, whatever is asked.
	BufferBytes int
	// PollTimeout is the longest a packet waits in a partly filled ring
	// block before Next sees it (the kernel hands blocks over when full or
	// when this expires); 0 means 50ms. It adds latency, never loses
	// packets, and does not affect timestamps, which the kernel takes on
	// arrival. The recvmsg fallback delivers each packet at once and ignores
	// it.
	PollTimeout time.Duration
	// Side is the side of the gateway an every-interface capture
	// (AnyInterface) is read as: SideLAN (the zero value too) or SideWAN.
	// Other interfaces are read as they are.
	Side Side

	// noRing makes OpenLive take the recvmsg path, so tests cover it on
	// kernels where the ring works.
	noRing bool
}

// LiveStats counts a live capture's packets since it was opened.
type LiveStats struct {
	// Delivered is how many frames Next returned.
	Delivered uint64
	// Received is how many packets the kernel passed to the capture,
	// including those it then dropped.
	Received uint64
	// Dropped is how many packets the kernel discarded because the ring or
	// socket buffer was full: raise LiveOptions.BufferBytes, lower SnapLen,
	// or read faster.
	Dropped uint64
	// RingFull is how many times the ring filled up (TPACKET_V3 only).
	RingFull uint64
}

// ErrNoInterface is wrapped by the errors of a capture whose interface does
// not exist, at open or because it was removed while capturing: an agent that
// waits for the interface (a PPP link that comes up later) retries on it.
var ErrNoInterface = errors.New("no such network interface")
