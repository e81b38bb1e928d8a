package seqprofile

import (
	"context"
	"testing"
)

// TestLoadDirCrossing keeps what a WAN observer sees: a camera that only
// talks on the LAN keeps nothing, a plug its cloud traffic, each packet one
// hop further out than on the LAN (outbound TTL one lower).
func TestLoadDirCrossing(t *testing.T) {
	all := loadDev(t)
	crossing, err := LoadDirCrossing(context.Background(), sentinelDir)
	if err != nil {
		t.Fatal(err)
	}
	count := func(ds []DeviceTraffic, name string) (n int, first []Stamped) {
		for _, d := range ds {
			if d.Device == name {
				for _, s := range d.Sessions {
					n += len(s.Device)
				}
				return n, d.Sessions[0].Device
			}
		}
		return 0, nil
	}
	if n, _ := count(crossing, "EdimaxCam1"); n != 0 {
		t.Errorf("EdimaxCam1 (LAN only) kept %d crossing packets", n)
	}
	lan, _ := count(all, "TP-LinkPlugHS110")
	wan, pkts := count(crossing, "TP-LinkPlugHS110")
	if wan == 0 || wan >= lan {
		t.Fatalf("TP-LinkPlugHS110: %d crossing packets of %d", wan, lan)
	}
	ttls := map[int32]int{}
	for _, p := range pkts {
		ttls[p.V[FieldTTL]]++
	}
	if ttls[64] != 0 || ttls[63] == 0 {
		t.Fatalf("TP-LinkPlugHS110 crossing TTLs %v: its own packets leave with 64, 63 beyond the gateway", ttls)
	}
	t.Logf("TP-LinkPlugHS110: %d of %d packets cross; TTLs %v", wan, lan, ttls)
}
