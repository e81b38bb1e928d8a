package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/gopacket"
	"golang.org/x/sys/unix"

	"github.com/homemole/homemole/pipeline/features"
)

// Live capture reads an AF_PACKET socket without cgo, so that the agent
// cross-compiles for the gateways' CPUs with CGO_ENABLED=0.
//
// The socket fills a TPACKET_V3 memory-mapped ring: the kernel packs many
// packets into one block and wakes the reader once per block instead of once
// per packet, which is what keeps a small gateway CPU ahead of the link. When
// the ring cannot be set up (a kernel older than 3.2, or the memory for it
// refused) the capture reads one packet per recvmsg instead; Mechanism says
// which one is in use.
//
// A blocked Next waits in poll(2) on the socket and on an eventfd; Close
// writes the eventfd, so Next returns io.EOF at once rather than after some
// timeout.

const (
	defaultLiveBuffer      = 4 << 20
	defaultLivePollTimeout = 50 * time.Millisecond
	// A block smaller than this hands the reader too few packets per wake-up
	// to be worth the ring.
	minRingBlock = 128 << 10
	// Room in a block for its descriptor, the per-packet tpacket3_hdr and
	// sockaddr_ll, and the alignment the kernel puts between them.
	ringBlockOverhead = 512
	// While the interface is down nothing arrives to wake Next, so it looks
	// this often whether the interface was removed.
	downRecheck = time.Second
	vlanTagLen  = 4

	// Fields of tpacket_block_desc (its tpacket_hdr_v1 starts at byte 8)
	// and of tpacket3_hdr, by byte offset.
	blkStatus     = 8
	blkNumPkts    = 12
	blkFirstPkt   = 16
	pktNextOffset = 0
	pktSec        = 4
	pktNsec       = 8
	pktSnaplen    = 12
	pktLen        = 16
	pktStatus     = 20
	pktMac        = 24
	pktVlanTCI    = 32
	pktVlanTPID   = 36
	pktHdrLen     = unix.SizeofTpacket3Hdr
	sizeofAuxdata = int(unsafe.Sizeof(unix.TpacketAuxdata{}))

	// cBPF ancillary load of skb->pkt_type (linux/filter.h, absent from x/sys).
	skfAdOff     = 0xfffff000 // -0x1000 as the uint32 the instruction holds
	skfAdPkttype = 4
)

// LiveSource is the Source OpenLive returns; assert to it for Stats and
// Mechanism. Next and Close follow Source; Close and Stats may be called from
// any goroutine.
type LiveSource struct {
	iface    string
	ifindex  int
	loopback bool
	// every: every interface at once (AnyInterface): the socket is cooked
	// (SOCK_DGRAM) and each frame gets the SLL2 header tcpdump -i any
	// writes, from the kernel's address of it.
	every   bool
	link    features.LinkType
	snapLen int

	// mu is held by Next for as long as it runs, so that Close does not unmap
	// the ring or close the socket under it.
	mu     sync.Mutex
	fd     int
	efd    int // eventfd written by Close to wake a blocked Next
	closed atomic.Bool
	once   sync.Once
	err    error // sticky: after the interface is gone every Next fails
	down   bool  // the kernel reported ENETDOWN and no packet has come since
	buf    []byte
	oob    []byte
	n      uint64
	amsdu  amsduSplit // a monitor interface's aggregates, given a subframe at a time

	// The ring: nil in recvmsg mode.
	ring      []byte
	blockSize int
	blocks    int
	blk       int    // the block being read
	blkPkt    uint32 // packets of that block already read
	blkOff    int    // offset in that block of its next packet

	mechanism string
	// bufferNote says when the receive buffer was cut to rmem_max.
	bufferNote string

	// statsMu orders Stats against Close: the kernel counters reset on every
	// read, so they are accumulated here, and read no more once fd is closed.
	statsMu   sync.Mutex
	stats     LiveStats
	delivered atomic.Uint64
	fdClosed  bool
}

