// Package seqprofile implements the sequence profiles of Ma et al.,
// "Pinpointing Hidden IoT Devices via Spatial-temporal Traffic
// Fingerprinting" (seeds/003): packets become header-only vectors, a
// device's traffic is cut into bursts, the longest common subsequences of
// pairs of bursts (under a weighted, capped distance) become sequence
// profiles (SPs) with the fields the two bursts disagree on abstracted to
// Any, the most important SPs are kept, and a Matcher counts, per time bin,
// how often each SP occurs in a mixed stream.
//
// The time arrays the Matcher produces are what the CNNs of pipeline/detect
// read. Nothing here needs libtorch.
package seqprofile

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/homemole/homemole/schemas"
)

// The fields of a packet vector, in the paper's order (its Table III): IP
// TTL, IP total length, transport protocol, TCP flags, TCP window, TCP
// options and payload length. A UDP packet has zero TCP fields.
const (
	FieldTTL = iota
	FieldIPLen
	FieldProto
	FieldFlags
	FieldWindow
	FieldOptions
	FieldPayload
	NumFields
)

var fieldNames = [NumFields]string{"ttl", "iplen", "proto", "flags", "window", "options", "payload"}

// FieldName names field k for reports.
func FieldName(k int) string { return fieldNames[k] }

// Any marks an abstracted field of an SP element: it matches every value.
// Packet fields are never negative, so -1 cannot collide with a value.
const Any int32 = -1

// Vector is a packet vector (PV), or, inside an SP, an abstracted one whose
// fields may be Any.
type Vector [NumFields]int32

// VectorOf takes the sequence-profile fields the capture agent decoded.
// TCP options enter as their length in bytes: that is what the decoder
// keeps, and the length already tells the stacks' option sets apart (MSS
// alone, MSS+SACK+timestamps+window scale, timestamps on every segment).
func VectorOf(p *schemas.Packet) Vector {
	return Vector{
		FieldTTL:     int32(p.TTL),
		FieldIPLen:   int32(p.IPLen),
		FieldProto:   int32(p.Transport),
		FieldFlags:   int32(p.TCPFlags),
		FieldWindow:  int32(p.TCPWindow),
		FieldOptions: int32(p.TCPOptionsLen),
		FieldPayload: int32(min(p.PayloadLen, math.MaxInt32)),
	}
}

// NonAny counts the fields that are not Any: the δ sum of eq. 6.
func (v Vector) NonAny() int {
	n := 0
	for _, x := range v {
		if x != Any {
			n++
		}
	}
	return n
}

// Matches reports whether the packet vector p has every non-Any value of
// the SP element v.
func (v Vector) Matches(p Vector) bool {
	for k, x := range v {
		if x != Any && x != p[k] {
			return false
		}
	}
	return true
}

func (v Vector) String() string {
	var b strings.Builder
	b.WriteByte('<')
	for k, x := range v {
		if k > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(fieldNames[k])
		b.WriteByte('=')
		if x == Any {
			b.WriteByte('*')
		} else {
			b.WriteString(strconv.Itoa(int(x)))
		}
	}
	b.WriteByte('>')
	return b.String()
}

// FieldMetric is how eq. 1 compares one field: Exact fields cost Weight
// when they differ (eq. 2; the paper's text swaps its two cases, which
// would make equal fields the costly ones), digital fields cost
// Weight*|a-b| (eq. 3); either way capped at Max.
type FieldMetric struct {
	Exact  bool
	Weight float64
	Max    float64
}

// Distance holds eq. 1's weights and caps and the threshold d of eq. 4.
// Packets of different transport protocols are infinitely far apart, as
// the paper says, whatever FieldProto's metric.
type Distance struct {
	Fields    [NumFields]FieldMetric
	Threshold float64
}

