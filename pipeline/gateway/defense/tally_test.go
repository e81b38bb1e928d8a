package defense

import (
	"strings"
	"testing"
)

// TestTallyAgreesWithApply: Tally of Apply's own input and output gives
// Apply's cost, for every defence of the handmade capture, so a cost the
// real lab tallies is the emulator's cost by the same definitions.
func TestTallyAgreesWithApply(t *testing.T) {
	for _, text := range []string{"none", "pad:128", "pad:mtu", "cbr:10", "pad:mtu+cbr:10", "stp:600"} {
		t.Run(text, func(t *testing.T) {
			in, out, want := applyHandmade(t, text, 3)
			got, err := Tally(in, out)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("Tally: %+v\nApply: %+v", got, want)
			}
		})
	}
}

// TestTallyRefusesLostPackets: a defended view that lost, duplicated or
// invented a real packet is refused, naming what is wrong.
func TestTallyRefusesLostPackets(t *testing.T) {
	in := handmade(t)
	lost := append([]Packet(nil), in[:3]...)
	dup := append(append([]Packet(nil), in...), in[1])
	alien := append([]Packet(nil), in...)
	alien[2].LAN = 99
	for name, c := range map[string]struct {
		undefended, defended []Packet
		want                 string
	}{
		"lost":             {in, lost, "missing from the defended one"},
		"duplicated":       {in, dup, "holds fewer times"},
		"invented":         {in, alien, "does not hold"},
		"dummy undefended": {append([]Packet{{LAN: -1}}, in...), in, "real packets only"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Tally(c.undefended, c.defended)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
		})
	}
}
