package capture

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// sentinelDir holds the IoT Sentinel captures (31 device folders of
// Setup-*.pcap files); the tests read them in place and never copy them
// anywhere but t.TempDir().
const sentinelDir = "../../../shared/data/iot-sentinel-dev"

var sentinelHome = features.HomeConfig{
	LANNets:    []netip.Prefix{netip.MustParsePrefix("10.10.10.0/24")},
	GatewayMAC: schemas.MAC{0x00, 0xb5, 0x6d, 0x06, 0x08, 0xba},
}

func sentinelFiles(tb testing.TB) []string {
	tb.Helper()
	sentineldata.Need(tb)
	files, err := filepath.Glob(filepath.Join(sentinelDir, "*", "Setup-*.pcap"))
	if err != nil || len(files) == 0 {
		tb.Skipf("IoT Sentinel captures not available under %s", sentinelDir)
	}
	return files
}

// smallSentinel is a real capture of a few hundred packets.
func smallSentinel(tb testing.TB) string {
	tb.Helper()
	sentineldata.Need(tb)
	path := filepath.Join(sentinelDir, "TP-LinkPlugHS100", "Setup-A-1-STA.pcap")
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("capture not available: %v", err)
	}
	return path
}

// smallSentinelRaw is smallSentinel's capture as its bytes and as the
// frames a plain read gives, for the tests that rewrite it and want the
// same frames back.
func smallSentinelRaw(tb testing.TB) ([]byte, []frame) {
	tb.Helper()
	path := smallSentinel(tb)
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return raw, openAll(tb, path)
}

type frame struct {
	data []byte
	ci   gopacket.CaptureInfo
	link features.LinkType
}

func readAll(t testing.TB, src Source) []frame {
	t.Helper()
	var out []frame
	for {
		f, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("after %d frames: %v", len(out), err)
		}
		if f.Offset != uint64(len(out)) {
			t.Fatalf("frame %d has Offset %d", len(out), f.Offset)
		}
		out = append(out, frame{append([]byte(nil), f.Data...), f.CI, f.LinkType})
	}
}

// drain reads src to its end and counts the frames before the error that
// ended it (io.EOF for a clean end).
func drain(src Source) (int, error) {
	for n := 0; ; n++ {
		if _, err := src.Next(); err != nil {
			return n, err
		}
	}
}

func openAll(t testing.TB, path string) []frame {
	t.Helper()
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	return readAll(t, src)
}

// readWithPcapgo is the reference: gopacket's own pcap reader.
func readWithPcapgo(t testing.TB, path string) []frame {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []frame
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, frame{data, ci, features.LinkType(r.LinkType())})
	}
}

func sameFrames(t *testing.T, what string, got, want []frame) {
	t.Helper()
	if len(got) != len(want) {
		for i := range min(len(got), len(want)) {
			if !bytes.Equal(got[i].data, want[i].data) {
				t.Errorf("%s: first difference at frame %d:\n% x\nwant\n% x", what, i, got[i].data, want[i].data)
				break
			}
		}
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !bytes.Equal(g.data, w.data) || !g.ci.Timestamp.Equal(w.ci.Timestamp) || g.ci.Length != w.ci.Length ||
			g.ci.CaptureLength != w.ci.CaptureLength || g.link != w.link {
			t.Fatalf("%s: frame %d differs:\n got ts %v len %d/%d link %d\nwant ts %v len %d/%d link %d",
				what, i, g.ci.Timestamp, g.ci.CaptureLength, g.ci.Length, g.link, w.ci.Timestamp, w.ci.CaptureLength, w.ci.Length, w.link)
		}
	}
}

// TestSentinelMatchesPcapgo reads every real capture with this package and
// with gopacket's reader and wants the same frames.
func TestSentinelMatchesPcapgo(t *testing.T) {
	files := sentinelFiles(t)
	if testing.Short() {
		files = files[:20]
	}
	for _, path := range files {
		sameFrames(t, path, openAll(t, path), readWithPcapgo(t, path))
	}
}

