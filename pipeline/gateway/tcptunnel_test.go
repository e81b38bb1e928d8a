package gateway

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
)

// TestVPNOverTCP checks the emulated OpenVPN-over-TCP stream on its own
// terms: each direction's segments continue each other's sequence numbers,
// the stream cuts into records whose lengths are the size function of the
// LAN packets the ground truth names, records share segments and span
// them, and checksums hold.
func TestVPNOverTCP(t *testing.T) {
	path, home := generated(t)
	lan := capturetest.Frames(t, path)
	for _, c := range []Cipher{AES256GCM, AES256CBC} {
		wanBytes, truthBytes, st := emulate(t, path, home, Config{Mode: VPN, Cipher: c, VPNTCP: true})
		truth := readTruth(t, truthBytes)
		src, err := capture.NewReader(bytes.NewReader(wanBytes), "wan")
		if err != nil {
			t.Fatal(err)
		}
		type dir struct {
			next    uint32
			started bool
			stream  []byte
			// firsts: per segment, its offset in the stream and truth.
			offs  []int
			truth []int
		}
		var dirs [2]dir
		for n := 0; ; n++ {
			fr, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			h, err := ParseHeader(fr.LinkType, fr.Data)
			if err != nil {
				t.Fatal(err)
			}
			if h.Proto != ProtoTCP || (h.DstPort != 1194 && h.SrcPort != 1194) {
				t.Fatalf("%s: WAN packet %d is not TCP to or from 1194", c, n)
			}
			ip := fr.Data[h.IPStart : h.IPStart+h.Len]
			var pseudo uint32
			for i := 12; i < 20; i += 2 {
				pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
			}
			if checksum(ip[:20], 0) != 0 || checksum(ip[20:], pseudo+ProtoTCP+uint32(len(ip)-20)) != 0 {
				t.Fatalf("%s: WAN packet %d: checksum wrong", c, n)
			}
			d := &dirs[0]
			if h.DstPort == 1194 {
				d = &dirs[1]
			}
			if d.started && h.Seq != d.next {
				t.Fatalf("%s: WAN packet %d: sequence %d, the stream is at %d", c, n, h.Seq, d.next)
			}
			payload := ip[40:]
			d.started, d.next = true, h.Seq+uint32(len(payload))
			d.offs, d.truth = append(d.offs, len(d.stream)), append(d.truth, truth[n])
			d.stream = append(d.stream, payload...)
		}
		shared, spanning, checked := 0, 0, 0
		for _, d := range dirs {
			// Record starts, and which segment each byte offset is in.
			starts := map[int]int{} // offset -> record size
			for off := 0; off < len(d.stream); {
				n := int(binary.BigEndian.Uint16(d.stream[off:]))
				starts[off] = n
				off += RecordLenSize + n
				if off > len(d.stream) {
					t.Fatalf("%s: the stream ends inside a record", c)
				}
			}
			for i, off := range d.offs {
				end := len(d.stream)
				if i+1 < len(d.offs) {
					end = d.offs[i+1]
				}
				inSeg := 0
				for o := range starts {
					if o >= off && o < end {
						inSeg++
					}
				}
				if inSeg > 1 {
					shared++
				}
				n, starts0 := starts[off]
				if !starts0 {
					spanning++
					continue
				}
				if d.truth[i] < 0 {
					continue // a ping's record
				}
				lf := lan[d.truth[i]]
				l, err := ParseHeader(lf.LinkType, lf.Data)
				if err != nil {
					t.Fatal(err)
				}
				if want := PayloadSize(c, l.Len); n != want {
					t.Fatalf("%s: record at %d holds %d bytes, the size function says %d for LAN packet %d", c, off, n, want, d.truth[i])
				}
				checked++
			}
		}
		t.Logf("%s: %d crossing, %d segments; %d hold more than one record, %d start inside a record; %d records checked against their LAN packet",
			c, st.Crossing, st.WANPackets, shared, spanning, checked)
		if shared == 0 || spanning == 0 || checked == 0 {
			t.Errorf("%s: the stream shows no coalescing (%d) or no split records (%d)", c, shared, spanning)
		}
	}
}
