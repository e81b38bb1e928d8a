package evaluate

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestServerFamilies: types join where a server is a habit of both; one
// capture's server, and a server most types reach, join nothing.
func TestServerFamilies(t *testing.T) {
	srv := func(s string) Server {
		ap := netip.MustParseAddrPort(s)
		return Server{Addr: ap.Addr(), Transport: 6, Port: int32(ap.Port())}
	}
	caps := func(sets ...[]string) []map[Server]bool {
		var out []map[Server]bool
		for _, set := range sets {
			m := map[Server]bool{}
			for _, s := range set {
				m[srv(s)] = true
			}
			out = append(out, m)
		}
		return out
	}
	cloud, cdn, infra := "52.28.38.154:443", "54.231.168.224:80", "8.8.4.4:443"
	captures := map[string][]map[Server]bool{
		// Two of three captures reach the cloud: a habit.
		"D-LinkSensor": caps([]string{cloud, infra}, []string{cloud, infra}, []string{infra}),
		"D-LinkSiren":  caps([]string{cloud, cdn, infra}, []string{cloud, infra}),
		// One capture of four reaches the CDN node, as one of the siren's
		// two does: a habit of neither.
		"Plug": caps([]string{cdn, infra}, []string{infra}, []string{infra}, nil),
		// A single capture is its own habit, but its server is the
		// cloud on another port: not the same server.
		"Lone": caps([]string{"52.28.38.154:80", infra}),
		"Cam":  caps([]string{"1.2.3.4:443"}, []string{"1.2.3.4:443"}),
		"Cam2": caps([]string{"1.2.3.4:443"}, []string{"1.2.3.4:443"}, []string{"5.6.7.8:443"}),
	}
	got := ServerFamilies(captures)
	want := [][]string{{"Cam", "Cam2"}, {"D-LinkSensor", "D-LinkSiren"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("families %v, want %v (infra, a habit of 4 of 6 types, joins nothing)", got, want)
	}
	// With infra a habit of only half the types, it is a vendor's.
	delete(captures, "Plug")
	delete(captures, "Lone")
	captures["A"], captures["B"] = caps(nil), caps(nil)
	want = [][]string{{"Cam", "Cam2"}, {"D-LinkSensor", "D-LinkSiren"}}
	if got := ServerFamilies(captures); !reflect.DeepEqual(got, want) {
		t.Fatalf("families %v, want %v", got, want)
	}
	captures["Cam"] = caps([]string{"1.2.3.4:443", infra}, []string{"1.2.3.4:443", infra})
	want = [][]string{{"Cam", "Cam2", "D-LinkSensor", "D-LinkSiren"}}
	if got := ServerFamilies(captures); !reflect.DeepEqual(got, want) {
		t.Fatalf("families %v, want %v (infra now a habit of 3 of 6 types)", got, want)
	}
}

func TestMergeFamilies(t *testing.T) {
	got := MergeFamilies(
		[][]string{{"D-LinkSiren", "D-LinkWaterSensor"}, {"EdimaxCam1", "EdimaxCam2"}},
		nil,
		[][]string{{"D-LinkSensor", "D-LinkSiren"}, {"WeMoLink", "WeMoSwitch"}},
	)
	want := [][]string{{"D-LinkSensor", "D-LinkSiren", "D-LinkWaterSensor"}, {"EdimaxCam1", "EdimaxCam2"}, {"WeMoLink", "WeMoSwitch"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merged %v, want %v", got, want)
	}
	if got := OnlyOf(want, []string{"D-LinkSensor", "D-LinkWaterSensor", "EdimaxCam1", "WeMoLink", "WeMoSwitch"}); !reflect.DeepEqual(got,
		[][]string{{"D-LinkSensor", "D-LinkWaterSensor"}, {"WeMoLink", "WeMoSwitch"}}) {
		t.Fatalf("only of the labels: %v", got)
	}
}