// OpenLive captures on the network interface iface, in both directions. It
// needs root or CAP_NET_RAW. The interface may be down: packets come once it
// is up. The frames' link type follows the interface's hardware type:
// Ethernet for Ethernet, Wi-Fi and bridge devices and for loopback (whose
// frames carry zero MACs; each loopback packet is delivered once, not once
// per direction), raw IP for tun, WireGuard, IP tunnels, PPP and raw-IP modem
// devices.
//
// Frame.Data is a copy, valid until the next Next: the ring block it came from
// is already back with the kernel, and Close can unmap the ring while the
// caller still decodes the last frame. VLAN tags, which the kernel takes off
// before any capture sees the frame, are put back as libpcap does, so frames
// read as they were on the wire. Frame.CI.InterfaceIndex is 0, the source's
// only interface.
//
// iface AnyInterface ("any") captures every interface at once, as tcpdump
// -i any does, and returns the gateway's LAN side of it (or the side
// opts.Side names): Ethernet frames, each once (see NewReader);
// promiscuous mode is then refused. "nflog:N" (and "nflog", group 0) is
// netfilter's log group N, as tcpdump names it: the packets iptables or
// nftables NFLOG rules log to it, read as the frames they logged (see
// nflog_linux.go).
//
// Where the NIC or driver merges packets (GRO, LRO), captures see the merged
// packet, longer than the MTU, as tcpdump does; for per-packet lengths turn
// that off with `ethtool -K IFACE gro off lro off`.
func OpenLive(iface string, opts LiveOptions) (Source, error) {
	snapLen := opts.SnapLen
	switch {
	case snapLen == 0:
		snapLen = maxFrameLen
	case snapLen < 0 || snapLen > maxFrameLen:
		return nil, fmt.Errorf("live capture on %s: SnapLen %d is outside 1..%d: set LiveOptions.SnapLen in that range or 0 for %d", iface, snapLen, maxFrameLen, maxFrameLen)
	}
	buffer := opts.BufferBytes
	switch {
	case buffer == 0:
		buffer = defaultLiveBuffer
	case buffer < 0:
		return nil, fmt.Errorf("live capture on %s: BufferBytes %d is negative: set LiveOptions.BufferBytes to a size or 0 for %d", iface, buffer, defaultLiveBuffer)
	}
	timeout := opts.PollTimeout
	switch {
	case timeout == 0:
		timeout = defaultLivePollTimeout
	case timeout < time.Millisecond || timeout > time.Duration(1<<31)*time.Millisecond:
		return nil, fmt.Errorf("live capture on %s: PollTimeout %v is outside 1ms..24 days: set LiveOptions.PollTimeout in that range or 0 for %v", iface, timeout, defaultLivePollTimeout)
	}

	switch group, ok, err := nflogGroup(iface); {
	case err != nil:
		return nil, err
	case ok && opts.Promiscuous:
		return nil, fmt.Errorf("live capture on %s: promiscuous mode is an interface's, and %s is netfilter's log: capture on the interface to make promiscuous", iface, iface)
	case ok:
		return openNFLOG(iface, group, snapLen, buffer)
	}

	var ifindex int
	var loopback bool
	link := features.LinkTypeLinuxSLL2
	if opts.Side != 0 && opts.Side != SideLAN && opts.Side != SideWAN {
		return nil, fmt.Errorf("live capture on %s: LiveOptions.Side %v: want the LAN or the WAN side (OpenLiveSides reads both)", iface, opts.Side)
	}
	if iface == AnyInterface {
		if opts.Promiscuous {
			return nil, fmt.Errorf("live capture on %s: promiscuous mode is set per interface, and %s is every interface: capture on the interface to make promiscuous", iface, iface)
		}
	} else {
		var hwType uint16
		var err error
		if ifindex, hwType, loopback, err = lookupInterface(iface); err != nil {
			return nil, err
		}
		if link, err = liveLinkType(hwType, loopback); err != nil {
			return nil, fmt.Errorf("live capture on %s: %w", iface, err)
		}
	}

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("live capture on %s: create the eventfd that lets Close wake Next: %w", iface, err)
	}
	s := &LiveSource{iface: iface, ifindex: ifindex, loopback: loopback, every: iface == AnyInterface, link: link, snapLen: snapLen, fd: -1, efd: efd}
	s.buf = make([]byte, sll2Len+snapLen+vlanTagLen)

	var ringErr error
	if opts.noRing {
		ringErr = errors.New("disabled by the caller")
	} else {
		ringErr = s.openRing(buffer, timeout)
	}
	if ringErr != nil {
		var perm permissionError
		if errors.As(ringErr, &perm) {
			unix.Close(efd)
			return nil, perm.error
		}
		if err := s.openRecv(buffer); err != nil {
			unix.Close(efd)
			return nil, err
		}
		s.mechanism = fmt.Sprintf("recvmsg, one packet per system call (ring not used: %v)%s", ringErr, s.bufferNote)
	}

	if err := s.bind(opts.Promiscuous); err != nil {
		s.release()
		return nil, err
	}
	if s.every {
		// A gateway's every interface: read as its LAN side (cookedView).
		return &liveCooked{cookedView: newCookedView(s, opts.Side), live: s}, nil
	}
	return s, nil
}

