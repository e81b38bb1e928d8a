package tcpflags

import (
	"testing"

	"github.com/google/gopacket/layers"
)

func TestSet(t *testing.T) {
	var got layers.TCP
	Set(&got, "SA")
	if !got.SYN || !got.ACK || got.PSH || got.FIN || got.RST {
		t.Errorf(`Set("SA") = %+v, want SYN and ACK alone`, got)
	}
	var all layers.TCP
	Set(&all, Letters+"x")
	want := layers.TCP{SYN: true, ACK: true, PSH: true, FIN: true, RST: true, URG: true, ECE: true, CWR: true, NS: true}
	if all.SYN != want.SYN || all.ACK != want.ACK || all.PSH != want.PSH || all.FIN != want.FIN || all.RST != want.RST ||
		all.URG != want.URG || all.ECE != want.ECE || all.CWR != want.CWR || all.NS != want.NS {
		t.Errorf("Set(%q) = %+v, want every flag", Letters+"x", all)
	}
}
