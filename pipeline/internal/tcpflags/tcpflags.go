// Package tcpflags sets a TCP header's flags from the letters tcpdump
// prints them with, so that the generator and the decoder's tests write a
// segment's flags the way a reader of a capture would ("SA", "PA", "FA").
package tcpflags

import "github.com/google/gopacket/layers"

// Set sets on t the flag of each letter of flags: S SYN, A ACK, P PSH,
// F FIN, R RST, U URG, E ECE, C CWR, N NS. Other letters are ignored.
func Set(t *layers.TCP, flags string) {
	for _, f := range flags {
		switch f {
		case 'S':
			t.SYN = true
		case 'A':
			t.ACK = true
		case 'P':
			t.PSH = true
		case 'F':
			t.FIN = true
		case 'R':
			t.RST = true
		case 'U':
			t.URG = true
		case 'E':
			t.ECE = true
		case 'C':
			t.CWR = true
		case 'N':
			t.NS = true
		}
	}
}