// permissionError marks a failure that a retry in another mode cannot fix.
type permissionError struct{ error }

func (e permissionError) Unwrap() error { return e.error }

// lookupInterface asks the kernel, through an unprivileged socket, for the
// interface's index, hardware type and flags, so that a misspelt name is
// reported as such even without the privilege to capture. The socket is made
// on the calling thread, hence in its network namespace.
func lookupInterface(iface string) (ifindex int, hwType uint16, loopback bool, err error) {
	notFound := func() error {
		return fmt.Errorf("live capture: interface %s not found (%w): list them with `ip link`", iface, ErrNoInterface)
	}
	ifr, err := unix.NewIfreq(iface)
	if err != nil || iface == "" {
		return 0, 0, false, notFound()
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, 0, false, fmt.Errorf("live capture on %s: open a socket to look the interface up: %w", iface, err)
	}
	defer unix.Close(fd)
	ioctl := func(req uint, what string) error {
		err := unix.IoctlIfreq(fd, req, ifr)
		if errors.Is(err, unix.ENODEV) {
			return notFound()
		}
		if err != nil {
			return fmt.Errorf("live capture on %s: read the interface's %s: %w", iface, what, err)
		}
		return nil
	}
	if err := ioctl(unix.SIOCGIFINDEX, "index"); err != nil {
		return 0, 0, false, err
	}
	ifindex = int(int32(ifr.Uint32()))
	if err := ioctl(unix.SIOCGIFFLAGS, "flags"); err != nil {
		return 0, 0, false, err
	}
	loopback = ifr.Uint16()&unix.IFF_LOOPBACK != 0
	// The hardware address is a sockaddr whose family field is the ARPHRD type.
	if err := ioctl(unix.SIOCGIFHWADDR, "hardware type"); err != nil {
		return 0, 0, false, err
	}
	return ifindex, ifr.Uint16(), loopback, nil
}

// liveLinkType maps an ARPHRD hardware type to the link type of what a
// SOCK_RAW packet socket delivers on it.
func liveLinkType(hwType uint16, loopback bool) (features.LinkType, error) {
	switch {
	case hwType == unix.ARPHRD_ETHER, hwType == unix.ARPHRD_LOOPBACK, loopback:
		return features.LinkTypeEthernet, nil
	// Layer-3 devices have no link header to hand over: tun and WireGuard
	// (NONE), LTE modems (RAWIP), ipip/ip6tnl/sit tunnels, and ppp_generic,
	// which strips the PPP protocol field before the packet reaches the taps.
	case hwType == unix.ARPHRD_NONE, hwType == unix.ARPHRD_RAWIP, hwType == unix.ARPHRD_PPP,
		hwType == unix.ARPHRD_TUNNEL, hwType == unix.ARPHRD_TUNNEL6, hwType == unix.ARPHRD_SIT:
		return features.LinkTypeRaw, nil
	// A Wi-Fi interface in monitor mode: radiotap, or bare 802.11 or a
	// Prism header on old drivers. (A managed Wi-Fi interface is
	// ARPHRD_ETHER.)
	case hwType == unix.ARPHRD_IEEE80211_RADIOTAP:
		return features.LinkTypeRadiotap, nil
	case hwType == unix.ARPHRD_IEEE80211:
		return features.LinkTypeIEEE80211, nil
	case hwType == unix.ARPHRD_IEEE80211_PRISM:
		return features.LinkTypePrism, nil
	}
	return 0, fmt.Errorf("hardware type ARPHRD %d is not one the capture can read: capture on an Ethernet, Wi-Fi (managed, or monitor with radiotap), bridge, loopback, tun, tunnel or PPP interface instead", hwType)
}

