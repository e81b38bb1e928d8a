package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"golang.org/x/sys/unix"

	"github.com/homemole/homemole/pipeline/features"
)

// A live capture of netfilter's log: the interface names "nflog" and
// "nflog:N" (group N; "nflog" is group 0) are NFLOG groups, as tcpdump names
// them. The packets an iptables or nftables NFLOG rule logs to the group come
// over a netlink socket, each message the NFLOG record a capture file of
// link type 239 holds, and are read as the frames they logged
// (nflogView), as the file would be. Kernels before 3.17 log to a group
// only once its address family is bound to nfnetlink_log system-wide
// (NFULNL_CFG_CMD_PF_BIND, which libpcap sends); that changes where every
// other log rule of the family goes, so it is not done here.

// nflogInterface is the name netfilter's log goes by, before ":group".
const nflogInterface = "nflog"

// Netlink and nfnetlink_log (linux/netfilter/nfnetlink_log.h) numbers that
// x/sys does not carry.
const (
	nfnlSubsysULOG  = unix.NFNL_SUBSYS_ULOG
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaCfgCmd     = 1 // struct nfulnl_msg_config_cmd: command(1)
	nfulaCfgMode    = 2 // struct nfulnl_msg_config_mode: copy range(4, big-endian) mode(1) pad(1)
	nfulaCfgQThresh = 5 // how many records the kernel batches at most (4, big-endian)
	nfulaCfgFlags   = 6 // (2, big-endian)

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdUnbind = 2
	nfulnlCopyPacket   = 2
	nfulnlCfgFSeq      = 1 // number each record in its group (NFULA_SEQ)
	// The kernel copies at most this much of a packet into a record.
	nfulnlCopyRangeMax = 0xffff - 4

	nlmsgHdrLen = unix.SizeofNlMsghdr
	// nflogRecvLen holds what one read returns: a record (up to 64 KiB for
	// a packet copied whole), or a batch of them from a kernel that did
	// not take the queue threshold.
	nflogRecvLen = 128 << 10
	// nflogAckWait bounds the wait for the kernel to acknowledge the
	// group's configuration.
	nflogAckWait = 5 * time.Second
)

// nflogGroup tells whether iface names netfilter's log and which group.
func nflogGroup(iface string) (group uint16, ok bool, err error) {
	rest, found := strings.CutPrefix(iface, nflogInterface)
	switch {
	case !found:
		return 0, false, nil
	case rest == "":
		return 0, true, nil
	case rest[0] != ':':
		return 0, false, nil // an interface that happens to start so
	}
	n, err := strconv.ParseUint(rest[1:], 10, 16)
	if err != nil {
		return 0, true, fmt.Errorf("live capture on %s: an NFLOG group is a number 0..65535, as in iptables --nflog-group 5 and tcpdump -i nflog:5", iface)
	}
	return uint16(n), true, nil
}

// nflogSource is a live capture of one NFLOG group. Next, Close and Stats
// follow LiveSource's rules: Close wakes a waiting Next, which then returns
// io.EOF.
type nflogSource struct {
	iface string
	group uint16

	mu      sync.Mutex // held by Next while it runs, so Close waits for it
	fd, efd int
	closed  atomic.Bool
	once    sync.Once
	err     error // sticky
	buf     []byte
	msgs    []byte   // the part of buf not yet read
	backlog [][]byte // records that came while the configuration was acknowledged
	n       uint64
	view    nflogView
	seq     uint32 // the next record number expected
	seen    bool   // seq holds a number

	statsMu   sync.Mutex
	stats     LiveStats
	viewStats NFLOGStats // the view's, copied out of Next for NFLOGStatsOf
	delivered atomic.Uint64
}

