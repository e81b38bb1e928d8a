package openset

import (
	"math"
	"strings"
	"testing"
)

func TestThreshold(t *testing.T) {
	conf := []float64{0.9, 0.1, 0.5, 0.7, 0.3, 0.95, 0.8, 0.6, 0.2, 0.4}
	for _, c := range []struct {
		q, want, below float64
	}{{0.05, 0.1, 0}, {0.1, 0.2, 0.1}, {0.25, 0.3, 0.2}, {0.5, 0.6, 0.5}} {
		th, fu, err := Threshold(conf, c.q)
		if err != nil {
			t.Fatal(err)
		}
		if th != c.want || math.Abs(fu-c.below) > 1e-12 {
			t.Errorf("quantile %g: threshold %g, false unknown %g; want %g, %g", c.q, th, fu, c.want, c.below)
		}
	}
	if conf[0] != 0.9 {
		t.Error("Threshold sorted its input in place")
	}
	for _, bad := range []struct {
		conf []float64
		q    float64
		want string
	}{{conf, 0, "quantile"}, {conf, 1, "quantile"}, {nil, 0.05, "hold out"}, {[]float64{math.NaN()}, 0.05, "NaN"}} {
		if _, _, err := Threshold(bad.conf, bad.q); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Threshold(%v, %g) = %v, want an error about %q", bad.conf, bad.q, err, bad.want)
		}
	}
}