// packetSocket opens an AF_PACKET socket that receives nothing yet: protocol
// 0 registers no tap, so no packet of another interface slips in before the
// ring, the filter and the bind are in place.
func (s *LiveSource) packetSocket() error {
	typ := unix.SOCK_RAW
	if s.every {
		// Interfaces of every kind at once: the kernel gives each packet
		// without its link header and says in its address where it was.
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_PACKET, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return permissionError{fmt.Errorf("live capture: capturing on %s needs root or CAP_NET_RAW (%w): run the agent as root or grant it with `setcap cap_net_raw+ep BINARY`", s.iface, err)}
	case errors.Is(err, unix.EAFNOSUPPORT):
		return permissionError{fmt.Errorf("live capture on %s: this kernel has no AF_PACKET sockets (%w): load the af_packet module or enable CONFIG_PACKET", s.iface, err)}
	case err != nil:
		return fmt.Errorf("live capture on %s: open an AF_PACKET socket: %w", s.iface, err)
	}
	s.fd = fd
	if err := s.attachFilter(); err != nil {
		unix.Close(fd)
		s.fd = -1
		return err
	}
	return nil
}

// attachFilter installs a classic BPF program that cuts packets to the snap
// length in the kernel, so that the ring is not filled with bytes the
// capture drops anyway. On loopback it also rejects the outgoing copy: every
// packet there is seen leaving and arriving, and would be captured twice.
func (s *LiveSource) attachFilter() error {
	accept := unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(s.snapLen)}
	prog := []unix.SockFilter{accept}
	if s.loopback {
		prog = []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdPkttype},
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.PACKET_OUTGOING},
			{Code: unix.BPF_RET | unix.BPF_K, K: 0},
			accept,
		}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(s.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("live capture on %s: attach the snap-length filter: %w", s.iface, err)
	}
	return nil
}

// openRing sets up the TPACKET_V3 ring on a new socket. On failure the socket
// is closed again, so that the recvmsg fallback starts from a socket without
// a half-configured ring or packet version.
func (s *LiveSource) openRing(buffer int, timeout time.Duration) (err error) {
	if err := s.packetSocket(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			unix.Close(s.fd)
			s.fd = -1
		}
	}()
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fmt.Errorf("select TPACKET_V3: %w", err)
	}
	// A block must hold the largest packet: the kernel never splits one.
	need := s.snapLen + vlanTagLen + ringBlockOverhead
	size := unix.Getpagesize()
	for size < need || size < minRingBlock {
		size <<= 1
	}
	blocks := max(buffer/size, 2)
	req := unix.TpacketReq3{
		Block_size: uint32(size),
		Block_nr:   uint32(blocks),
		// V3 packs packets of any size into a block; the frame fields only
		// have to pass the kernel's consistency checks.
		Frame_size:     uint32(size),
		Frame_nr:       uint32(blocks),
		Retire_blk_tov: uint32(timeout / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(s.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("allocate a ring of %d blocks of %d KiB: %w", blocks, size>>10, err)
	}
	ring, err := unix.Mmap(s.fd, 0, size*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the ring of %d KiB: %w", size*blocks>>10, err)
	}
	s.ring, s.blockSize, s.blocks = ring, size, blocks
	s.mechanism = fmt.Sprintf("TPACKET_V3 ring, %d blocks of %d KiB", blocks, size>>10)
	return nil
}

// openRecv sets up a plain socket read with recvmsg: the kernel timestamp
// comes as SCM_TIMESTAMPNS, the original length and the stripped VLAN tag
// as PACKET_AUXDATA (the length recvmsg returns is already cut by the filter).
func (s *LiveSource) openRecv(buffer int) error {
	if err := s.packetSocket(); err != nil {
		return err
	}
	fail := func(what string, err error) error {
		unix.Close(s.fd)
		s.fd = -1
		return fmt.Errorf("live capture on %s: %s: %w", s.iface, what, err)
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("ask for kernel timestamps", err)
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("ask for packet lengths", err)
	}
	// The forced variant passes net.core.rmem_max, which on gateways is often
	// far below what a burst needs; it takes CAP_NET_ADMIN, which the agent
	// is not given (k8s/base/capture.yaml): without it the buffer is what
	// rmem_max allows, and the mechanism says so. The ring, the default,
	// needs neither.
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buffer); err != nil {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, buffer); err != nil {
			return fail("set the receive buffer", err)
		}
		// The kernel reports twice what it grants (the doubling covers its
		// bookkeeping).
		if got, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && got/2 < buffer {
			s.bufferNote = fmt.Sprintf("; receive buffer %d KiB of the %d KiB asked: raise net.core.rmem_max on the gateway", got/2>>10, buffer>>10)
		}
	}
	s.oob = make([]byte, unix.CmsgSpace(16)+unix.CmsgSpace(sizeofAuxdata))
	return nil
}