// openNFLOG binds a netlink socket to an NFLOG group and asks for whole
// packets (up to snapLen), numbered, each sent at once.
func openNFLOG(iface string, group uint16, snapLen, buffer int) (*nflogSource, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("live capture on %s: open a netfilter netlink socket: %w", iface, err)
	}
	s := &nflogSource{iface: iface, group: group, fd: fd, efd: -1, buf: make([]byte, nflogRecvLen)}
	fail := func(err error) (*nflogSource, error) {
		s.release()
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("live capture on %s: bind the netlink socket: %w", iface, err))
	}
	// Past rmem_max only with CAP_NET_ADMIN, which binding a group needs
	// anyway.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buffer); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, buffer)
	}
	// Asking for time stamps on any socket turns on the kernel's stamping
	// of received packets, which a record then carries (NFULA_TIMESTAMP);
	// on a quiet system nothing else may have turned it on.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	if s.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("live capture on %s: create the eventfd that lets Close wake Next: %w", iface, err))
	}
	// Each record is sent at once (a queue threshold of 1), not batched:
	// a record the kernel did not stamp (a packet forwarded or sent out)
	// is stamped on arrival here, and the kernel's batching (up to a
	// second unless the rule says --nflog-threshold 1) would move it by as
	// much, which the packet intervals the models read would carry.
	// TestNFLOGCaptureIsTheLANView holds the stamps to the bridge
	// capture's: 1 s off at the 99th percentile without this, a fraction
	// of a millisecond with it.
	mode := binary.BigEndian.AppendUint32(nil, uint32(min(snapLen, nfulnlCopyRangeMax)))
	mode = append(mode, nfulnlCopyPacket, 0)
	// One datagram, each request numbered by the attribute it sets (the
	// bind first): the kernel applies them in order before it logs to the
	// group under this socket.
	var req []byte
	n := 0
	for i, c := range [...][]byte{nfulaCfgCmd: {nfulnlCfgCmdBind}, nfulaCfgMode: mode,
		nfulaCfgFlags: binary.BigEndian.AppendUint16(nil, nfulnlCfgFSeq), nfulaCfgQThresh: binary.BigEndian.AppendUint32(nil, 1)} {
		if c != nil {
			req, n = append(req, s.config(uint32(i), uint16(i), c)...), n+1
		}
	}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("live capture on %s: send the group's configuration: %w", iface, err))
	}
	if err := s.awaitAcks(n); err != nil {
		return fail(err)
	}
	return s, nil
}

// config is an NFULNL_MSG_CONFIG request for the group holding one
// attribute, asking for an acknowledgement under sequence number seq.
func (s *nflogSource) config(seq uint32, attr uint16, v []byte) []byte {
	attrLen := 4 + len(v)
	n := nlmsgHdrLen + 4 + (attrLen+3)&^3
	b := make([]byte, n)
	binary.NativeEndian.PutUint32(b[0:], uint32(n))
	binary.NativeEndian.PutUint16(b[4:], nfnlSubsysULOG<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], seq)
	// nfgenmsg: family (none: a group serves every family), version, group.
	b[16], b[17] = unix.AF_UNSPEC, unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:], s.group)
	binary.NativeEndian.PutUint16(b[20:], uint16(attrLen))
	binary.NativeEndian.PutUint16(b[22:], attr)
	copy(b[24:], v)
	return b
}

// awaitAcks reads the kernel's answers to n configuration requests. A
// record that comes first is kept for Next.
func (s *nflogSource) awaitAcks(n int) error {
	deadline := time.Now().Add(nflogAckWait)
	for acked := 0; acked < n; {
		m, err := s.message()
		switch {
		case err == unix.EAGAIN:
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("live capture on %s: the kernel did not answer the NFLOG configuration within %v: is nfnetlink_log available (modprobe nfnetlink_log)?", s.iface, nflogAckWait)
			}
			unix.Poll([]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}, int(left/time.Millisecond)+1)
			continue
		case err != nil:
			return err
		}
		typ := binary.NativeEndian.Uint16(m[4:])
		switch {
		case typ == unix.NLMSG_ERROR:
			if len(m) < nlmsgHdrLen+4 {
				return fmt.Errorf("live capture on %s: a netlink error message of %d bytes", s.iface, len(m))
			}
			if errno := -int32(binary.NativeEndian.Uint32(m[nlmsgHdrLen:])); errno != 0 {
				return s.configError(binary.NativeEndian.Uint32(m[8:]), unix.Errno(errno))
			}
			acked++
		case typ == nfnlSubsysULOG<<8|nfulnlMsgPacket:
			s.backlog = append(s.backlog, append([]byte(nil), m[nlmsgHdrLen:]...))
		}
	}
	return nil
}

