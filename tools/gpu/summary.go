package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
)

// benchRow is one line of run.sh's results file: tools/gpu/bench's, or
// the PyTorch reference's as run.sh writes it.
type benchRow struct {
	who, model string
	batch      int
	kv         map[string]string
}

var kvRe = regexp.MustCompile(`(\w+)=(\S*)`)

func readResults(r io.Reader) ([]benchRow, error) {
	var rows []benchRow
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		who, _, _ := strings.Cut(line, " ")
		if who != "homemole" && who != "pytorch" {
			continue
		}
		row := benchRow{who: who, kv: map[string]string{}}
		for _, m := range kvRe.FindAllStringSubmatch(line, -1) {
			row.kv[m[1]] = m[2]
		}
		row.model = row.kv["model"]
		b, err := strconv.Atoi(row.kv["batch"])
		if err != nil || row.model == "" {
			return nil, fmt.Errorf("results line %q: no model or batch", line)
		}
		row.batch = b
		rows = append(rows, row)
	}
	return rows, sc.Err()
}

func (r benchRow) num(k string) float64 {
	v, err := strconv.ParseFloat(r.kv[k], 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// report is what the summary reads of a training run's report.json.
type report struct {
	Run          string   `json:"run"`
	Device       string   `json:"device"`
	Accuracy     float64  `json:"accuracy"`
	MacroF1      float64  `json:"macro_f1"`
	TrainWindows int      `json:"train_windows"`
	TestWindows  int      `json:"test_windows"`
	TestGroups   []string `json:"test_groups"`
	TrainSeconds float64  `json:"train_seconds"`
}

func readReports(state string) ([]report, error) {
	dirs, err := os.ReadDir(filepath.Join(state, "reports"))
	if err != nil {
		return nil, fmt.Errorf("training reports: %w", err)
	}
	var out []report
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(state, "reports", d.Name(), "report.json"))
		if err != nil {
			return nil, err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		out = append(out, r)
	}
	return out, nil
}

// runHeldout prints the capture of a run's first held-out session, so the
// predict that follows judges traffic the model never saw.
func runHeldout(args []string) error {
	fl := flag.NewFlagSet("heldout", flag.ContinueOnError)
	state := fl.String("state", "", "the demo's state folder")
	run := fl.String("run", "", "training run")
	captures := fl.String("captures", "", "the demo's captures folder")
	if err := fl.Parse(args); err != nil {
		return err
	}
	reps, err := readReports(*state)
	if err != nil {
		return err
	}
	k := slices.IndexFunc(reps, func(r report) bool { return r.Run == *run })
	if k < 0 || len(reps[k].TestGroups) == 0 {
		return fmt.Errorf("run %q has no report with held-out sessions under %s", *run, *state)
	}
	session := filepath.Base(reps[k].TestGroups[0]) // home/session
	matches, _ := filepath.Glob(filepath.Join(*captures, session+".pcap*"))
	if len(matches) == 0 {
		return fmt.Errorf("no capture %s.pcap* in %s", session, *captures)
	}
	fmt.Println(matches[0])
	return nil
}

// runSummary prints the figures the GPU run is for: the trainer's windows/s
// beside PyTorch's, per model and batch, with the time per step split into
// waiting for data and the step; the train runs' accuracies (the device and
// the CPU, same seed); how many hosts predict named right.
func runSummary(args []string) error {
	fl := flag.NewFlagSet("summary", flag.ContinueOnError)
	results := fl.String("results", "", "run.sh's results file")
	state := fl.String("state", "", "the demo's state folder (reports/RUN/report.json)")
	camp := fl.String("campaign", "", "the demo's campaign.yaml (the inventory predict is judged by)")
	predict := fl.String("predict", "", "homemole predict's --json output")
	device := fl.String("device", "", "the device asked for, for the heading")
	if err := fl.Parse(args); err != nil {
		return err
	}
	return summarize(os.Stdout, *results, *state, *camp, *predict, *device)
}

func summarize(w io.Writer, results, state, camp, predict, device string) error {
	f, err := os.Open(results)
	if err != nil {
		return err
	}
	rows, err := readResults(f)
	f.Close()
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errors.New("no benchmark results")
	}
	type key struct {
		model string
		batch int
	}
	byKey := map[key]map[string]benchRow{}
	var keys []key
	for _, r := range rows {
		k := key{r.model, r.batch}
		if byKey[k] == nil {
			byKey[k] = map[string]benchRow{}
			keys = append(keys, k)
		}
		byKey[k][r.who] = r
	}
	ratio := func(a, b float64) string {
		if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	fmt.Fprintf(w, "== summary: device %s\n", device)
	fmt.Fprintf(w, "%-8s %6s %12s %12s %7s %12s %12s %7s %9s %9s\n", "model", "batch", "train w/s", "PyTorch", "ratio", "infer w/s", "PyTorch", "ratio", "data ms", "step ms")
	for _, k := range keys {
		h, p := byKey[k]["homemole"], byKey[k]["pytorch"]
		ht, pt := h.num("train_windows_per_s"), p.num("train_windows_per_s")
		hi, pi := h.num("infer_windows_per_s"), p.num("infer_windows_per_s")
		fmt.Fprintf(w, "%-8s %6d %12.0f %12.0f %7s %12.0f %12.0f %7s %9s %9s\n", k.model, k.batch, ht, pt, ratio(ht, pt), hi, pi, ratio(hi, pi),
			h.kv["data_wait_ms_per_step"], h.kv["compute_ms_per_step"])
	}
	reps, err := readReports(state)
	if err != nil {
		return err
	}
	for _, r := range reps {
		fmt.Fprintf(w, "train %-12s on %-7s accuracy %6.2f %%  macro F1 %.3f  (%d train, %d held-out windows, %.1f s)\n",
			r.Run, r.Device, 100*r.Accuracy, r.MacroF1, r.TrainWindows, r.TestWindows, r.TrainSeconds)
	}
	if len(reps) == 2 {
		fmt.Fprintf(w, "accuracy difference between %s and %s, same seed: %.2f points\n", reps[0].Device, reps[1].Device, 100*math.Abs(reps[0].Accuracy-reps[1].Accuracy))
	}
	c, err := campaign.Load(camp)
	if err != nil {
		return err
	}
	inv := map[string]string{}
	for _, h := range c.Homes {
		for _, d := range h.Inventory {
			inv[strings.ToLower(d.MAC)] = d.Name
		}
	}
	b, err := os.ReadFile(predict)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(w, "predict: no result (%s is missing; the log says why)\n", predict)
		return nil
	}
	if err != nil {
		return err
	}
	var p struct {
		Packets int `json:"packets"`
		Hosts   []struct {
			Host, Device string
		} `json:"hosts"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("%s: %w", predict, err)
	}
	named, right := 0, 0
	for _, h := range p.Hosts {
		if want, ok := inv[strings.ToLower(h.Host)]; ok {
			named++
			if h.Device == want {
				right++
			}
		}
	}
	fmt.Fprintf(w, "predict: %d packets, %d of %d inventoried hosts named right\n", p.Packets, right, named)
	return nil
}
