package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	results := write("results.txt", `homemole model=paper batch=64 device=cuda:0 windows=1280 train_windows_per_s=16000 infer_windows_per_s=90000 data_wait_ms_per_step=0.010 compute_ms_per_step=3.900 prepare_ms_per_step=0.500
pytorch model=paper batch=64 train_windows_per_s=20000 infer_windows_per_s= 
some other line
`)
	write("state/reports/gpu-cuda/report.json", `{"run":"gpu-cuda","device":"cuda:0","accuracy":0.981,"macro_f1":0.9,"train_windows":400,"test_windows":100,"test_groups":["home-1/session-02"],"train_seconds":2}`)
	write("state/reports/gpu-cpu/report.json", `{"run":"gpu-cpu","device":"cpu","accuracy":0.975,"macro_f1":0.9,"train_windows":400,"test_windows":100,"test_groups":["home-1/session-02"],"train_seconds":9}`)
	write("captures/session-02.pcap", "x")
	camp := write("campaign.yaml", `name: demo
homes:
  - name: home-1
    taps: [{name: lan, files: [captures/session-02.pcap]}]
    inventory:
      - {mac: "02:00:00:00:00:01", name: plug, category: iot}
      - {mac: "02:00:00:00:00:02", name: camera, category: iot}
`)
	predict := write("predict.json", `{"packets": 99, "hosts": [{"host": "02:00:00:00:00:01", "device": "plug"}, {"host": "02:00:00:00:00:02", "device": "plug"}, {"host": "02:00:00:00:00:09", "device": "camera"}]}`)
	var out bytes.Buffer
	if err := summarize(&out, results, filepath.Join(dir, "state"), camp, predict, "cuda"); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"paper        64        16000        20000   0.80x        90000          NaN     n/a     0.010     3.900",
		"accuracy  98.10 %", "accuracy  97.50 %", "same seed: 0.60 points",
		"predict: 99 packets, 1 of 2 inventoried hosts named right",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if err := summarize(&out, write("empty.txt", ""), filepath.Join(dir, "state"), camp, predict, "cuda"); err == nil {
		t.Error("a summary of no results")
	}
}