// configError says why the kernel refused configuration request seq.
func (s *nflogSource) configError(seq uint32, errno unix.Errno) error {
	what := "configure the group"
	switch seq {
	case nfulaCfgCmd:
		what = "bind the group"
	case nfulaCfgMode:
		what = "ask for whole packets"
	case nfulaCfgFlags:
		what = "ask for record numbers"
	case nfulaCfgQThresh:
		what = "ask for each record at once"
	}
	// The kernel says EPERM both to a listener without CAP_NET_ADMIN and
	// to one binding a group another socket holds.
	switch {
	case errno == unix.EPERM && !hasCapNetAdmin():
		return fmt.Errorf("live capture on %s: %s: %w: listening to netfilter's log needs CAP_NET_ADMIN (run the agent as root or grant it the capability)", s.iface, what, errno)
	case errno == unix.EPERM || errno == unix.EBUSY:
		return fmt.Errorf("live capture on %s: bind NFLOG group %d: another listener holds it (%w: a tcpdump -i %s, ulogd, or another agent): stop it, or log to another group (iptables ... -j NFLOG --nflog-group N) and capture nflog:N", s.iface, s.group, errno, s.iface)
	}
	return fmt.Errorf("live capture on %s: %s: the kernel refused it: %w", s.iface, what, errno)
}

// message returns the next netlink message, reading a batch from the
// socket when none is left; unix.EAGAIN when none has come.
func (s *nflogSource) message() ([]byte, error) {
	for len(s.msgs) == 0 {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ENOBUFS:
			// The socket overflowed; the record numbers say how much
			// was lost.
			continue
		case err != nil:
			return nil, err
		}
		s.msgs = s.buf[:n]
	}
	if left := len(s.msgs); left < nlmsgHdrLen {
		s.msgs = nil
		return nil, fmt.Errorf("live capture on %s: a netlink message cut short at %d bytes", s.iface, left)
	}
	n := int(binary.NativeEndian.Uint32(s.msgs))
	if left := len(s.msgs); n < nlmsgHdrLen || n > left {
		s.msgs = nil
		return nil, fmt.Errorf("live capture on %s: a netlink message claims %d bytes of %d", s.iface, n, left)
	}
	m := s.msgs[:n]
	s.msgs = s.msgs[min(len(s.msgs), (n+3)&^3):]
	return m, nil
}

// Next returns the next packet the group logged, waiting as long as it
// takes; io.EOF after Close.
func (s *nflogSource) Next() (Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return Frame{}, io.EOF
	}
	if s.err != nil {
		return Frame{}, s.err
	}
	for {
		var rec []byte
		if len(s.backlog) > 0 {
			rec, s.backlog = s.backlog[0], s.backlog[1:]
		} else {
			m, err := s.message()
			if err == unix.EAGAIN {
				if err := s.wait(); err != nil {
					return Frame{}, err
				}
				continue
			}
			if err != nil {
				s.err = fmt.Errorf("live capture on %s: read the log: %w", s.iface, err)
				return Frame{}, s.err
			}
			switch binary.NativeEndian.Uint16(m[4:]) {
			case nfnlSubsysULOG<<8 | nfulnlMsgPacket:
				rec = m[nlmsgHdrLen:]
			case unix.NLMSG_ERROR:
				if len(m) >= nlmsgHdrLen+4 && binary.NativeEndian.Uint32(m[nlmsgHdrLen:]) != 0 {
					s.err = fmt.Errorf("live capture on %s: the kernel reported %w", s.iface, unix.Errno(-int32(binary.NativeEndian.Uint32(m[nlmsgHdrLen:]))))
					return Frame{}, s.err
				}
				continue
			default:
				continue
			}
		}
		s.delivered.Add(1)
		f, repeat := s.frame(rec)
		if repeat {
			continue // a bridged frame the log gave already
		}
		s.n++
		return f, nil
	}
}