// bind attaches the socket to the interface; only from here on do packets
// arrive.
func (s *LiveSource) bind(promiscuous bool) error {
	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.ifindex}
	err := unix.Bind(s.fd, &sa)
	if errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("live capture: interface %s not found (%w): it disappeared while the capture was opened; list them with `ip link`", s.iface, ErrNoInterface)
	}
	if err != nil {
		return fmt.Errorf("live capture on %s: bind the socket to the interface: %w", s.iface, err)
	}
	if promiscuous {
		mreq := unix.PacketMreq{Ifindex: int32(s.ifindex), Type: unix.PACKET_MR_PROMISC}
		// The kernel drops the membership when the socket closes, so a
		// crashed agent does not leave the interface promiscuous.
		if err := unix.SetsockoptPacketMreq(s.fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fmt.Errorf("live capture on %s: enable promiscuous mode: %w", s.iface, err)
		}
	}
	return nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Mechanism describes how packets are read, for the agent's log: the ring and
// its size, or recvmsg and why the ring was not used.
func (s *LiveSource) Mechanism() string { return s.mechanism }

// Next returns the next packet, waiting for one as long as it takes. After
// Close, and when Close is called while it waits, it returns io.EOF. When
// the interface goes down Next keeps waiting, as the kernel resumes the
// capture when it comes up again; when it is removed, Next returns an error
// wrapping ErrNoInterface.
func (s *LiveSource) Next() (Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return Frame{}, io.EOF
	}
	if s.err != nil {
		return Frame{}, s.err
	}
	if s.amsdu.pending() {
		s.n++
		s.delivered.Add(1)
		return s.amsdu.pop(s.n - 1), nil
	}
	var f Frame
	var err error
	if s.ring != nil {
		f, err = s.nextRing()
	} else {
		f, err = s.nextRecv()
	}
	if err != nil {
		if err != io.EOF {
			s.err = err
		}
		return Frame{}, err
	}
	s.n++
	s.delivered.Add(1)
	return s.amsdu.split(f), nil
}

func (s *LiveSource) nextRing() (Frame, error) {
	for {
		blk := s.ring[s.blk*s.blockSize : (s.blk+1)*s.blockSize]
		status := (*uint32)(unsafe.Pointer(&blk[blkStatus]))
		// The atomic load is the acquire that orders the reads of the block
		// after the kernel's writes to it: plain loads may see stale packet
		// bytes on arm64, whose memory model allows that reordering.
		if atomic.LoadUint32(status)&unix.TP_STATUS_USER == 0 {
			if err := s.wait(); err != nil {
				return Frame{}, err
			}
			continue
		}
		num := binary.NativeEndian.Uint32(blk[blkNumPkts:])
		if s.blkPkt == 0 {
			s.blkOff = int(binary.NativeEndian.Uint32(blk[blkFirstPkt:]))
		}
		if s.blkPkt >= num {
			s.nextBlock(status)
			continue
		}
		off := s.blkOff
		if off < 0 || off+pktHdrLen > len(blk) {
			return Frame{}, s.ringCorrupt("packet header at offset %d", off)
		}
		h := blk[off:]
		capLen := int(binary.NativeEndian.Uint32(h[pktSnaplen:]))
		mac := int(binary.NativeEndian.Uint16(h[pktMac:]))
		if capLen > s.snapLen || off+mac+capLen > len(blk) {
			return Frame{}, s.ringCorrupt("packet of %d bytes at offset %d+%d", capLen, off, mac)
		}
		at := 0
		if s.every {
			// The packet's sockaddr_ll follows the header, aligned to 16.
			const sllAt = (pktHdrLen + 15) &^ 15
			if off+sllAt+sizeofSockaddrLL > len(blk) {
				return Frame{}, s.ringCorrupt("address of the packet at offset %d", off)
			}
			at = s.sll2Header(h[sllAt : sllAt+sizeofSockaddrLL])
		}
		copy(s.buf[at:], h[mac:mac+capLen])
		capLen += at
		wireLen := int(binary.NativeEndian.Uint32(h[pktLen:])) + at
		ts := time.Unix(int64(binary.NativeEndian.Uint32(h[pktSec:])), int64(binary.NativeEndian.Uint32(h[pktNsec:])))
		pktStat := binary.NativeEndian.Uint32(h[pktStatus:])
		tci := uint16(binary.NativeEndian.Uint32(h[pktVlanTCI:]))
		tpid := binary.NativeEndian.Uint16(h[pktVlanTPID:])

		s.blkPkt++
		s.blkOff = off + int(binary.NativeEndian.Uint32(h[pktNextOffset:]))
		// The packet is copied out: the block can go back to the kernel now
		// rather than at the next call.
		if s.blkPkt == num {
			s.nextBlock(status)
		}
		return s.frame(capLen, wireLen, ts, pktStat, tci, tpid), nil
	}
}