// DefaultDistance is our choice for the paper's Tables IV and V, whose
// values are not in the text. With d = 8:
//
//   - TTL, digital, weight 1, cap 8: a gateway's NAPT takes one hop off
//     outbound packets and a path change moves inbound ones by a hop or
//     two, which must not break a match; different stacks (64, 128, 255)
//     reach the cap, and the cap alone equals d, so they never match.
//   - TCP flags, exact, cost 8 = d: a SYN, a bare ACK and a PSH-ACK are
//     different acts, never "the same packet".
//   - payload length, digital, 0.1 per byte, cap 6: TLS records of one
//     message type vary by tens of bytes (padding, counters, JSON values);
//     up to about 20 bytes apart two packets still match with room for a
//     small window or length difference, 60 bytes or more are different
//     messages unless everything else agrees exactly.
//   - IP total length, digital, 0.02 per byte, cap 2: it mostly repeats the
//     payload length, so it only adds the header difference (options).
//   - TCP options length, exact, cost 3: timestamps on or off is a stack
//     trait, but a SYN's longer options are already told by its flags.
//   - TCP window, digital, 1/512 per unit, cap 2: windows drift as buffers
//     fill; only a different stack's window (2920 vs 29200) reaches the cap.
//
// TestDistanceEffectOnDevData prints what d = 4, 8 and 12 and other payload
// and window weights do to the IoT Sentinel captures (distinct SPs, length
// and share of Any fields of the kept ones, coverage of the device's own
// packets). The effect is small: most fields of a device's repeated
// bursts agree exactly, so d mostly decides how many near-misses join an
// SP with their differing fields as Any (3.4 % of fields at d = 8).
func DefaultDistance() Distance {
	var d Distance
	d.Threshold = 8
	d.Fields[FieldTTL] = FieldMetric{Weight: 1, Max: 8}
	d.Fields[FieldIPLen] = FieldMetric{Weight: 0.02, Max: 2}
	// Protocols never match whatever this says (see Of); zero keeps the
	// configuration finite, so it travels as JSON inside a model.
	d.Fields[FieldProto] = FieldMetric{Exact: true}
	d.Fields[FieldFlags] = FieldMetric{Exact: true, Weight: 8, Max: 8}
	d.Fields[FieldWindow] = FieldMetric{Weight: 1.0 / 512, Max: 2}
	d.Fields[FieldOptions] = FieldMetric{Exact: true, Weight: 3, Max: 3}
	d.Fields[FieldPayload] = FieldMetric{Weight: 0.1, Max: 6}
	return d
}

// Validate says what is wrong with a hand-made Distance.
func (d Distance) Validate() error {
	if !(d.Threshold > 0) {
		return fmt.Errorf("sequence-profile distance: threshold d = %v, want > 0 (default 8)", d.Threshold)
	}
	for k, f := range d.Fields {
		if !(f.Weight >= 0 && f.Max >= 0) || math.IsInf(f.Weight, 0) || math.IsInf(f.Max, 0) {
			return fmt.Errorf("sequence-profile distance: field %s has weight %v, cap %v; want both finite and >= 0", fieldNames[k], f.Weight, f.Max)
		}
	}
	return nil
}

// Of is eq. 1: the distance between two packet vectors.
func (d *Distance) Of(a, b Vector) float64 {
	if a[FieldProto] != b[FieldProto] {
		return math.Inf(1)
	}
	sum := 0.0
	for k := range NumFields {
		// Any (an SP's abstracted field) is as close as can be to every
		// value: packet vectors never hold it, so only an SP compared with
		// a burst, when an interaction's SP is folded (eq. 4), meets it.
		if k == FieldProto || a[k] == b[k] || a[k] == Any || b[k] == Any {
			continue
		}
		f := &d.Fields[k]
		var c float64
		if f.Exact {
			c = f.Weight
		} else {
			c = f.Weight * math.Abs(float64(a[k])-float64(b[k]))
		}
		sum += min(c, f.Max)
	}
	return sum
}

// Abstract is eq. 5: the fields a and b agree on, Any elsewhere.
func Abstract(a, b Vector) Vector {
	var v Vector
	for k := range NumFields {
		if a[k] == b[k] {
			v[k] = a[k]
		} else {
			v[k] = Any
		}
	}
	return v
}
