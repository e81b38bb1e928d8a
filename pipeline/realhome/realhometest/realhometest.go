// Package realhometest loads the IoT Sentinel devices for tests that build
// homes or learn from their captures, skipping the test where the captures
// have not been fetched.
package realhometest

import (
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/realhome"
)

// Devices is every IoT Sentinel device with its captures, or skips the
// test (sentineldata.Need) when they are not there; a folder that does
// not load fails it.
func Devices(tb testing.TB) []realhome.Device {
	tb.Helper()
	devs, err := realhome.LoadDevices(sentineldata.Need(tb))
	if err != nil {
		tb.Fatalf("load the IoT Sentinel devices: %v", err)
	}
	return devs
}
