package homecount

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/realhome/realhometest"
)

// TestHostsCountedOnLAN counts units host by host on the LAN, each home's
// model learned from the captures it did not draw on, by the whole capture
// and live, in IPv4 homes and in IPv6-only ones (the model still learned
// from the IPv4 captures). Types whose every
// capture shows keys no other type sends are counted exactly, an
// identical pair's units drawn from both folders; the kettles, whose LAN
// traffic after setup (DHCP, ARP, IGMP, EAPOL) no key tells from any
// other device's, are counted as nothing rather than guessed. An n that
// leaves fewer than two captures out of the home is refused.
func TestHostsCountedOnLAN(t *testing.T) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	if types := hc.Types(); len(types) != 27 || !slices.Contains(types, "EdimaxCam") || slices.Contains(types, "EdimaxCam1") {
		t.Fatalf("types %v: want IoT Sentinel's 27, the identical pairs one type each", types)
	}
	cfg := func(typ string, units ...int) HostsConfig {
		return HostsConfig{Type: typ, Units: units, Homes: 2, Others: 3, Duration: 100 * time.Second, Seed: 7, Dir: t.TempDir()}
	}
	for _, ipv6 := range []bool{false, true} {
		for _, typ := range []string{"Aria", "EdimaxCam", "WeMoSwitch", "Lightify"} {
			c := cfg(typ, 1, 4, 8)
			c.IPv6 = ipv6
			pts, err := hc.Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			windows, right := 0, 0
			for _, p := range pts {
				t.Logf("%s n=%d, IPv6 %v: counted %v of %v; live %d of %d windows", typ, p.N, ipv6, p.Count, p.Units, p.LiveRight, p.Windows)
				for i := range p.Count {
					if p.Units[i] < p.N || p.Count[i] != p.Units[i] {
						t.Errorf("%s, n = %d, IPv6 %v, home %d: counted %d of %d units, want every unit and no other host", typ, p.N, ipv6, i, p.Count[i], p.Units[i])
					}
				}
				windows += p.Windows
				right += p.LiveRight
			}
			// Live, each window 20 s late, the gateway found, not named.
			if windows == 0 || right*10 < windows*9 {
				t.Errorf("%s, IPv6 %v: live count right in %d of %d windows, want 90 %%", typ, ipv6, right, windows)
			}
		}
	}
	pts, err := hc.Run(context.Background(), cfg("SmarterCoffee", 2))
	if err != nil {
		t.Fatal(err)
	}
	// The two Smarter appliances send nothing but DHCP and IGMP, of the
	// lengths an ESP8266 gateway and bulb send too: what counts them is
	// the name their DHCP requests give, one for both ("ESP_07AEFB" and
	// "ESP_06D902", the unit's suffix cut), so they are one family.
	for i, c := range pts[0].Count {
		if c != pts[0].Units[i] || pts[0].Units[i] < 2 || !slices.Contains(pts[0].Counted[i], "iKettle2") {
			t.Errorf("kettles, home %d: counted %d of %d as %v, want every unit of the SmarterCoffee/iKettle2 family", i, c, pts[0].Units[i], pts[0].Counted[i])
		}
	}
	if _, err := hc.Run(context.Background(), cfg("Aria", 9)); err == nil {
		t.Error("n = 9 of Aria's 10 captures counted, want an error: two must stay out of the home")
	}
	if _, err := hc.Run(context.Background(), cfg("NoSuchType", 1)); err == nil {
		t.Error("a type without folders counted, want an error")
	}
}

// TestUnseenTypes leaves every IoT Sentinel type out of training in turn:
// each of its captures is asked once, and one counted as another type's
// unit is nearly always a sibling of its own vendor. When this was written
// 8 of 277 captures were counted as another vendor's (D-LinkCam as
// EdimaxCam, one HueBridge as D-LinkHomeHub); 5 % is a guard. Since DHCP
// host names are keys, Smarter's coffee machine and kettle, which name
// themselves alike, are counted as each other when left out, as the
// siblings of other vendors are.
func TestUnseenTypes(t *testing.T) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	un := hc.Unseen()
	counted, across := un.Totals()
	for k := range un.Counted {
		if truth, named, ok := strings.Cut(k, " -> "); !ok || truth == named {
			t.Errorf("counted %q: want a type counted as another", k)
		}
	}
	t.Logf("%d of %d captures counted as another type's unit, %d as another vendor's: %v", counted, un.Captures, across, un.Counted)
	if un.Captures != 277 || counted > un.Captures || across*20 > un.Captures {
		t.Errorf("%d of %d captures counted as another type's unit, %d as another vendor's: want all 277 asked, at most 5 %% across vendors", counted, un.Captures, across)
	}
}
