package features

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

func TestCSVWriter(t *testing.T) {
	synOpts := tcp(50000, 443, "S")
	synOpts.Options = []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
	}
	laterFrag := ip4(devIP, cloudIP, layers.IPProtocolTCP)
	laterFrag.FragOffset, laterFrag.Flags = 185, 0
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: devMAC, SourceProtAddress: devIP, DstHwAddress: make([]byte, 6), DstProtAddress: gwIP}
	frames := []struct {
		data []byte
		at   time.Duration
		want string
	}{
		{build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), synOpts),
			0, "1700000000000000000,443,1100000,1,62,0,64,48,6,2,64240,8,0"},
		{build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(40000, 53), dnsQuery(t)),
			26645 * time.Microsecond, "1700000000026645000,53,1010010,1,76,0.026645,64,62,17,,,,34"},
		{build(t, eth(devMAC, bcastMAC, layers.EthernetTypeARP), arp),
			time.Second + 26645*time.Microsecond, "1700000001026645000,,0000001,-1,60,1,,,,,,,"},
		{build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolICMPv4), gopacket.Payload(make([]byte, 8))),
			time.Second + 26645*time.Microsecond + 7, "1700000001026645007,,1000001,0,60,0.000000007,64,28,1,,,,8"},
		{build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), laterFrag, gopacket.Payload(make([]byte, 100))),
			3 * time.Second, "1700000003000000000,,1100000,1,134,1.973354993,64,120,6,,,,100"},
	}
	var out bytes.Buffer
	w := NewCSVWriter(&out)
	d := NewDecoder(lanOnly)
	var p schemas.Packet
	want := []string{CSVHeader}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1_700_000_000, 0).Add(f.at), CaptureLength: len(f.data), Length: len(f.data)}
		if err := d.Decode(LinkTypeEthernet, f.data, ci, uint64(i), &p); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if err := w.Write(&p); err != nil {
			t.Fatal(err)
		}
		want = append(want, f.want)
	}
	if out.Len() != 0 {
		t.Errorf("%d bytes written before Flush: rows should be buffered", out.Len())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != len(want) || w.Rows() != uint64(len(frames)) {
		t.Fatalf("%d lines (Rows %d), want %d:\n%s", len(got), w.Rows(), len(want), out.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, got[i], want[i])
		}
	}
}

func TestCSVWriterWithoutPackets(t *testing.T) {
	var out bytes.Buffer
	if err := NewCSVWriter(&out).Flush(); err != nil || out.String() != CSVHeader+"\n" {
		t.Errorf("empty capture gave %q, %v; want the header row alone", out.String(), err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestCSVWriterErrors(t *testing.T) {
	w := NewCSVWriter(failingWriter{})
	p := schemas.Packet{ProtoBits: schemas.ProtoOther, DPort: schemas.NoPort}
	var err error
	// The buffer takes rows until it is full; the error shows on the write
	// that overflows it or, at the latest, on Flush.
	for i := 0; i < 10_000 && err == nil; i++ {
		err = w.Write(&p)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "CSV") {
		t.Errorf("writing to a failing writer: %v", err)
	}
}

func TestAppendBitsMatchesProtoBitsString(t *testing.T) {
	for bits := range 128 {
		if got, want := string(appendBits(nil, uint8(bits))), schemas.ProtoBitsString(uint8(bits)); got != want {
			t.Errorf("bits %#x: %s, want %s", bits, got, want)
		}
	}
}

func TestAppendSeconds(t *testing.T) {
	for ns, want := range map[int64]string{
		0: "0", 1: "0.000000001", 10: "0.00000001", 999_999_999: "0.999999999", 1e9: "1", 1_500_000_000: "1.5",
		26_645_000: "0.026645", 86_400_000_000_123: "86400.000000123", -1_500_000_000: "-1.5",
		-9223372036854775808: "-9223372036.854775808",
	} {
		got := string(appendSeconds(nil, ns))
		if got != want {
			t.Errorf("%d ns: %q, want %q", ns, got, want)
		}
		if back, err := parseSeconds(got); err != nil || back != ns {
			t.Errorf("%q reads back as %d ns, %v", got, back, err)
		}
	}
}

// parseSeconds reads appendSeconds' output back without a float, exactly.
func parseSeconds(s string) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	sec, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	if len(frac) > 9 {
		return 0, errors.New("finer than a nanosecond")
	}
	u, err := strconv.ParseUint(sec+frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil {
		return 0, err
	}
	if neg {
		u = -u
	}
	return int64(u), nil
}

// checkCSVRow holds the row of a decoded packet to the record it came from:
// thirteen fields, every present field equal to the record's value, and
// empty exactly where the header does not exist.
func checkCSVRow(p *schemas.Packet) string {
	row := string(AppendCSVRow(nil, p))
	if !strings.HasSuffix(row, "\n") || strings.Count(row, "\n") != 1 {
		return "row is not one line: " + strconv.Quote(row)
	}
	c := strings.Split(strings.TrimSuffix(row, "\n"), ",")
	if len(c) != 13 {
		return "row has " + strconv.Itoa(len(c)) + " fields: " + row
	}
	isIP := p.ProtoBits&schemas.ProtoIP != 0
	hasTCP := p.ProtoBits&schemas.ProtoTCP != 0 && p.DPort != schemas.NoPort
	num := func(v uint64, present bool) string {
		if !present {
			return ""
		}
		return strconv.FormatUint(v, 10)
	}
	want := []string{
		strconv.FormatInt(p.TsNs, 10), num(uint64(p.DPort), p.DPort != schemas.NoPort), schemas.ProtoBitsString(p.ProtoBits),
		strconv.Itoa(int(p.Direction)), num(uint64(p.FrameLen), true), string(appendSeconds(nil, p.IntervalNs)),
		num(uint64(p.TTL), isIP), num(uint64(p.IPLen), isIP), num(uint64(p.Transport), isIP),
		num(uint64(p.TCPFlags), hasTCP), num(uint64(p.TCPWindow), hasTCP), num(uint64(p.TCPOptionsLen), hasTCP),
		num(uint64(p.PayloadLen), isIP),
	}
	for i := range want {
		if c[i] != want[i] {
			return "field " + strings.Split(CSVHeader, ",")[i] + " is " + strconv.Quote(c[i]) + ", want " + strconv.Quote(want[i]) + ": " + row
		}
	}
	return ""
}
