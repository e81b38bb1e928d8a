// Package tcpflags sets a TCP header's flags from the letters tcpdump
// prints them with, so that the generator and the decoder's tests write a
// segment's flags the way a reader of a capture would ("SA", "PA", "FA").
package tcpflags

import (
	"strings"

	"github.com/google/gopacket/layers"
)

// Letters are the flags' letters, in the order of Set's fields.
const Letters = "SAPFRUECN"

// Set sets on t the flag of each letter of flags: S SYN, A ACK, P PSH,
// F FIN, R RST, U URG, E ECE, C CWR, N NS. Other letters are ignored.
func Set(t *layers.TCP, flags string) {
	fields := [len(Letters)]*bool{&t.SYN, &t.ACK, &t.PSH, &t.FIN, &t.RST, &t.URG, &t.ECE, &t.CWR, &t.NS}
	for _, f := range flags {
		if i := strings.IndexRune(Letters, f); i >= 0 {
			*fields[i] = true
		}
	}
}