// nextBlock hands the current block back to the kernel. The atomic store is
// the release that keeps the reads of the block before it.
func (s *LiveSource) nextBlock(status *uint32) {
	atomic.StoreUint32(status, unix.TP_STATUS_KERNEL)
	s.blk = (s.blk + 1) % s.blocks
	s.blkPkt, s.blkOff = 0, 0
}

func (s *LiveSource) ringCorrupt(format string, args ...any) error {
	return fmt.Errorf("live capture on %s: ring block %d holds an impossible %s (block size %d): the kernel and this reader disagree on the TPACKET_V3 layout; report it with the kernel version (`uname -r`)",
		s.iface, s.blk, fmt.Sprintf(format, args...), s.blockSize)
}

func (s *LiveSource) nextRecv() (Frame, error) {
	for {
		at := 0
		if s.every {
			at = sll2Len
		}
		n, oobn, _, from, err := unix.Recvmsg(s.fd, s.buf[at:at+s.snapLen], s.oob, unix.MSG_TRUNC)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := s.wait(); err != nil {
				return Frame{}, err
			}
			continue
		case err == unix.ENETDOWN:
			if err := s.wentDown(); err != nil {
				return Frame{}, err
			}
			continue
		case err != nil:
			return Frame{}, fmt.Errorf("live capture on %s: read a packet: %w", s.iface, err)
		}
		s.down = false
		capLen := min(n, s.snapLen) + at
		wireLen := n + at
		if s.every {
			sa, ok := from.(*unix.SockaddrLinklayer)
			if !ok {
				return Frame{}, fmt.Errorf("live capture on %s: a packet came without its link-layer address (%T)", s.iface, from)
			}
			s.sll2FromSockaddr(sa)
		}
		var ts time.Time
		var pktStat uint32
		var tci, tpid uint16
		msgs, err := unix.ParseSocketControlMessage(s.oob[:oobn])
		if err != nil {
			return Frame{}, fmt.Errorf("live capture on %s: read a packet's control messages: %w", s.iface, err)
		}
		for _, m := range msgs {
			switch {
			case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS:
				ts = timespec(m.Data)
			case m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= sizeofAuxdata:
				pktStat = binary.NativeEndian.Uint32(m.Data[0:])
				wireLen = int(binary.NativeEndian.Uint32(m.Data[4:])) + at
				tci = binary.NativeEndian.Uint16(m.Data[16:])
				tpid = binary.NativeEndian.Uint16(m.Data[18:])
			}
		}
		if ts.IsZero() {
			ts = time.Now()
		}
		return s.frame(capLen, wireLen, ts, pktStat, tci, tpid), nil
	}
}

// timespec reads a struct timespec, whose fields are as wide as the
// platform's long (32-bit ARM and MIPS gateways, 64-bit elsewhere).
func timespec(b []byte) time.Time {
	switch len(b) {
	case 16:
		return time.Unix(int64(binary.NativeEndian.Uint64(b)), int64(binary.NativeEndian.Uint64(b[8:])))
	case 8:
		return time.Unix(int64(int32(binary.NativeEndian.Uint32(b))), int64(int32(binary.NativeEndian.Uint32(b[4:]))))
	}
	return time.Time{}
}

