package homecount

import (
	"context"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/realhome/realhometest"
)

// TestLongSessions plays each device's later captures back to back under
// its one MAC through the live counter, with a model that never saw them:
// no host passes the bound on its keys, the key sets grow by little once
// the first sessions are in, and every device whose unit has a signature
// is counted once in most of the windows it sends in. Keyed by the
// client's port, the Hue bridge passed the bound in its third session and
// was counted in 59.6 % of its windows.
func TestLongSessions(t *testing.T) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := hc.Long(context.Background(), LiveConfig{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) < 25 {
		t.Fatalf("%d devices played, want every device folder with later captures", len(rs))
	}
	windows, right := 0, 0
	for _, r := range rs {
		if r.Saturated || len(r.Keys) != r.Sessions {
			t.Errorf("%s: past the key bound %v, keys after %d sessions %v", r.Folder, r.Saturated, r.Sessions, r.Keys)
		}
		// What a session adds once four are in: far from a key per
		// connection.
		if n := len(r.Keys); n >= 5 && r.Keys[n-1]-r.Keys[n-2] > 100 {
			t.Errorf("%s: the fifth session added %d keys (%v)", r.Folder, r.Keys[n-1]-r.Keys[n-2], r.Keys)
		}
		if !r.Signed {
			continue
		}
		windows += r.Windows
		right += r.Right
		if r.Windows == 0 || float64(r.Right) < 0.8*float64(r.Windows) {
			t.Errorf("%s: counted once in %d of the %d windows it sent in", r.Folder, r.Right, r.Windows)
		}
	}
	if float64(right) < 0.95*float64(windows) {
		t.Errorf("counted right in %d of %d windows, want 95 %%", right, windows)
	}
	t.Logf("%d devices, right in %d of %d windows", len(rs), right, windows)
}
