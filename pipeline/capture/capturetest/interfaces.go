package capturetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/capture"
)

// OnInterface is a frame to write into a capture of several interfaces,
// on the interface numbered Iface.
type OnInterface struct {
	capture.Frame
	Iface int
}

// Iface is an interface of a capture of several: its name, and its link
// type (0 is Ethernet).
type Iface struct {
	Name string
	Link layers.LinkType
}

// Ethernet names Ethernet interfaces.
func Ethernet(names ...string) []Iface {
	var out []Iface
	for _, n := range names {
		out = append(out, Iface{Name: n, Link: layers.LinkTypeEthernet})
	}
	return out
}

// Interfaces writes frames into one pcapng file of the interfaces as
// dumpcap writes a capture of several: each interface's
// frames in batches, a batch written when it is a flush period old, so
// the file mixes the interfaces out of time order by up to that period.
// frames is sorted into the file's order.
func Interfaces(tb testing.TB, ifaces []Iface, frames []OnInterface, flush time.Duration) []byte {
	tb.Helper()
	var buf bytes.Buffer
	desc := func(i Iface) pcapgo.NgInterface {
		return pcapgo.NgInterface{Name: i.Name, LinkType: i.Link, SnapLength: 262144, TimestampResolution: 9}
	}
	w, err := pcapgo.NewNgWriterInterface(&buf, desc(ifaces[0]), pcapgo.NgWriterOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, i := range ifaces[1:] {
		if _, err := w.AddInterface(desc(i)); err != nil {
			tb.Fatal(err)
		}
	}
	written := func(fr OnInterface) time.Time {
		return fr.CI.Timestamp.Truncate(flush).Add(flush + time.Duration(fr.Iface))
	}
	slices.SortStableFunc(frames, func(a, b OnInterface) int { return written(a).Compare(written(b)) })
	for _, fr := range frames {
		ci := fr.CI
		ci.InterfaceIndex = fr.Iface
		if err := w.WritePacket(ci, fr.Data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}