// frame builds the Frame for the capLen bytes at the start of s.buf.
func (s *LiveSource) frame(capLen, wireLen int, ts time.Time, pktStat uint32, tci, tpid uint16) Frame {
	if pktStat&unix.TP_STATUS_VLAN_VALID != 0 && s.every && capLen >= sll2Len {
		// As libpcap puts it back in a cooked frame: the tag after the
		// header, whose protocol becomes the tag's TPID.
		if pktStat&unix.TP_STATUS_VLAN_TPID_VALID == 0 {
			tpid = 0x8100
		}
		copy(s.buf[sll2Len+vlanTagLen:capLen+vlanTagLen], s.buf[sll2Len:capLen])
		binary.BigEndian.PutUint16(s.buf[sll2Len:], tci)
		copy(s.buf[sll2Len+2:sll2Len+4], s.buf[0:2])
		binary.BigEndian.PutUint16(s.buf[0:], tpid)
		capLen = min(capLen+vlanTagLen, sll2Len+s.snapLen)
		wireLen += vlanTagLen
	}
	if pktStat&unix.TP_STATUS_VLAN_VALID != 0 && s.link == features.LinkTypeEthernet && capLen >= 12 {
		if pktStat&unix.TP_STATUS_VLAN_TPID_VALID == 0 {
			tpid = 0x8100
		}
		copy(s.buf[12+vlanTagLen:capLen+vlanTagLen], s.buf[12:capLen])
		binary.BigEndian.PutUint16(s.buf[12:], tpid)
		binary.BigEndian.PutUint16(s.buf[14:], tci)
		capLen = min(capLen+vlanTagLen, s.snapLen)
		wireLen += vlanTagLen
	}
	return Frame{
		Data:     s.buf[:capLen],
		CI:       gopacket.CaptureInfo{Timestamp: ts, CaptureLength: capLen, Length: max(wireLen, capLen)},
		LinkType: s.link,
		Offset:   s.n,
	}
}

// sll2Len is the length of the SLL2 header a capture on every interface
// gives its frames; sizeofSockaddrLL that of the kernel's address of a
// packet (struct sockaddr_ll).
const (
	sll2Len          = 20
	sizeofSockaddrLL = 20
)

// sll2Header writes at the start of s.buf the SLL2 header for the packet
// whose struct sockaddr_ll is sa, and returns its length.
func (s *LiveSource) sll2Header(sa []byte) int {
	// sockaddr_ll: family(2) protocol(2, network order) ifindex(4)
	// hatype(2) pkttype(1) halen(1) addr(8), all but protocol native.
	copy(s.buf[0:2], sa[2:4])
	s.buf[2], s.buf[3] = 0, 0
	binary.BigEndian.PutUint32(s.buf[4:], binary.NativeEndian.Uint32(sa[4:8]))
	binary.BigEndian.PutUint16(s.buf[8:], binary.NativeEndian.Uint16(sa[8:10]))
	s.buf[10], s.buf[11] = sa[10], min(sa[11], 8)
	copy(s.buf[12:20], sa[12:20])
	return sll2Len
}

// sll2FromSockaddr writes the SLL2 header of a packet recvmsg read.
func (s *LiveSource) sll2FromSockaddr(sa *unix.SockaddrLinklayer) {
	binary.BigEndian.PutUint16(s.buf[0:], htons(sa.Protocol))
	s.buf[2], s.buf[3] = 0, 0
	binary.BigEndian.PutUint32(s.buf[4:], uint32(sa.Ifindex))
	binary.BigEndian.PutUint16(s.buf[8:], sa.Hatype)
	s.buf[10], s.buf[11] = sa.Pkttype, min(sa.Halen, 8)
	copy(s.buf[12:20], sa.Addr[:])
}

