package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// TestReadsInAnyChunking reads captures through readers that hand out a
// few bytes at a time, so block and record boundaries fall everywhere in
// the input's buffer, and wants the same frames as a plain read.
func TestReadsInAnyChunking(t *testing.T) {
	raw, want := smallSentinelRaw(t)
	var ng bytes.Buffer
	w, _ := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	for _, f := range want {
		w.WritePacket(f.ci, f.data)
	}
	w.Flush()
	for name, data := range map[string][]byte{"pcap": raw, "pcapng": ng.Bytes()} {
		for how, r := range map[string]io.Reader{
			"one byte at a time": iotest.OneByteReader(bytes.NewReader(data)),
			"half of each read":  iotest.HalfReader(bytes.NewReader(data)),
			"EOF with the data":  iotest.DataErrReader(bytes.NewReader(data)),
		} {
			t.Run(name+" "+how, func(t *testing.T) {
				src, err := NewReader(r, name)
				if err != nil {
					t.Fatal(err)
				}
				sameFrames(t, how, readAll(t, src), want)
			})
		}
	}
}

// TestBlocksLargerThanTheBuffer reads packets and skipped blocks several
// times the size of one read.
func TestBlocksLargerThanTheBuffer(t *testing.T) {
	big := make([]byte, 3*readBufferSize+5)
	for i := range big {
		big[i] = byte(i * 7)
	}
	small := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}

	b := &ngBuilder{order: binary.LittleEndian}
	b.section()
	b.iface(1, 0)
	b.epb(0, 1, small, uint32(len(small)))
	b.block(0xbad, big) // skipped across several reads
	b.epb(0, 2, big, uint32(len(big)))
	b.epb(0, 3, small, uint32(len(small)))

	var pcap bytes.Buffer
	pw := pcapgo.NewWriter(&pcap)
	pw.WriteFileHeader(maxFrameLen, layers.LinkTypeEthernet)
	for i, d := range [][]byte{small, big, small} {
		pw.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(int64(i), 0), CaptureLength: len(d), Length: len(d)}, d)
	}

	for name, data := range map[string][]byte{"pcapng": b.buf.Bytes(), "pcap": pcap.Bytes()} {
		t.Run(name, func(t *testing.T) {
			src, err := NewReader(iotest.HalfReader(bytes.NewReader(data)), name)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, src)
			if len(got) != 3 || !bytes.Equal(got[0].data, small) || !bytes.Equal(got[1].data, big) || !bytes.Equal(got[2].data, small) {
				t.Fatalf("%d frames; sizes or bytes differ from what was written", len(got))
			}
		})
	}
}

// TestFrameDataIsReadOnlyToTheEnd checks that appending to a frame's Data
// cannot overwrite the next frame, which lies right after it in the buffer.
func TestFrameDataIsReadOnlyToTheEnd(t *testing.T) {
	path := smallSentinel(t)
	want := openAll(t, path)
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := src.Next()
	if err != nil {
		t.Fatal(err)
	}
	_ = append(f.Data, make([]byte, 64)...)
	f, err = src.Next()
	if err != nil || !bytes.Equal(f.Data, want[1].data) {
		t.Fatalf("second frame changed after appending to the first: %v", err)
	}
}

type stuckReader struct{}

func (stuckReader) Read([]byte) (int, error) { return 0, nil }

func TestReadErrors(t *testing.T) {
	raw, err := os.ReadFile(smallSentinel(t))
	if err != nil {
		t.Fatal(err)
	}
	// A reader that fails part-way: the packets before the failure come
	// through, then an error naming the file, the packet and the offset.
	boom := errors.New("device gone")
	src, err := NewReader(io.MultiReader(bytes.NewReader(raw[:len(raw)/2]), iotest.ErrReader(boom)), "flaky.pcap")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err = src.Next(); err != nil {
			break
		}
		n++
	}
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "flaky.pcap") || !strings.Contains(err.Error(), "byte offset") || n == 0 {
		t.Errorf("after %d frames: %v", n, err)
	}

	// A reader that returns nothing, forever, must not hang the reader.
	if _, err := NewReader(stuckReader{}, "stuck.pcap"); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("reader without progress: %v", err)
	}
}
