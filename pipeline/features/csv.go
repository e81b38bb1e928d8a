package features

import (
	"bufio"
	"fmt"
	"io"
	"strconv"

	"github.com/homemole/homemole/schemas"
)

// CSVHeader names the columns CSVWriter writes, in order.
const CSVHeader = "ts_ns,dport,proto_bits,direction,frame_len,interval_s,ttl,ip_len,transport,tcp_flags,tcp_window,tcp_options_len,payload_len"

// csvBufferSize lets a row cost a copy, not a write call: a row is at most
// about 110 bytes, so one write carries several hundred of them.
const csvBufferSize = 64 << 10

// CSVWriter writes packet records as CSV rows, one per packet, under the
// CSVHeader row, for people and tools that check features by eye or against
// a dissector. A field is empty where the header it comes from does not
// exist: dport without TCP or UDP (and in later fragments), ttl, ip_len,
// transport and payload_len without IP, tcp_* without a TCP header. Numbers
// are decimal; proto_bits is the seed's 7-character string; direction is
// 1 outbound, 0 inbound, -1 local; interval_s is exact to the nanosecond.
//
// Rows are buffered: call Flush when done. Not safe for concurrent use.
type CSVWriter struct {
	w    *bufio.Writer
	row  []byte
	rows uint64
}

// NewCSVWriter returns a writer whose output starts with the header row, so
// that even a capture without packets yields a well-formed file.
func NewCSVWriter(w io.Writer) *CSVWriter {
	c := &CSVWriter{w: bufio.NewWriterSize(w, csvBufferSize), row: make([]byte, 0, 128)}
	// bufio keeps the header until the first flush, so no error can show yet.
	c.w.WriteString(CSVHeader + "\n")
	return c
}

// Write appends the row of p. Its signature fits capture.Read's callback.
func (c *CSVWriter) Write(p *schemas.Packet) error {
	c.row = AppendCSVRow(c.row[:0], p)
	if _, err := c.w.Write(c.row); err != nil {
		return fmt.Errorf("write CSV row %d: %w", c.rows+1, err)
	}
	c.rows++
	return nil
}

// Rows is the number of packet rows written, the header not counted.
func (c *CSVWriter) Rows() uint64 { return c.rows }

// Flush writes out what is buffered.
func (c *CSVWriter) Flush() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("write CSV after %d rows: %w", c.rows, err)
	}
	return nil
}

// appendGroup appends the fields of one header, comma-separated; a packet
// without that header (!present) gets as many empty fields.
func appendGroup(b []byte, present bool, fields ...uint64) []byte {
	for i, v := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		if present {
			b = strconv.AppendUint(b, v, 10)
		}
	}
	return b
}

// AppendCSVRow appends the CSV row of p, newline included, to b.
func AppendCSVRow(b []byte, p *schemas.Packet) []byte {
	isIP := p.ProtoBits&schemas.ProtoIP != 0
	hasPort := p.DPort != schemas.NoPort
	// A later TCP fragment keeps the TCP bit but carries no TCP header; the
	// port tells the two apart.
	hasTCP := p.ProtoBits&schemas.ProtoTCP != 0 && hasPort

	b = strconv.AppendInt(b, p.TsNs, 10)
	b = append(b, ',')
	if hasPort {
		b = strconv.AppendUint(b, uint64(p.DPort), 10)
	}
	b = append(b, ',')
	b = appendBits(b, p.ProtoBits)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(p.Direction), 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(p.FrameLen), 10)
	b = append(b, ',')
	b = appendSeconds(b, p.IntervalNs)
	b = append(b, ',')
	b = appendGroup(b, isIP, uint64(p.TTL), uint64(p.IPLen), uint64(p.Transport))
	b = append(b, ',')
	b = appendGroup(b, hasTCP, uint64(p.TCPFlags), uint64(p.TCPWindow), uint64(p.TCPOptionsLen))
	b = append(b, ',')
	if isIP {
		b = strconv.AppendUint(b, uint64(p.PayloadLen), 10)
	}
	return append(b, '\n')
}

// appendBits writes the seed's 7-character form without the allocation of
// schemas.ProtoBitsString; a test holds the two to the same output.
func appendBits(b []byte, bits uint8) []byte {
	for i := 6; i >= 0; i-- {
		b = append(b, '0'+(bits>>i)&1)
	}
	return b
}

// appendSeconds writes ns as decimal seconds from integers, so the value is
// exact (a float64 would round gaps of a long capture) and trailing zeros
// of the fraction are dropped: 26645000 ns is 0.026645.
func appendSeconds(b []byte, ns int64) []byte {
	u := uint64(ns)
	if ns < 0 {
		// IntervalNs is never negative; should that change, the sign shows
		// instead of a wrapped-around gap. The negation in uint64 also holds
		// for the smallest int64.
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/1e9, 10)
	frac := u % 1e9
	if frac == 0 {
		return b
	}
	var digits [9]byte
	for i := 8; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := 9
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}