// wait blocks until the socket has something to read or Close was called.
func (s *LiveSource) wait() error {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.efd), Events: unix.POLLIN}}
	timeout := -1
	if s.down {
		timeout = int(downRecheck / time.Millisecond)
	}
	n, err := unix.Poll(fds, timeout)
	if err == unix.EINTR {
		return nil
	}
	if err != nil {
		return fmt.Errorf("live capture on %s: wait for packets: %w", s.iface, err)
	}
	if fds[1].Revents != 0 {
		return io.EOF
	}
	if fds[0].Revents&unix.POLLERR != 0 {
		// Reading SO_ERROR clears it; poll would otherwise report it forever.
		soErr, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return fmt.Errorf("live capture on %s: read the socket's error: %w", s.iface, err)
		}
		switch errno := unix.Errno(soErr); errno {
		case 0:
		case unix.ENETDOWN:
			return s.wentDown()
		default:
			return fmt.Errorf("live capture on %s: %w", s.iface, errno)
		}
	}
	if fds[0].Revents&unix.POLLIN != 0 {
		s.down = false
	}
	if n == 0 && s.down {
		return s.checkGone()
	}
	return nil
}

// wentDown records that the interface went down. The kernel stops the
// capture and restarts it by itself when the interface comes back up, but it
// reports only the first of the two events that removing an interface
// causes, so until packets flow again wait polls for the removal.
func (s *LiveSource) wentDown() error {
	s.down = true
	return s.checkGone()
}

// checkGone asks the socket which interface it is bound to: the kernel sets
// that to -1 when the interface is removed or moved to another namespace.
func (s *LiveSource) checkGone() error {
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return fmt.Errorf("live capture on %s: ask the socket for its interface: %w", s.iface, err)
	}
	if ll, ok := sa.(*unix.SockaddrLinklayer); ok && ll.Ifindex != s.ifindex {
		return fmt.Errorf("live capture on %s: the interface was removed (%w): reopen the capture when it is back (`ip link` lists the interfaces)", s.iface, ErrNoInterface)
	}
	return nil
}

// Stats reads the kernel's counters. After Close it returns the counts as
// they were at Close.
func (s *LiveSource) Stats() (LiveStats, error) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	err := s.readKernelStats()
	st := s.stats
	st.Delivered = s.delivered.Load()
	return st, err
}

// readKernelStats folds the kernel's counters into s.stats; the kernel
// resets them on every read.
func (s *LiveSource) readKernelStats() error {
	if s.fdClosed || s.fd < 0 {
		return nil
	}
	if s.ring != nil {
		st, err := unix.GetsockoptTpacketStatsV3(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			return fmt.Errorf("live capture on %s: read the kernel's packet counters: %w", s.iface, err)
		}
		s.stats.Received += uint64(st.Packets)
		s.stats.Dropped += uint64(st.Drops)
		s.stats.RingFull += uint64(st.Freeze_q_cnt)
		return nil
	}
	st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return fmt.Errorf("live capture on %s: read the kernel's packet counters: %w", s.iface, err)
	}
	s.stats.Received += uint64(st.Packets)
	s.stats.Dropped += uint64(st.Drops)
	return nil
}

// Close stops the capture; a Next blocked in another goroutine returns
// io.EOF. Calling it again does nothing.
func (s *LiveSource) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		err = wakeReader(s.efd, s.iface)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.statsMu.Lock()
		defer s.statsMu.Unlock()
		// The last counters go with the socket; keep them for Stats.
		serr := s.readKernelStats()
		err = errors.Join(err, serr, s.release())
	})
	return err
}

// wakeReader writes the eventfd a waiting Next polls beside its socket, so
// that Close ends the wait at once.
func wakeReader(efd int, iface string) error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(efd, one[:]); err != nil {
		return fmt.Errorf("live capture on %s: wake the reader: %w", iface, err)
	}
	return nil
}

// release frees the ring, the socket and the eventfd; its callers hold
// whatever keeps Next and Stats away.
func (s *LiveSource) release() error {
	var errs []error
	if s.ring != nil {
		if err := unix.Munmap(s.ring); err != nil {
			errs = append(errs, fmt.Errorf("unmap the ring: %w", err))
		}
		s.ring = nil
	}
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, fmt.Errorf("close the socket: %w", err))
		}
		s.fd = -1
	}
	s.fdClosed = true
	if s.efd >= 0 {
		unix.Close(s.efd)
		s.efd = -1
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("live capture on %s: %w", s.iface, err)
	}
	return nil
}