// frame is the record as a capture file would hold it (its time stamp the
// kernel's, where it took one, else now), read as the packet it logged;
// repeat says the view leaves it out.
func (s *nflogSource) frame(rec []byte) (f Frame, repeat bool) {
	f = Frame{Data: rec, LinkType: features.LinkTypeNFLOG, Offset: s.n,
		CI: gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(rec), Length: len(rec)}}
	h, ok, repeat := s.view.unwrap(&f)
	if ok {
		if !h.Stamp.IsZero() {
			f.CI.Timestamp = h.Stamp
		}
		s.count(h)
	}
	s.statsMu.Lock()
	s.viewStats = s.view.stats
	s.statsMu.Unlock()
	return f, repeat
}

// count follows the group's record numbers: a gap is records the kernel
// dropped because the socket was full.
func (s *nflogSource) count(h features.NFLOG) {
	if !h.HasSeq {
		return
	}
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.seen && h.Seq != s.seq {
		s.stats.Dropped += uint64(h.Seq - s.seq)
	}
	s.seq, s.seen = h.Seq+1, true
}

// wait blocks until the socket has something to read or Close was called.
func (s *nflogSource) wait() error {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.efd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
		return fmt.Errorf("live capture on %s: wait for the log: %w", s.iface, err)
	}
	if fds[1].Revents != 0 {
		return io.EOF
	}
	return nil
}

// Stats counts the records delivered and, from the gaps in their numbers,
// those the kernel dropped.
func (s *nflogSource) Stats() (LiveStats, error) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := s.stats
	st.Delivered = s.delivered.Load()
	st.Received = st.Delivered + st.Dropped
	return st, nil
}

// Mechanism says how the packets are read.
func (s *nflogSource) Mechanism() string {
	return fmt.Sprintf("netfilter log (NFLOG group %d over netlink, each record sent at once)", s.group)
}

// Close unbinds the group and stops the capture; a Next waiting in another
// goroutine returns io.EOF. Calling it again does nothing.
func (s *nflogSource) Close() error {
	var err error
	s.once.Do(func() {
		s.closed.Store(true)
		err = wakeReader(s.efd, s.iface)
		s.mu.Lock()
		defer s.mu.Unlock()
		// Closing the socket unbinds too; saying so frees the group at once
		// for the next listener.
		unix.Sendto(s.fd, s.config(nfulaCfgCmd, nfulaCfgCmd, []byte{nfulnlCfgCmdUnbind}), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		err = errors.Join(err, s.release())
	})
	return err
}

func (s *nflogSource) release() error {
	var err error
	if s.fd >= 0 {
		if cerr := unix.Close(s.fd); cerr != nil {
			err = fmt.Errorf("live capture on %s: close the netlink socket: %w", s.iface, cerr)
		}
		s.fd = -1
	}
	if s.efd >= 0 {
		unix.Close(s.efd)
		s.efd = -1
	}
	return err
}

// hasCapNetAdmin tells whether the calling thread may configure netfilter.
func hasCapNetAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0
}

// liveNFLOGStats is the NFLOG stats of a live group's source, zero for any
// other source.
func liveNFLOGStats(src Source) NFLOGStats {
	if s, ok := src.(*nflogSource); ok {
		s.statsMu.Lock()
		defer s.statsMu.Unlock()
		return s.viewStats
	}
	return NFLOGStats{}
}