func TestReadFileSentinel(t *testing.T) {
	files := sentinelFiles(t)
	var total Stats
	bits := map[string]int{}
	for _, path := range files {
		var bytesSeen uint64
		st, err := ReadFile(context.Background(), path, sentinelHome, func(p *schemas.Packet) error {
			bytesSeen += uint64(p.FrameLen)
			bits[schemas.ProtoBitsString(p.ProtoBits)]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if st.DecodeErrors != 0 {
			t.Errorf("%s: %d decode errors, first: %v", path, st.DecodeErrors, st.FirstDecodeError)
		}
		if st.Packets == 0 || st.Bytes != bytesSeen || st.LastTs.Before(st.FirstTs) {
			t.Errorf("%s: implausible stats %+v (bytes passed on %d)", path, st, bytesSeen)
		}
		total.Packets += st.Packets
		total.Bytes += st.Bytes
	}
	if bits["1010010"] == 0 || bits["1101000"] == 0 {
		t.Errorf("no DNS or TLS packets among %d: %v", total.Packets, bits)
	}
	t.Logf("%d files, %d packets, %d bytes", len(files), total.Packets, total.Bytes)
}

// TestReadAll: the packets of a capture at once are those ReadFile hands
// out one at a time, in order, each a copy of its own; a file that is not
// there is an error naming it.
func TestReadAll(t *testing.T) {
	path := sentinelFiles(t)[0]
	var want []schemas.Packet
	if _, err := ReadFile(context.Background(), path, sentinelHome, func(p *schemas.Packet) error {
		want = append(want, *p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAll(context.Background(), path, sentinelHome)
	if err != nil || len(want) == 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: %d packets (err %v), ReadFile handed out %d", path, len(got), err, len(want))
	}
	missing := filepath.Join(t.TempDir(), "none.pcap")
	if _, err := ReadAll(context.Background(), missing, sentinelHome); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing file: %v, want an error naming it", err)
	}
}

// TestByteOrdersAndResolutions rewrites a real capture in the four pcap
// flavours and wants the same frames back from each.
func TestByteOrdersAndResolutions(t *testing.T) {
	raw, want := smallSentinelRaw(t)
	for _, v := range []struct {
		name string
		big  bool
		nano bool
	}{{"little-endian micro", false, false}, {"big-endian micro", true, false}, {"little-endian nano", false, true}, {"big-endian nano", true, true}} {
		t.Run(v.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.pcap")
			if err := os.WriteFile(p, recodePcap(t, raw, v.big, v.nano), 0o644); err != nil {
				t.Fatal(err)
			}
			sameFrames(t, v.name, openAll(t, p), want)
		})
	}
}

// recodePcap rewrites a little-endian microsecond pcap.
func recodePcap(t *testing.T, in []byte, big, nano bool) []byte {
	var order binary.ByteOrder = binary.LittleEndian
	if big {
		order = binary.BigEndian
	}
	le := binary.LittleEndian
	if le.Uint32(in[0:4]) != 0xa1b2c3d4 {
		t.Fatal("test capture is not little-endian microsecond pcap")
	}
	out := make([]byte, 24, len(in))
	magic := uint32(0xa1b2c3d4)
	if nano {
		magic = 0xa1b23c4d
	}
	order.PutUint32(out[0:4], magic)
	order.PutUint16(out[4:6], le.Uint16(in[4:6]))
	order.PutUint16(out[6:8], le.Uint16(in[6:8]))
	for i := 8; i < 24; i += 4 {
		order.PutUint32(out[i:], le.Uint32(in[i:]))
	}
	for off := 24; off < len(in); {
		var h [16]byte
		frac := le.Uint32(in[off+4:])
		if nano {
			frac *= 1000
		}
		order.PutUint32(h[0:], le.Uint32(in[off:]))
		order.PutUint32(h[4:], frac)
		order.PutUint32(h[8:], le.Uint32(in[off+8:]))
		order.PutUint32(h[12:], le.Uint32(in[off+12:]))
		n := int(le.Uint32(in[off+8:]))
		out = append(append(out, h[:]...), in[off+16:off+16+n]...)
		off += 16 + n
	}
	return out
}

// recordOffsets returns the byte offset of every record of a pcap.
func recordOffsets(raw []byte) []int {
	var offs []int
	for off := 24; off+16 <= len(raw); {
		offs = append(offs, off)
		off += 16 + int(binary.LittleEndian.Uint32(raw[off+8:]))
	}
	return offs
}

func TestTruncatedCapture(t *testing.T) {
	raw, all := smallSentinelRaw(t)
	offs := recordOffsets(raw)
	k := len(offs) / 2
	for _, cut := range []struct {
		name string
		at   int
	}{
		{"inside the packet data", offs[k] + 16 + int(binary.LittleEndian.Uint32(raw[offs[k]+8:]))/2},
		{"inside the record header", offs[k] + 7},
		{"right after the record header", offs[k] + 16},
	} {
		t.Run(cut.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cut.pcap")
			if err := os.WriteFile(p, raw[:cut.at], 0o644); err != nil {
				t.Fatal(err)
			}
			var got []schemas.Packet
			st, err := ReadFile(context.Background(), p, sentinelHome, func(p *schemas.Packet) error {
				got = append(got, *p)
				return nil
			})
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("ReadFile error = %v, want ErrTruncated", err)
			}
			msg := err.Error()
			for _, want := range []string{p, fmt.Sprintf("truncated after packet %d", k), "the packets before it were read", fmt.Sprintf("byte offset %d", cut.at)} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if st.Packets != uint64(k) || len(got) != k {
				t.Fatalf("read %d packets (%d passed on) before the cut, want %d", st.Packets, len(got), k)
			}
			if !st.LastTs.Equal(all[k-1].ci.Timestamp) || got[k-1].FrameLen != uint32(all[k-1].ci.Length) {
				t.Errorf("last packet before the cut is not packet %d", k-1)
			}
			// The error is sticky: the source does not resynchronise on garbage.
			src, _ := OpenFile(p)
			defer src.Close()
			for {
				if _, err := src.Next(); err != nil {
					if _, err2 := src.Next(); err2 == nil || err2.Error() != err.Error() {
						t.Errorf("second Next after failure = %v, want %v again", err2, err)
					}
					break
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	real := smallSentinel(t)
	raw, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	offs := recordOffsets(raw)
	hugeCap := append([]byte(nil), raw...)
	binary.LittleEndian.PutUint32(hugeCap[offs[3]+8:], 0xfffffff0)
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	badVersion := append([]byte(nil), raw[:24]...)
	binary.LittleEndian.PutUint16(badVersion[4:], 3)

	tests := []struct {
		name     string
		data     []byte
		wantOpen error
		wantRead error
		mention  []string
	}{
		{"empty file", nil, ErrUnknownFormat, nil, []string{"is empty", "pcap", "pcapng"}},
		{"three bytes", []byte{0xd4, 0xc3, 0xb2}, ErrUnknownFormat, nil, []string{"3 bytes"}},
		{"garbage", garbage, ErrUnknownFormat, nil, []string{"starts with", "want a pcap file"}},
		{"text file", []byte("this is not a capture\n"), ErrUnknownFormat, nil, []string{"74 68 69 73"}},
		{"modified pcap", []byte{0x34, 0xcd, 0xb2, 0xa1, 2, 0, 4, 0}, ErrUnknownFormat, nil, []string{"editcap"}},
		{"pcap header cut short", raw[:20], ErrTruncated, nil, []string{"file header"}},
		{"pcap version 3", badVersion, ErrCorrupt, nil, []string{"version 3"}},
		{"pcap with no packets", raw[:24], nil, nil, nil},
		{"corrupt captured length", hugeCap, nil, ErrCorrupt, []string{"packet 3", fmt.Sprintf("byte offset %d", offs[3]), "4294967280 captured bytes", "the 3 packets before it were read"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "in.cap")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			st, err := ReadFile(context.Background(), p, sentinelHome, func(*schemas.Packet) error { return nil })
			want := tc.wantOpen
			if want == nil {
				want = tc.wantRead
			}
			if want == nil {
				if err != nil || st.Packets != 0 {
					t.Fatalf("ReadFile = %+v, %v; want no packets, no error", st, err)
				}
				return
			}
			if !errors.Is(err, want) {
				t.Fatalf("ReadFile error = %v, want %v", err, want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if tc.wantRead != nil && st.Packets != 3 {
				t.Errorf("read %d packets before the corrupt record, want 3", st.Packets)
			}
		})
	}
	if _, err := OpenFile(filepath.Join(t.TempDir(), "missing.pcap")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFile of a missing file: %v", err)
	}
}

// TestCompressedCaptures: a capture compressed with gzip (tcpdump -z
// gzip), zstd or lz4 reads as the capture; one cut short reads up to the
// cut and says it is truncated; xz and bzip2 are refused with the command
// that decompresses them.
func TestCompressedCaptures(t *testing.T) {
	// A capture of 450 KB, so that two thirds of it compressed hold
	// whole blocks of each format.
	path := filepath.Join(sentinelDir, "HueSwitch", "Setup-A-1-STA.pcap")
	sentinelFiles(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := openAll(t, path)
	for name, z := range compressedAll(t, raw, "", lz4.BlockSizeOption(lz4.Block64Kb)) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "x.pcap."+name)
			if err := os.WriteFile(p, z, 0o644); err != nil {
				t.Fatal(err)
			}
			sameFrames(t, name, openAll(t, p), want)

			cut := filepath.Join(dir, "cut.pcap."+name)
			if err := os.WriteFile(cut, z[:len(z)*2/3], 0o644); err != nil {
				t.Fatal(err)
			}
			src, err := OpenFile(cut)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			n, err := drain(src)
			if !errors.Is(err, ErrTruncated) || n == 0 || n >= len(want) {
				t.Errorf("a %s capture cut at two thirds: %d of %d frames, then %v; want some frames, then ErrTruncated", name, n, len(want), err)
			}
			// Cut before its first block ends: nothing to read, and said so.
			if err := os.WriteFile(cut, z[:12], 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenFile(cut); !errors.Is(err, ErrTruncated) {
				t.Errorf("a %s capture of its first 12 bytes: %v, want ErrTruncated", name, err)
			}
		})
	}
	for name, magic := range map[string][]byte{"xz": {0xfd, '7', 'z', 'X', 'Z', 0}, "bzip2": []byte("BZh91AY&SY")} {
		p := filepath.Join(t.TempDir(), "x.pcap."+name)
		if err := os.WriteFile(p, append(magic, make([]byte, 64)...), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := OpenFile(p)
		if !errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), "compressed with "+name) || !strings.Contains(err.Error(), "decompress it first") {
			t.Errorf("%s capture: %v; want it refused, saying how to decompress it", name, err)
		}
	}
}

// udpPcap is a pcap of n Ethernet frames of UDP, frame i of size(i)
// bytes.
func udpPcap(t *testing.T, n int, size func(i int) int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	for i := range n {
		f := make([]byte, size(i))
		copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0})
		copy(f[14:], ipv4Packet([4]byte{192, 168, 1, 5}, [4]byte{198, 51, 100, 9}, 64))
		binary.BigEndian.PutUint16(f[16:], uint16(len(f)-14))
		binary.BigEndian.PutUint16(f[38:], uint16(len(f)-34))
		for j := 42; j < len(f); j++ {
			f[j] = byte(i + j) // some for the compressors to do
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f), Length: len(f)}, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// compressedAll is raw compressed by gzip (with name in its header, if
// any), zstd and lz4 (with lz4opts), by the name of each.
func compressedAll(t *testing.T, raw []byte, name string, lz4opts ...lz4.Option) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	write := func(format string, zw io.WriteCloser, buf *bytes.Buffer) {
		if _, err := zw.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		out[format] = buf.Bytes()
	}
	var gz, zs, l4 bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Name = name
	write("gzip", gw, &gz)
	zw, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	write("zstd", zw, &zs)
	lw := lz4.NewWriter(&l4)
	if err := lw.Apply(lz4opts...); err != nil {
		t.Fatal(err)
	}
	write("lz4", lw, &l4)
	return out
}

// TestCompressedCutAnywhere: a compressed capture cut at any length is
// read up to the cut (the frames read never fewer for a longer cut) and
// said to be truncated: not read as a whole capture with its end missing
// (lz4 cut where a field starts: after its magic number, where a block
// ends, before its checksum), nor refused as no capture at all (gzip cut
// inside its header, the file's name in it included). Only a cut inside
// the magic number itself leaves nothing to tell the file by.
func TestCompressedCutAnywhere(t *testing.T) {
	raw := udpPcap(t, 60, func(i int) int { return 60 + i%50 })
	// gzip FILE writes the file's name in its header; block checksums
	// are lz4's field before the next block.
	for name, z := range compressedAll(t, raw, "capture.pcap", lz4.BlockSizeOption(lz4.Block64Kb), lz4.BlockChecksumOption(true)) {
		t.Run(name, func(t *testing.T) {
			c, _ := compressionOf([4]byte(z))
			last := 0
			for cut := 1; cut <= len(z); cut++ {
				src, err := NewReader(bytes.NewReader(z[:cut]), name)
				n := 0
				if err == nil {
					n, err = drain(src)
				}
				switch {
				case cut == len(z):
					if !errors.Is(err, io.EOF) || n != 60 {
						t.Errorf("whole: %d of 60 frames, then %v", n, err)
					}
				case cut < len(c.magic):
					if !errors.Is(err, ErrUnknownFormat) {
						t.Errorf("cut inside its magic number, at %d bytes: %v, want ErrUnknownFormat", cut, err)
					}
				case !errors.Is(err, ErrTruncated):
					t.Errorf("cut at %d of %d bytes: %d of 60 frames, then %v; want ErrTruncated", cut, len(z), n, err)
				}
				if n < last {
					t.Errorf("cut at %d bytes: %d frames read, %d at a shorter cut", cut, n, last)
				}
				last = n
			}
		})
	}
}

// TestLZ4CutAtBlockEnd: lz4 writes a capture in blocks (64 KiB to 4 MiB
// of it each, lz4 -B4 to -B7); one still being written (tcpdump -w - |
// lz4) or copied part-way stops where a block ends, and where that is
// where a packet record ends, the decompressed bytes look like a whole
// capture. It is read up to the cut and said to be truncated. So is one
// cut between its end mark and the checksum after it. With block
// checksums (lz4 -BX) or without.
func TestLZ4CutAtBlockEnd(t *testing.T) {
	// Records of 1024 bytes after the 24-byte file header, the first 24
	// bytes shorter: the first 64 KiB block ends with record 64.
	raw := udpPcap(t, 201, func(i int) int {
		if i == 0 {
			return 1024 - 16 - 24
		}
		return 1024 - 16
	})
	for _, blockSums := range []bool{false, true} {
		var buf bytes.Buffer
		zw := lz4.NewWriter(&buf)
		if err := zw.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ChecksumOption(true), lz4.BlockChecksumOption(blockSums)); err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		z := buf.Bytes()
		// The frame header: magic(4) FLG BD HC, the content size (8)
		// where FLG says; then the first block: size(4) data, a checksum
		// (4) where FLG says.
		at := 7
		if z[4]&0x08 != 0 {
			at += 8
		}
		blockEnd := at + 4 + int(binary.LittleEndian.Uint32(z[at:])&^(1<<31))
		if z[4]&0x10 != 0 {
			blockEnd += 4
		}
		for _, c := range []struct {
			name   string
			cut    int
			frames int
		}{
			{"where its first block ends", blockEnd, 64},
			{"before its end mark", len(z) - 8, 201},
			{"before its content checksum", len(z) - 4, 201},
		} {
			src, err := NewReader(bytes.NewReader(z[:c.cut]), "cut.pcap.lz4")
			if err != nil {
				t.Fatal(err)
			}
			if n, err := drain(src); n != c.frames || !errors.Is(err, ErrTruncated) {
				t.Errorf("block checksums %v: cut %s (%d of %d bytes): %d frames, then %v; want %d, then ErrTruncated", blockSums, c.name, c.cut, len(z), n, err, c.frames)
			}
		}
	}
}

