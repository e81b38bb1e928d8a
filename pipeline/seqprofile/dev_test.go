package seqprofile

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
)

const sentinelDir = "../../../shared/data/iot-sentinel-dev"

var (
	devOnce sync.Once
	devData []DeviceTraffic
	devErr  error
)

// loadDev reads the IoT Sentinel captures once per test binary.
func loadDev(t testing.TB) []DeviceTraffic {
	t.Helper()
	sentineldata.Need(t)
	devOnce.Do(func() { devData, devErr = LoadDir(context.Background(), sentinelDir) })
	if devErr != nil {
		t.Fatalf("the IoT Sentinel captures must sit beside the project: %v", devErr)
	}
	return devData
}

// trainSessions keeps four captures in five, as the dev evaluation does.
func trainSessions(d DeviceTraffic) []Session {
	var out []Session
	for i, s := range d.Sessions {
		if i%5 != 4 {
			out = append(out, s)
		}
	}
	return out
}

// TestDistanceEffectOnDevData shows what the threshold d does on real
// devices: per d, the distinct SPs the pairs produce, the mean length and
// share of Any fields of the kept SPs, and how much of each device's own
// traffic (train captures) the kept SPs cover. It fails if the default d
// stops producing SPs for most devices.
func TestDistanceEffectOnDevData(t *testing.T) {
	devs := loadDev(t)
	fmt.Printf("%-28s %10s %9s %8s %9s %9s\n", "setting", "distinct", "kept len", "Any %", "coverage", "time")
	type variant struct {
		name string
		d    float64
		edit func(*Distance)
	}
	for _, v := range []variant{
		{"d=4", 4, nil},
		{"d=8 (default)", 8, nil},
		{"d=12", 12, nil},
		{"d=8, payload 0.02/byte", 8, func(x *Distance) { x.Fields[FieldPayload].Weight = 0.02 }},
		{"d=8, payload 0.5/byte", 8, func(x *Distance) { x.Fields[FieldPayload].Weight = 0.5 }},
		{"d=8, window ignored", 8, func(x *Distance) { x.Fields[FieldWindow].Weight = 0 }},
	} {
		d := v.d
		cfg := DefaultGenConfig()
		cfg.Distance.Threshold = d
		if v.edit != nil {
			v.edit(&cfg.Distance)
		}
		var distinct, kept, elems, anyFields, fields int
		var cov float64
		t0 := time.Now()
		for _, dev := range devs {
			dp, err := LearnDevice(dev.Device, trainSessions(dev), 0, cfg)
			if err != nil {
				continue
			}
			var bursts []Burst
			for _, s := range trainSessions(dev) {
				bursts = append(bursts, Bursts(s.Device, 0)...)
			}
			cov += Coverage(bursts, dp.Profiles)
			distinct += dp.Stats.DistinctSPs
			for _, p := range dp.Profiles {
				kept++
				elems += len(p.Elems)
				for _, e := range p.Elems {
					fields += NumFields
					anyFields += NumFields - e.NonAny()
				}
			}
		}
		fmt.Printf("%-28s %10d %9.1f %8.1f %9.2f %9v\n", v.name, distinct, float64(elems)/float64(kept), 100*float64(anyFields)/float64(fields),
			cov/float64(len(devs)), time.Since(t0).Round(time.Millisecond))
		if v.edit == nil && d == DefaultDistance().Threshold && kept < 8*len(devs) {
			t.Errorf("d = %v kept %d SPs for %d devices: too few to feed a CNN", d, kept, len(devs))
		}
	}
}

// benchStream is every IoT Sentinel capture's packets, the captures laid
// end to end in time, with the SPs of all device types learned from the
// training captures.
func benchStream(b *testing.B) (sps [][]Vector, pkts []Stamped, devices int) {
	devs := loadDev(b)
	var set DeviceSet
	for _, d := range devs {
		dp, err := LearnDevice(d.Device, trainSessions(d), 0, DefaultGenConfig())
		if err != nil {
			b.Fatal(err)
		}
		set.Devices = append(set.Devices, dp)
	}
	sps, _ = set.Flat()
	var at int64 = 1.7e18
	for _, d := range devs {
		for _, s := range d.Sessions {
			all := slices.Concat(s.Device, s.Background)
			slices.SortStableFunc(all, func(x, y Stamped) int { return cmp.Compare(x.TsNs, y.TsNs) })
			if len(all) == 0 {
				continue
			}
			shift := at - all[0].TsNs
			for _, p := range all {
				p.TsNs += shift
				pkts = append(pkts, p)
			}
			at = pkts[len(pkts)-1].TsNs + 2e9
		}
	}
	return sps, pkts, len(set.Devices)
}

// BenchmarkMatch matches the SPs of all IoT Sentinel device types (31,
// up to 10 SPs each) against all their captures' packets on one core.
func BenchmarkMatch(b *testing.B) {
	sps, pkts, devices := benchStream(b)
	m, err := NewMatcher(sps, DefaultMatchConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	off := int64(0)
	n := 0
	for i := 0; i < b.N; i++ {
		p := pkts[n]
		m.Add(p.TsNs+off, p.V)
		if n++; n == len(pkts) {
			n = 0
			off += pkts[len(pkts)-1].TsNs - pkts[0].TsNs + 2e9
			m.Trim(m.Arrays().FirstBin + int64(m.Arrays().Bins()))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
	b.ReportMetric(float64(len(sps)), "SPs")
	b.ReportMetric(float64(devices), "devices")
	st := m.Stats()
	b.ReportMetric(float64(st.CacheMisses)/float64(max(st.Packets, 1)), "miss-rate")
}
