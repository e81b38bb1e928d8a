package sweep

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse: any bytes as a sweep spec give a spec whose grid expands, or
// an error naming the file; never a panic.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"sweep-window-study.yaml", "sweep-napt-vpn.yaml", "sweep-cluster.yaml"} {
		if data, err := os.ReadFile("../../examples/" + name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("from_dir: x\nmodels: [rf, blstm]\nwindows: [20]\nmodel_flags: {epochs: [1, 2], trees: 5}\n"))
	f.Add([]byte("dataset: d\nmodels: [rf]\ncv: {mode: leave-one-home-out}\n"))
	f.Add([]byte("models: [rf]\nmodel_flags: {epochs: {a: 1}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(strings.NewReader(string(data)), "fuzz.yaml")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(s.Models) == 0 || (s.FromDir == "") == (s.Dataset == "") {
			t.Fatalf("accepted %+v", s)
		}
		cs := s.Configurations()
		if len(cs) > MaxConfigurations {
			t.Fatalf("accepted a grid of %d configurations", len(cs))
		}
		if len(cs) == 0 && len(s.Models) > 0 && (s.Dataset != "" || len(s.Windows) > 0) {
			t.Fatalf("spec %+v expands to no configuration", s)
		}
		for _, c := range cs {
			if c.Hash() == "" || c.Label() == "" {
				t.Fatalf("configuration %+v has no hash or label", c)
			}
		}
	})
}