// TestPcapngFromNgWriter writes real frames with gopacket's pcapng writer
// and reads them back.
func TestPcapngFromNgWriter(t *testing.T) {
	want := openAll(t, smallSentinel(t))
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range want {
		if err := w.WritePacket(f.ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteInterfaceStats(0, pcapgo.NgInterfaceStatistics{PacketsReceived: uint64(len(want))}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.pcapng")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sameFrames(t, "pcapng", openAll(t, p), want)

	st, err := ReadFile(context.Background(), p, sentinelHome, func(*schemas.Packet) error { return nil })
	if err != nil || st.DecodeErrors != 0 || st.Packets != uint64(len(want)) {
		t.Fatalf("ReadFile = %+v, %v", st, err)
	}

	// Cut it in the middle of a block.
	cut := filepath.Join(t.TempDir(), "cut.pcapng")
	if err := os.WriteFile(cut, buf.Bytes()[:buf.Len()/2], 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = ReadFile(context.Background(), cut, sentinelHome, func(*schemas.Packet) error { return nil })
	if !errors.Is(err, ErrTruncated) || st.Packets == 0 || st.Packets >= uint64(len(want)) {
		t.Fatalf("truncated pcapng: %+v, %v", st, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("truncated after packet %d", st.Packets)) {
		t.Errorf("error %q does not say where the capture ends", err)
	}
}

// TestPcapngMixedLinkTypes has one interface per link type; every packet
// must come back with its own interface's link type and decode.
func TestPcapngMixedLinkTypes(t *testing.T) {
	frames := openAll(t, smallSentinel(t))
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{Name: "lan", LinkType: layers.LinkTypeEthernet, SnapLength: 65535, TimestampResolution: 6}, pcapgo.NgWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rawID, err := w.AddInterface(pcapgo.NgInterface{Name: "tun0", LinkType: layers.LinkTypeRaw, SnapLength: 65535, TimestampResolution: 9})
	if err != nil {
		t.Fatal(err)
	}
	sllID, err := w.AddInterface(pcapgo.NgInterface{Name: "any", LinkType: layers.LinkTypeLinuxSLL, SnapLength: 65535, TimestampResolution: 9})
	if err != nil {
		t.Fatal(err)
	}
	var want []features.LinkType
	ipFrames := 0
	for _, f := range frames {
		ci := f.ci
		ci.InterfaceIndex = 0
		data := f.data
		if binary.BigEndian.Uint16(f.data[12:14]) == 0x0800 {
			ipFrames++
			switch ipFrames % 3 {
			case 1: // the same packet as a tunnel interface sees it
				ci.InterfaceIndex, data = rawID, f.data[14:]
			case 2: // and as a cooked capture does
				sll := make([]byte, 16, 16+len(f.data)-14)
				binary.BigEndian.PutUint16(sll[4:], 6)
				copy(sll[6:], f.data[6:12])
				copy(sll[14:], f.data[12:14])
				ci.InterfaceIndex, data = sllID, append(sll, f.data[14:]...)
			}
			ci.CaptureLength, ci.Length = len(data), len(data)
		}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
		want = append(want, []features.LinkType{features.LinkTypeEthernet, features.LinkTypeRaw, features.LinkTypeLinuxSLL}[ci.InterfaceIndex])
	}
	w.Flush()
	src, err := NewReader(bytes.NewReader(buf.Bytes()), "mixed.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, src)
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].link != want[i] || !got[i].ci.Timestamp.Equal(frames[i].ci.Timestamp) {
			t.Fatalf("frame %d: link %d ts %v, want %d %v", i, got[i].link, got[i].ci.Timestamp, want[i], frames[i].ci.Timestamp)
		}
	}
	src, _ = NewReader(bytes.NewReader(buf.Bytes()), "mixed.pcapng")
	st, err := Read(context.Background(), src, sentinelHome, func(*schemas.Packet) error { return nil })
	if err != nil || st.DecodeErrors != 0 || st.Packets != uint64(len(frames)) {
		t.Fatalf("Read = %+v, %v", st, err)
	}
}

// ngBuilder writes pcapng blocks by hand, for what gopacket's writer cannot
// produce: other byte orders, resolutions, offsets and block types.
type ngBuilder struct {
	order binary.ByteOrder
	buf   bytes.Buffer
}

func (b *ngBuilder) block(typ uint32, body []byte) {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	var h [8]byte
	b.order.PutUint32(h[0:], typ)
	b.order.PutUint32(h[4:], uint32(12+len(body)))
	b.buf.Write(h[:])
	b.buf.Write(body)
	b.buf.Write(h[4:8])
}

func (b *ngBuilder) section() {
	body := make([]byte, 16)
	b.order.PutUint32(body[0:], 0x1a2b3c4d)
	b.order.PutUint16(body[4:], 1)
	binary.LittleEndian.PutUint64(body[8:], ^uint64(0)) // length unknown
	b.block(0x0a0d0d0a, body)
}

func (b *ngBuilder) option(code uint16, v []byte) []byte {
	o := make([]byte, 4, 4+len(v)+3)
	b.order.PutUint16(o[0:], code)
	b.order.PutUint16(o[2:], uint16(len(v)))
	o = append(o, v...)
	for len(o)%4 != 0 {
		o = append(o, 0)
	}
	return o
}

func (b *ngBuilder) iface(link uint16, snap uint32, opts ...[]byte) {
	body := make([]byte, 8)
	b.order.PutUint16(body[0:], link)
	b.order.PutUint32(body[4:], snap)
	for _, o := range opts {
		body = append(body, o...)
	}
	if len(opts) > 0 {
		body = append(body, 0, 0, 0, 0)
	}
	b.block(1, body)
}

func (b *ngBuilder) epb(iface uint32, ts uint64, data []byte, wire uint32) {
	body := make([]byte, 20)
	b.order.PutUint32(body[0:], iface)
	b.order.PutUint32(body[4:], uint32(ts>>32))
	b.order.PutUint32(body[8:], uint32(ts))
	b.order.PutUint32(body[12:], uint32(len(data)))
	b.order.PutUint32(body[16:], wire)
	b.block(6, append(body, data...))
}

func TestPcapngBlocks(t *testing.T) {
	frames := openAll(t, smallSentinel(t))
	pkt := frames[10].data
	ip := pkt[14:]
	ts := time.Date(2024, 3, 1, 8, 0, 0, 123_456_789, time.UTC)

	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(order.String(), func(t *testing.T) {
			b := &ngBuilder{order: order}
			b.section()
			b.block(0xbad, []byte("a block type this reader does not know"))
			b.iface(1, 0) // microseconds by default
			b.iface(101, 0, b.option(9, []byte{0x80 | 30}), b.option(14, binary.BigEndian.AppendUint64(nil, 0)[:8]))
			b.block(4, []byte{1, 0, 4, 0, 10, 0, 0, 1}) // a name resolution block, skipped
			b.epb(0, uint64(ts.UnixMicro()), pkt, uint32(len(pkt)))
			b.epb(1, uint64(ts.Unix())<<30|uint64(ts.Nanosecond())<<30/1e9, ip, 1500)
			// Obsolete packet block on interface 0.
			pb := make([]byte, 20)
			order.PutUint16(pb[0:], 0)
			order.PutUint32(pb[4:], uint32(uint64(ts.UnixMicro())>>32))
			order.PutUint32(pb[8:], uint32(ts.UnixMicro()))
			order.PutUint32(pb[12:], uint32(len(pkt)))
			order.PutUint32(pb[16:], uint32(len(pkt)))
			b.block(2, append(pb, pkt...))
			// Simple packet block: no timestamp, first interface.
			spb := make([]byte, 4)
			order.PutUint32(spb, uint32(len(pkt)))
			b.block(3, append(spb, pkt...))
			// A second section, in the other byte order, restarts interface numbers.
			other := &ngBuilder{order: binary.LittleEndian}
			if order == binary.LittleEndian {
				other.order = binary.BigEndian
			}
			other.section()
			offset := make([]byte, 8)
			other.order.PutUint64(offset, 3600)
			other.iface(228, 0, other.option(9, []byte{3}), other.option(14, offset)) // milliseconds, +1 h
			other.epb(0, uint64(ts.UnixMilli()), ip, uint32(len(ip)))
			b.buf.Write(other.buf.Bytes())

			src, err := NewReader(bytes.NewReader(b.buf.Bytes()), "blocks.pcapng")
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, src)
			want := []struct {
				link features.LinkType
				ts   time.Time
				n    int
				wire int
			}{
				{features.LinkTypeEthernet, ts.Truncate(time.Microsecond), len(pkt), len(pkt)},
				{features.LinkTypeRaw, ts, len(ip), 1500},
				{features.LinkTypeEthernet, ts.Truncate(time.Microsecond), len(pkt), len(pkt)},
				{features.LinkTypeEthernet, time.Unix(0, 0), len(pkt), len(pkt)},
				{features.LinkTypeIPv4, ts.Truncate(time.Millisecond).Add(time.Hour), len(ip), len(ip)},
			}
			if len(got) != len(want) {
				t.Fatalf("%d frames, want %d", len(got), len(want))
			}
			for i, w := range want {
				g := got[i]
				// 2^-30 s units are a little coarser than nanoseconds.
				if g.link != w.link || g.ci.Timestamp.Sub(w.ts).Abs() > time.Nanosecond || len(g.data) != w.n || g.ci.Length != w.wire {
					t.Errorf("frame %d: link %d ts %v len %d/%d; want %d %v %d/%d", i, g.link, g.ci.Timestamp, len(g.data), g.ci.Length, w.link, w.ts, w.n, w.wire)
				}
			}
		})
	}
}

func TestPcapngCorrupt(t *testing.T) {
	pkt := openAll(t, smallSentinel(t))[5].data
	good := func() *ngBuilder {
		b := &ngBuilder{order: binary.LittleEndian}
		b.section()
		b.iface(1, 0)
		b.epb(0, 1, pkt, uint32(len(pkt)))
		return b
	}
	tests := []struct {
		name    string
		mutate  func(b *ngBuilder) []byte
		mention string
	}{
		{"trailing length differs", func(b *ngBuilder) []byte {
			d := b.buf.Bytes()
			d[len(d)-1] ^= 0xff
			return d
		}, "ends with"},
		{"length not a multiple of 4", func(b *ngBuilder) []byte {
			b.buf.Write([]byte{6, 0, 0, 0, 13, 0, 0, 0})
			return b.buf.Bytes()
		}, "multiple of 4"},
		{"packet on an undescribed interface", func(b *ngBuilder) []byte {
			b.epb(7, 1, pkt, uint32(len(pkt)))
			return b.buf.Bytes()
		}, "interface 7"},
		{"captured length beyond the block", func(b *ngBuilder) []byte {
			b.epb(0, 1, pkt, uint32(len(pkt)))
			d := b.buf.Bytes()
			pad := (4 - len(pkt)%4) % 4
			binary.LittleEndian.PutUint32(d[len(d)-4-pad-len(pkt)-8:], 1<<20)
			return d
		}, "claims"},
		{"resolution finer than convertible", func(b *ngBuilder) []byte {
			b.iface(1, 0, b.option(9, []byte{30}))
			b.epb(1, 1, pkt, uint32(len(pkt)))
			return b.buf.Bytes()
		}, "10^-30"},
		{"huge block", func(b *ngBuilder) []byte {
			b.buf.Write([]byte{6, 0, 0, 0, 0, 0, 0, 0x7f})
			return b.buf.Bytes()
		}, "claims"},
		{"bad byte-order magic", func(b *ngBuilder) []byte {
			b.buf.Write([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 1, 2, 3, 4})
			return b.buf.Bytes()
		}, "byte-order magic"},
		{"pcapng version 2", func(b *ngBuilder) []byte {
			o := &ngBuilder{order: binary.LittleEndian}
			o.section()
			d := o.buf.Bytes()
			d[12] = 2
			b.buf.Write(d)
			return b.buf.Bytes()
		}, "version 2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewReader(bytes.NewReader(tc.mutate(good())), "bad.pcapng")
			if err != nil {
				t.Fatal(err)
			}
			n, err := drain(src)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), "bad.pcapng") {
				t.Fatalf("after %d frames: error %v, want ErrCorrupt mentioning %q", n, err, tc.mention)
			}
			if n != 1 && tc.name != "trailing length differs" {
				t.Errorf("read %d frames before the corrupt block, want 1", n)
			}
		})
	}
}

