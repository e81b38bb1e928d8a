package capture

import (
	"encoding/binary"

	"github.com/homemole/homemole/pipeline/features"
)

// amsduSplit gives each MSDU of an 802.11 A-MSDU (several packets
// aggregated in one frame, as 802.11n and later send bursts) as a frame of
// its own: the aggregate's radio and 802.11 headers, one subframe, the
// FCS. The decoder reads one packet per frame, the first MSDU of an
// aggregate; split this way, it reads them all. Each subframe's number goes
// in its copy's fragment number (an A-MSDU is never fragmented), so that the
// decoder's retransmission check tells a retransmitted aggregate's
// subframes from the next subframe of the first sending.
type amsduSplit struct {
	agg  Frame // the aggregate; its Data stays the reader's until every subframe is out
	a    features.AMSDU
	subs [][2]int
	next int // the subframe pop gives next
	buf  []byte
}

// split takes a frame just read. An A-MSDU of two subframes or more is
// kept and its first subframe returned; any other frame is returned as it
// is.
func (s *amsduSplit) split(f Frame) Frame {
	switch f.LinkType {
	case features.LinkTypeIEEE80211, features.LinkTypeRadiotap, features.LinkTypePrism, features.LinkTypeAVS, features.LinkTypePPI:
	default:
		return f
	}
	a, subs, ok := features.ParseAMSDU(f.LinkType, f.Data, s.subs[:0])
	s.subs = subs
	if !ok || len(subs) < 2 {
		return f
	}
	s.agg, s.a, s.next = f, a, 0
	return s.pop(f.Offset)
}

// pending says whether subframes of the last aggregate remain.
func (s *amsduSplit) pending() bool { return s.next > 0 && s.next < len(s.subs) }

// pop returns the next subframe as a frame numbered offset. Its Data is
// valid until the next pop or split.
func (s *amsduSplit) pop(offset uint64) Frame {
	k, d := s.next, s.agg.Data
	s.next++
	sub := s.subs[k]
	fcs := d[len(d)-s.a.FCS:]
	b := append(append(append(s.buf[:0], d[:s.a.Subframes]...), d[sub[0]:sub[1]]...), fcs...)
	s.buf = b
	// Sequence control: the sequence number, then the fragment number in
	// its low four bits; past 15 subframes the number stays 15.
	seq := s.a.Frame + 22
	binary.LittleEndian.PutUint16(b[seq:], binary.LittleEndian.Uint16(b[seq:])&^0xf|uint16(min(k, 15)))
	msdu := int(binary.BigEndian.Uint16(d[sub[0]+12:]))
	f := Frame{Data: b, LinkType: s.agg.LinkType, Offset: offset, CI: s.agg.CI}
	f.CI.CaptureLength = len(b)
	f.CI.Length = max(len(b), s.a.Subframes+14+msdu+s.a.FCS)
	return f
}
