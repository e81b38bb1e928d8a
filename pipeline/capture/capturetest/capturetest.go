// Package capturetest reads a test's capture files whole: the frames as
// they are, or the packets they decode to. Tests read small captures they
// made or that the project keeps, so failing the test on a bad frame is
// the right answer, and holding all of it in memory costs nothing.
package capturetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Open opens the capture at path, failing the test when it cannot; the
// caller closes it.
func Open(tb testing.TB, path string) capture.Source {
	tb.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return src
}

// Frames reads every frame of the capture at path, each with its own copy
// of the bytes (a Source reuses its buffer).
func Frames(tb testing.TB, path string) []capture.Frame {
	tb.Helper()
	src := Open(tb, path)
	defer src.Close()
	return All(tb, path, src)
}

// FramesOf is Frames for a capture a test holds in memory, named name.
func FramesOf(tb testing.TB, name string, data []byte) []capture.Frame {
	tb.Helper()
	src, err := capture.NewReader(bytes.NewReader(data), name)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	return All(tb, name, src)
}

// All reads src, named name, to its end, each frame with its own copy of
// the bytes; a read error fails the test.
func All(tb testing.TB, name string, src capture.Source) []capture.Frame {
	tb.Helper()
	var out []capture.Frame
	for {
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("%s after %d frames: %v", name, len(out), err)
		}
		fr.Data = bytes.Clone(fr.Data)
		out = append(out, fr)
	}
}

// Packets decodes every frame of the capture at path as a tap of home
// would; a frame the decoder rejects fails the test.
func Packets(tb testing.TB, path string, home features.HomeConfig) []schemas.Packet {
	tb.Helper()
	var out []schemas.Packet
	st, err := capture.ReadFile(context.Background(), path, home, func(p *schemas.Packet) error {
		out = append(out, *p)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if st.DecodeErrors > 0 {
		tb.Fatalf("%s: %d of %d frames do not decode, the first: %v", path, st.DecodeErrors, st.Packets, st.FirstDecodeError)
	}
	return out
}

// DeviceMAC is the device of GatewayAny's capture.
var DeviceMAC = schemas.MAC{2, 0, 0, 0, 0, 5}

// GatewayAny writes what a NAPT gateway's tcpdump -i any records of
// n UDP exchanges between a device and an internet host: each datagram on
// the LAN interface (2) and, translated, on the WAN (3): the device
// 192.168.1.5 (MAC 02:00:00:00:00:05) asks 198.51.100.9 from UDP port
// 40000+i and is answered. pcapgo cannot write link type 276, so the file
// is written here.
func GatewayAny(t testing.TB, n int) string {
	t.Helper()
	hdr := []byte{0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(hdr[20:], uint32(features.LinkTypeLinuxSLL2))
	out := hdr
	for _, x := range gatewayExchanges(n) {
		f := make([]byte, 20, 20+len(x.ip))
		binary.BigEndian.PutUint16(f[0:], 0x0800)
		binary.BigEndian.PutUint32(f[4:], x.ifindex)
		binary.BigEndian.PutUint16(f[8:], 1) // Ethernet
		f[10], f[11] = x.pkttype, 6
		copy(f[12:], x.src[:])
		f = append(f, x.ip...)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(x.ts.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(x.ts.Nanosecond()))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(f)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(f)))
		out = append(append(out, rec...), f...)
	}
	path := filepath.Join(t.TempDir(), "gw.pcap")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// GatewayInterfaces writes GatewayAny's exchanges as dumpcap records the
// gateway's LAN (br-lan) and WAN (eth1) interfaces into one pcapng file:
// whole Ethernet frames, nothing saying which interface is which side.
func GatewayInterfaces(t testing.TB, n int) string {
	t.Helper()
	var frames []OnInterface
	for _, x := range gatewayExchanges(n) {
		data := slices.Concat(x.dst[:], x.src[:], []byte{8, 0}, x.ip)
		f := capture.Frame{Data: data}
		f.CI.Timestamp, f.CI.CaptureLength, f.CI.Length = x.ts, len(data), len(data)
		frames = append(frames, OnInterface{Frame: f, Iface: int(x.ifindex) - 2})
	}
	path := filepath.Join(t.TempDir(), "gw.pcapng")
	if err := os.WriteFile(path, Interfaces(t, Ethernet("br-lan", "eth1"), frames, time.Millisecond), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// exchangeFrame is one frame of gatewayExchanges: the IP packet, the
// interface and way it crossed, its MACs.
type exchangeFrame struct {
	ifindex  uint32
	pkttype  byte // SLL's: 0 came in, 4 went out
	src, dst schemas.MAC
	ip       []byte
	ts       time.Time
}

// gatewayExchanges are GatewayAny's frames.
func gatewayExchanges(n int) []exchangeFrame {
	dev, gwLAN, gwWAN, isp := DeviceMAC, schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}, schemas.MAC{2, 0, 0, 0, 0, 3}
	udp := func(src, dst [4]byte, ttl uint8, sport, dport uint16) []byte {
		p := []byte{0x45, 0, 0, 36, 0, 0, 0x40, 0, ttl, 17, 0, 0}
		p = append(append(p, src[:]...), dst[:]...)
		p = binary.BigEndian.AppendUint16(p, sport)
		p = binary.BigEndian.AppendUint16(p, dport)
		return append(p, 0, 16, 0, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0)
	}
	devIP, wanIP, server := [4]byte{192, 168, 1, 5}, [4]byte{203, 0, 113, 2}, [4]byte{198, 51, 100, 9}
	t0 := time.Unix(1700000000, 0)
	var out []exchangeFrame
	for i := range n {
		port := uint16(40000 + i)
		for j, f := range []exchangeFrame{
			{2, 0, dev, gwLAN, udp(devIP, server, 64, port, 53), time.Time{}}, // in on the LAN
			{3, 4, gwWAN, isp, udp(wanIP, server, 63, port, 53), time.Time{}}, // out on the WAN
			{3, 0, isp, gwWAN, udp(server, wanIP, 50, 53, port), time.Time{}}, // the answer in on the WAN
			{2, 4, gwLAN, dev, udp(server, devIP, 49, 53, port), time.Time{}}, // out on the LAN
		} {
			f.ts = t0.Add(time.Duration(i)*time.Second + time.Duration(j)*time.Millisecond)
			out = append(out, f)
		}
	}
	return out
}
