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
	return all(tb, path, src)
}

// FramesOf is Frames for a capture a test holds in memory, named name.
func FramesOf(tb testing.TB, name string, data []byte) []capture.Frame {
	tb.Helper()
	src, err := capture.NewReader(bytes.NewReader(data), name)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	return all(tb, name, src)
}

func all(tb testing.TB, name string, src capture.Source) []capture.Frame {
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
	dev, gwLAN, gwWAN, isp := DeviceMAC, schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}, schemas.MAC{2, 0, 0, 0, 0, 3}
	udp := func(src, dst [4]byte, ttl uint8, sport, dport uint16) []byte {
		p := []byte{0x45, 0, 0, 36, 0, 0, 0x40, 0, ttl, 17, 0, 0}
		p = append(append(p, src[:]...), dst[:]...)
		p = binary.BigEndian.AppendUint16(p, sport)
		p = binary.BigEndian.AppendUint16(p, dport)
		return append(p, 0, 16, 0, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0)
	}
	sll2 := func(ifindex uint32, pkttype byte, src schemas.MAC, payload []byte) []byte {
		b := make([]byte, 20, 20+len(payload))
		binary.BigEndian.PutUint16(b[0:], 0x0800)
		binary.BigEndian.PutUint32(b[4:], ifindex)
		binary.BigEndian.PutUint16(b[8:], 1) // Ethernet
		b[10], b[11] = pkttype, 6
		copy(b[12:], src[:])
		return append(b, payload...)
	}
	devIP, wanIP, server := [4]byte{192, 168, 1, 5}, [4]byte{203, 0, 113, 2}, [4]byte{198, 51, 100, 9}
	hdr := []byte{0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(hdr[20:], uint32(features.LinkTypeLinuxSLL2))
	out := hdr
	t0 := time.Unix(1700000000, 0)
	for i := range n {
		port := uint16(40000 + i)
		for j, f := range [][]byte{
			sll2(2, 0, dev, udp(devIP, server, 64, port, 53)),   // in on the LAN
			sll2(3, 4, gwWAN, udp(wanIP, server, 63, port, 53)), // out on the WAN
			sll2(3, 0, isp, udp(server, wanIP, 50, 53, port)),   // the answer in on the WAN
			sll2(2, 4, gwLAN, udp(server, devIP, 49, 53, port)), // out on the LAN
		} {
			ts := t0.Add(time.Duration(i)*time.Second + time.Duration(j)*time.Millisecond)
			rec := make([]byte, 16)
			binary.LittleEndian.PutUint32(rec[0:], uint32(ts.Unix()))
			binary.LittleEndian.PutUint32(rec[4:], uint32(ts.Nanosecond()))
			binary.LittleEndian.PutUint32(rec[8:], uint32(len(f)))
			binary.LittleEndian.PutUint32(rec[12:], uint32(len(f)))
			out = append(append(out, rec...), f...)
		}
	}
	path := filepath.Join(t.TempDir(), "gw.pcap")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