func TestReadStops(t *testing.T) {
	path := smallSentinel(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ReadFile(ctx, path, sentinelHome, func(*schemas.Packet) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadFile with a cancelled context: %v", err)
	}
	stop := errors.New("enough")
	n := 0
	st, err := ReadFile(context.Background(), path, sentinelHome, func(*schemas.Packet) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 || st.Packets < 5 {
		t.Errorf("ReadFile with a failing callback: %+v after %d calls, %v", st, n, err)
	}
}

func TestDecodeErrorsAreCounted(t *testing.T) {
	frames := openAll(t, smallSentinel(t))
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	for i, f := range frames {
		data := f.data
		if i%10 == 0 {
			data = data[:10] // too short for Ethernet
		}
		ci := f.ci
		ci.CaptureLength = len(data)
		w.WritePacket(ci, data)
	}
	src, _ := NewReader(bytes.NewReader(buf.Bytes()), "mem.pcap")
	passed := 0
	st, err := Read(context.Background(), src, sentinelHome, func(*schemas.Packet) error { passed++; return nil })
	wantErrs := (len(frames) + 9) / 10
	if err != nil || st.Packets != uint64(len(frames)) || st.DecodeErrors != uint64(wantErrs) || passed != len(frames)-wantErrs {
		t.Fatalf("Read = %+v, %v; passed %d", st, err, passed)
	}
	if !errors.Is(st.FirstDecodeError, features.ErrMalformed) {
		t.Errorf("FirstDecodeError = %v", st.FirstDecodeError)
	}
}

// TestPcapngTimestampsBeyondNanoseconds: a pcapng writer that wrote
// nanoseconds without saying so (no if_tsresol: microseconds) gives times
// near the year 56302, which a record's nanoseconds cannot hold. Its
// frames are counted as decode errors, the first named with the option
// to fix, rather than passed on with their times wrapped to 1938; frames
// of the file's other interface, whose times are right, are read.
func TestPcapngTimestampsBeyondNanoseconds(t *testing.T) {
	frames := openAll(t, smallSentinel(t))
	pkt := frames[10].data
	ts := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	b := &ngBuilder{order: binary.LittleEndian}
	b.section()
	b.iface(1, 0) // no if_tsresol: microseconds
	b.iface(1, 0, b.option(ngOptTSResol, []byte{9}))
	b.epb(0, uint64(ts.UnixNano()), pkt, uint32(len(pkt)))
	b.epb(1, uint64(ts.UnixNano()), pkt, uint32(len(pkt)))
	b.epb(0, uint64(ts.UnixNano())+1_000_000_000, pkt, uint32(len(pkt)))
	src, err := NewReader(bytes.NewReader(b.buf.Bytes()), "ns.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	st, err := Read(context.Background(), src, sentinelHome, func(p *schemas.Packet) error {
		got = append(got, p.TsNs)
		return nil
	})
	if err != nil || st.Packets != 3 || st.DecodeErrors != 2 {
		t.Fatalf("Read = %+v, %v; want 3 frames, 2 decode errors", st, err)
	}
	if !errors.Is(st.FirstDecodeError, features.ErrMalformed) || !strings.Contains(st.FirstDecodeError.Error(), "if_tsresol") {
		t.Errorf("FirstDecodeError = %v, want it malformed and naming if_tsresol", st.FirstDecodeError)
	}
	if len(got) != 1 || got[0] != ts.UnixNano() {
		t.Errorf("records at %v, want one at %d", got, ts.UnixNano())
	}
	// Nor is the capture ordered by a first frame's wrapped time.
	path := filepath.Join(t.TempDir(), "ns.pcapng")
	if err := os.WriteFile(path, b.buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if ns, ok := FirstPacketTime(path); ok {
		t.Errorf("FirstPacketTime = %d, true; want no time", ns)
	}
}

// TestWiFiCaptureFile: a monitor-mode capture file (radiotap) of the same
// traffic reads to the records of the Ethernet capture, and its beacons are
// counted apart (NotPackets), neither passed on nor taken for errors.
func TestWiFiCaptureFile(t *testing.T) {
	gw := sentinelHome.GatewayMAC
	var eth, air bytes.Buffer
	we, wa := pcapgo.NewWriter(&eth), pcapgo.NewWriter(&air)
	we.WriteFileHeader(65535, layers.LinkTypeEthernet)
	wa.WriteFileHeader(65535, layers.LinkType(features.LinkTypeRadiotap))
	radiotap := []byte{0, 0, 8, 0, 0, 0, 0, 0} // no fields present
	beacons, data := 0, 0
	for i, f := range openAll(t, smallSentinel(t)) {
		if len(f.data) < 14 || binary.BigEndian.Uint16(f.data[12:14]) < 0x600 {
			continue
		}
		dst, src := f.data[0:6], f.data[6:12]
		// To the access point (ToDS: BSSID, source, destination), or from
		// it (FromDS: destination, BSSID, source); then LLC/SNAP.
		hdr := append([]byte{0x08, 0x01, 0, 0}, append(append(gw[:], src...), dst...)...)
		if schemas.MAC(src) == gw {
			hdr = append([]byte{0x08, 0x02, 0, 0}, append(append(append([]byte{}, dst...), gw[:]...), src...)...)
		}
		frame := slices.Concat(radiotap, hdr, []byte{byte(i << 4), byte(i >> 4)}, []byte{0xaa, 0xaa, 0x03, 0, 0, 0}, f.data[12:])
		we.WritePacket(f.ci, f.data)
		ci := f.ci
		ci.CaptureLength, ci.Length = len(frame), len(frame)
		wa.WritePacket(ci, frame)
		data++
		if i%5 == 0 {
			beacon := slices.Concat(radiotap, []byte{0x80, 0, 0, 0}, bytes.Repeat([]byte{0xff}, 6), gw[:], gw[:], []byte{0, 0}, make([]byte, 30))
			ci.CaptureLength, ci.Length = len(beacon), len(beacon)
			wa.WritePacket(ci, beacon)
			beacons++
		}
	}
	want, _ := readRecords(t, eth.Bytes(), "wired.pcap")
	got, st := readRecords(t, air.Bytes(), "monitor.pcap")
	if data == 0 || st.Packets != uint64(data+beacons) || st.NotPackets != uint64(beacons) || st.DecodeErrors != 0 || st.Decoded() != uint64(data) {
		t.Errorf("monitor capture: %+v; want %d frames, %d beacons apart", st, data+beacons, beacons)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%d records from the monitor capture differ from the %d of the wired one", len(got), len(want))
	}
}

// readRecords reads a capture's packet records as every command does,
// each with its frame's index zeroed: two captures of the same packets
// number their frames apart (a Wi-Fi capture's beacons and
// retransmissions, a cooked capture's copies).
func readRecords(t *testing.T, raw []byte, name string) ([]schemas.Packet, Stats) {
	t.Helper()
	src, err := NewReader(bytes.NewReader(raw), name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	var pkts []schemas.Packet
	st, err := Read(context.Background(), src, sentinelHome, func(p *schemas.Packet) error {
		q := *p
		q.Offset = 0
		pkts = append(pkts, q)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if cs, ok := CookedStatsOf(src); ok && st.OtherViews != cs.LeftOut() {
		t.Errorf("%s: Read counts %d left out, the view %d", name, st.OtherViews, cs.LeftOut())
	}
	return pkts, st
}

// TestFrameCheckSequence: a capture that says it kept each frame's FCS
// (pcap: the P bit and the length in the link-type field; pcapng:
// if_fcslen) reads as the same capture without it.
func TestFrameCheckSequence(t *testing.T) {
	raw, frames := smallSentinelRaw(t)
	records := func(raw []byte, name string) []schemas.Packet {
		src, err := NewReader(bytes.NewReader(raw), name)
		if err != nil {
			t.Fatal(err)
		}
		var pkts []schemas.Packet
		if _, err := Read(context.Background(), src, sentinelHome, func(p *schemas.Packet) error {
			pkts = append(pkts, *p)
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return pkts
	}
	want := records(raw, "plain")
	fcs := []byte{0xde, 0xad, 0xbe, 0xef}

	var pc bytes.Buffer
	w := pcapgo.NewWriter(&pc)
	w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	for _, f := range frames {
		ci := f.ci
		ci.CaptureLength, ci.Length = len(f.data)+4, ci.Length+4
		w.WritePacket(ci, append(bytes.Clone(f.data), fcs...))
	}
	withP := bytes.Clone(pc.Bytes())
	binary.LittleEndian.PutUint32(withP[20:], 1|1<<26|2<<28) // Ethernet, P, 2 words
	if got := records(withP, "pcap-fcs"); !reflect.DeepEqual(got, want) {
		t.Errorf("pcap with the FCS bits: records differ from the capture without FCS")
	}
	// Without the P bit the length is unknown: the frames are read whole.
	if got := records(pc.Bytes(), "pcap-no-p"); reflect.DeepEqual(got, want) || len(got) != len(want) || got[0].FrameLen != want[0].FrameLen+4 {
		t.Errorf("pcap without the P bit: the FCS should stay part of the frame")
	}

	b := &ngBuilder{order: binary.LittleEndian}
	b.section()
	b.iface(1, 0, b.option(ngOptTSResol, []byte{9}), b.option(ngOptFCSLen, []byte{4}))
	for _, f := range frames {
		b.epb(0, uint64(f.ci.Timestamp.UnixNano()), append(bytes.Clone(f.data), fcs...), uint32(f.ci.Length+4))
	}
	if got := records(b.buf.Bytes(), "pcapng-fcs"); !reflect.DeepEqual(got, want) {
		t.Errorf("pcapng with if_fcslen 4: records differ from the capture without FCS")
	}
}
