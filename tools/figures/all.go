package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/evaluate"
)

// sentinelDir is where the IoT Sentinel captures lie, relative to the
// repository root (go tool task data fetches them).
const sentinelDir = "../shared/data/iot-sentinel-dev"

// reruns holds what the slow figures share: several figures come from one
// command (a cross-validation gives four, the matrix eight), which runs
// once per figures run however many of its keys are asked for.
type reruns struct {
	// work holds the embedded home, reports and outputs of the commands,
	// so a rerun never touches the user's .homemole.
	work string
	done map[string]any
}

// once runs f the first time name is asked for and keeps its result (or
// error) for the next keys of the same command.
func (r *reruns) once(name string, f func() (any, error)) (any, error) {
	if v, ok := r.done[name]; ok {
		if err, isErr := v.(error); isErr {
			return nil, err
		}
		return v, nil
	}
	v, err := f()
	if err != nil {
		r.done[name] = err
		return nil, err
	}
	r.done[name] = v
	return v, nil
}

// homemole runs the CLI (torch commands hand over to homemole-torch, built
// on demand) against an embedded home under the work folder.
func (r *reruns) homemole(ctx context.Context, args ...string) (string, error) {
	return r.command(ctx, nil, "go", append([]string{"run", "./services/homemole"}, args...)...)
}

func (r *reruns) command(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "HOMEMOLE_HOME="+filepath.Join(r.work, "home"), "HOMEMOLE_NATS_URL=", "HOMEMOLE_S3_ENDPOINT=")
	cmd.Env = append(cmd.Env, env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String()))
	}
	return out.String(), nil
}

func needSentinel() error {
	if _, err := os.Stat(sentinelDir); err != nil {
		return fmt.Errorf("the IoT Sentinel captures are not at %s (go tool task data fetches them): %w", sentinelDir, err)
	}
	return nil
}

// slowRunners are the figures of the README's result tables: each takes
// minutes (the matrix, the sequence-profile tables, tshark's rows, the
// cluster) to hours (the cross-validations of 277 captures on 2 cores),
// so only --all runs them.
func slowRunners(r *reruns) []runner {
	var rs []runner
	for _, view := range []string{"lan", "napt"} {
		for _, model := range []string{"rf", "lstm", "blstm"} {
			rs = append(rs, cvRunners(r, view, model, "", nil)...)
		}
	}
	// What stepping two copies' batches at once does to accuracy, beside
	// one thread with the same seed (README "Both cores").
	for _, threads := range []string{"threads1", "data2"} {
		rs = append(rs, cvRunners(r, "lan", "blstm", threads, threadArgs[threads])...)
	}
	rs = append(rs, timeDriftRunners(r)...)
	rs = append(rs, studyRunners(r)...)
	rs = append(rs, shuffleRunners(r)...)
	rs = append(rs, matrixRunners(r)...)
	rs = append(rs, spRunners(r)...)
	rs = append(rs, pairsRunners(r)...)
	rs = append(rs, hostsRunners(r)...)
	rs = append(rs, chainsRunners(r)...)
	rs = append(rs, combinedRunners(r)...)
	rs = append(rs, nearestRunners(r)...)
	rs = append(rs, benchRunners(r)...)
	rs = append(rs, clusterRunner(r))
	for i := range rs {
		rs[i].slow = true
	}
	return rs
}

// spread is a mean and spread over folds, as train.Spread writes it.
type spread struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
}

// cvSummary is what the figures read of a train.CVResult (cv.json, and
// each point of study.json). The figures tool reads JSON only, so it does
// not link libtorch through pipeline/train; a field missing from the file
// fails the figure rather than reading as 0.
type cvSummary struct {
	Accuracy             *spread `json:"accuracy"`
	MacroF1              *spread `json:"macro_f1"`
	SessionAccuracy      *spread `json:"session_accuracy"`
	SessionAccuracyTypes *spread `json:"session_accuracy_types"`
	// MajorityTypes is the types column had every session been named by
	// the majority of its packets' labels (LSTM and BLSTM sessions are
	// named by summed log-probabilities).
	MajorityTypes *spread `json:"session_accuracy_types_majority"`
	// Family is family-level session accuracy, each fold scored with the
	// families of the other folds' confusions (cv with two folds or more).
	Family *struct {
		Accuracy *spread `json:"accuracy"`
	} `json:"family"`
}

func (c *cvSummary) check(file string) error {
	if c == nil || c.Accuracy == nil || c.MacroF1 == nil || c.SessionAccuracy == nil || c.SessionAccuracyTypes == nil {
		return fmt.Errorf("%s lacks accuracy, macro_f1, session_accuracy or session_accuracy_types: not a cross-validation summary this tool reads", file)
	}
	return nil
}

// cvColumns are the four columns of a cross-validation row.
var cvColumns = []string{"packet", "macro_f1", "sessions", "types"}

// cvFigure formats one column of a cross-validation as the README's CV
// table states it (mean ± spread over folds).
func cvFigure(res *cvSummary, column string, withSpread bool) (string, error) {
	pct := func(s *spread) string {
		if !withSpread {
			return fmt.Sprintf("%.1f %%", 100*s.Mean)
		}
		return fmt.Sprintf("%.1f ± %.1f %%", 100*s.Mean, 100*s.Std)
	}
	switch column {
	case "packet":
		return fmt.Sprintf("%.1f ± %.1f %%", 100*res.Accuracy.Mean, 100*res.Accuracy.Std), nil
	case "macro_f1":
		return fmt.Sprintf("%.3f", res.MacroF1.Mean), nil
	case "sessions":
		return pct(res.SessionAccuracy), nil
	case "types_majority":
		if res.MajorityTypes == nil {
			return "", errors.New("cv.json lacks session_accuracy_types_majority: written by a homemole older than the log-probability vote")
		}
		return pct(res.MajorityTypes), nil
	case "families":
		if res.Family == nil || res.Family.Accuracy == nil {
			return "", errors.New("cv.json lacks family.accuracy: a one-fold split learns no families, or a homemole older than the families wrote it")
		}
		return pct(res.Family.Accuracy), nil
	default:
		return pct(res.SessionAccuracyTypes), nil
	}
}

var reportRe = regexp.MustCompile(`report: (\S+)/cv\.html`)

// threadArgs are the cv flags of a cvRunners variant: "" (the command's
// default), "threads1" or "data2" (two data-parallel copies).
var threadArgs = map[string][]string{
	"":         nil,
	"threads1": {"--threads", "1"},
	"data2":    {"--threads", "2", "--thread-mode", "data"},
}

// timeDriftRunners are the figures of the README's tables of later
// captures, session accuracy over types, one cell a run, seeds 1 to 3:
//   - sS.pP: grouped 5-fold, every port seen twice (--port-sessions 0, the
//     default) or ports seen in two sessions (2);
//   - time.sS.pP: --mode time --folds 2, the later half judged;
//   - time5.sS.pP: --mode time --folds 5, the later fifth judged, trained
//     on as many sessions as grouped 5-fold;
//   - f2.sS.p0: grouped 2-fold, trained on as many as the later half's.
func timeDriftRunners(r *reruns) []runner {
	type split struct {
		name  string
		args  []string
		ports []int
	}
	splits := []split{
		{"", nil, []int{0, 2}},
		{"time", []string{"--mode", "time", "--folds", "2"}, []int{0, 2}},
		{"time5", []string{"--mode", "time", "--folds", "5"}, []int{0, 2}},
		{"f2", []string{"--folds", "2"}, []int{0}},
	}
	var rs []runner
	for _, sp := range splits {
		for seed := 1; seed <= 3; seed++ {
			for _, ports := range sp.ports {
				v := fmt.Sprintf("s%d.p%d", seed, ports)
				if sp.name != "" {
					v = sp.name + "." + v
				}
				args := append([]string{"--seed", strconv.Itoa(seed), "--port-sessions", strconv.Itoa(ports)}, sp.args...)
				for _, run := range cvRunners(r, "lan", "blstm", v, args) {
					// Grouped splits learn families from their other folds.
					grouped := sp.name == "" || sp.name == "f2"
					if strings.HasSuffix(run.key, ".types") || grouped && strings.HasSuffix(run.key, ".families") {
						rs = append(rs, run)
					}
				}
			}
		}
	}
	return append(rs, timeFamilyRunners(r)...)
}

// experimentSummary is what the figures read of experiment's JSON.
type experimentSummary struct {
	Types     *float64   `json:"session_accuracy_types"`
	Families  *float64   `json:"session_accuracy_families"`
	Confusion *float64   `json:"session_accuracy_confusion_families"`
	Learned   [][]string `json:"families"`
	Servers   [][]string `json:"server_families"`
}

// timeFamilyRunners are the time split through experiment --save, seeds 1
// to 3 (experiment.time.blstm.sS.COLUMN): trained on each device's earlier
// captures, judged on its later half, as cv --mode time --folds 2, but
// with the families the saved model learns from its calibration folds
// (every earlier capture held out once), so the later captures' families
// are scored with families no later capture made.
func timeFamilyRunners(r *reruns) []runner {
	var rs []runner
	for seed := 1; seed <= 3; seed++ {
		args := []string{"experiment", "--split-by-time", sentinelDir, "--model", "blstm", "--window", "40", "--seed", strconv.Itoa(seed), "--save", "time-families"}
		command := "go run ./services/homemole " + strings.Join(args, " ") + " --json time-families.json"
		cols := []string{"types", "families", "confusion_families"}
		if seed == 1 {
			// The servers are read from the captures, the same for every seed.
			cols = append(cols, "server_families")
		}
		for _, col := range cols {
			rs = append(rs, runner{key: fmt.Sprintf("experiment.time.blstm.s%d.%s", seed, col), command: command, measure: func(ctx context.Context) (string, error) {
				v, err := r.once(command, func() (any, error) {
					if err := needSentinel(); err != nil {
						return nil, err
					}
					file := filepath.Join(r.work, fmt.Sprintf("time-families-s%d.json", seed))
					if _, err := r.homemole(ctx, append(args, "--json", file)...); err != nil {
						return nil, err
					}
					var res experimentSummary
					if err := readJSON(file, &res); err != nil {
						return nil, err
					}
					if res.Types == nil || res.Families == nil || len(res.Learned) == 0 {
						return nil, fmt.Errorf("%s lacks session_accuracy_types, session_accuracy_families or families: the saved model learned no families", file)
					}
					return &res, nil
				})
				if err != nil {
					return "", err
				}
				res := v.(*experimentSummary)
				switch col {
				case "types":
					return fmt.Sprintf("%.1f %%", 100**res.Types), nil
				case "confusion_families":
					// Without server families the two are one figure.
					if len(res.Servers) == 0 || res.Confusion == nil {
						return fmt.Sprintf("%.1f %%", 100**res.Families), nil
					}
					return fmt.Sprintf("%.1f %%", 100**res.Confusion), nil
				case "server_families":
					return evaluate.FamilyList(res.Servers), nil
				}
				return fmt.Sprintf("%.1f %%", 100**res.Families), nil
			}})
		}
	}
	return rs
}

// sentinelDataset is the IoT Sentinel dataset of one view the
// cross-validations and the shuffle comparison train on: its name and the
// homemole arguments that build it.
func sentinelDataset(view string) (name string, build []string) {
	name = "sentinel-" + view
	build = []string{"dataset", "build", "--from-dir", sentinelDir, "--dataset", name}
	if view != "lan" {
		build = append(build, "--view", view)
	}
	return name, append(build, "--window", "40")
}

// buildSentinel builds sentinelDataset(view), once a figures run.
func (r *reruns) buildSentinel(ctx context.Context, view string) error {
	_, build := sentinelDataset(view)
	_, err := r.once("dataset "+view, func() (any, error) { return r.homemole(ctx, build...) })
	return err
}

// cvRunners are one cross-validation's figures, keyed
// cv.VIEW.MODEL[.VARIANT].COLUMN; args are the variant's cv flags.
func cvRunners(r *reruns, view, model, variant string, args []string) []runner {
	dataset, build := sentinelDataset(view)
	cv := append([]string{"cv", "--dataset", dataset, "--model", model, "--folds", "5"}, args...)
	prefix := fmt.Sprintf("cv.%s.%s.", view, model)
	if variant != "" {
		prefix += variant + "."
	}
	command := "go run ./services/homemole " + strings.Join(build, " ") + " && go run ./services/homemole " + strings.Join(cv, " ")
	cols := cvColumns
	if model != "rf" {
		// The LSTMs name sessions by log-probability; the majority's
		// figure stands beside (a forest's sessions are its majority).
		cols = append(slices.Clip(cols), "types_majority", "families")
	}
	var rs []runner
	for _, col := range cols {
		rs = append(rs, runner{key: prefix + col, command: command, measure: func(ctx context.Context) (string, error) {
			v, err := r.once("cv "+view+" "+model+" "+variant, func() (any, error) {
				if err := needSentinel(); err != nil {
					return nil, err
				}
				if err := r.buildSentinel(ctx, view); err != nil {
					return nil, err
				}
				out, err := r.homemole(ctx, cv...)
				if err != nil {
					return nil, err
				}
				m := reportRe.FindStringSubmatch(out)
				if m == nil {
					return nil, fmt.Errorf("homemole cv printed no report path:\n%s", tail(out))
				}
				var res cvSummary
				file := filepath.Join(m[1], "cv.json")
				if err := readJSON(file, &res); err != nil {
					return nil, err
				}
				return &res, res.check(file)
			})
			if err != nil {
				return "", err
			}
			return cvFigure(v.(*cvSummary), col, true)
		}})
	}
	return rs
}

// studyRunners are the window-size study's rows: one cross-validation per
// window size, the sessions columns as means only.
func studyRunners(r *reruns) []runner {
	const command = "go run ./services/homemole study --from-dir " + sentinelDir + " --windows 20,40,100 --folds 5 --out study/"
	var rs []runner
	for _, w := range []int{20, 40, 100} {
		for _, col := range cvColumns {
			rs = append(rs, runner{key: fmt.Sprintf("study.w%d.%s", w, col), command: command, measure: func(ctx context.Context) (string, error) {
				v, err := r.once("study", func() (any, error) {
					if err := needSentinel(); err != nil {
						return nil, err
					}
					// As the command says, but into the work folder.
					dir := filepath.Join(r.work, "study")
					if _, err := r.homemole(ctx, "study", "--from-dir", sentinelDir, "--windows", "20,40,100", "--folds", "5", "--out", dir); err != nil {
						return nil, err
					}
					var points []struct {
						Window int        `json:"window"`
						CV     *cvSummary `json:"cv"`
					}
					file := filepath.Join(dir, "study.json")
					if err := readJSON(file, &points); err != nil {
						return nil, err
					}
					byWindow := map[int]*cvSummary{}
					for _, p := range points {
						if err := p.CV.check(fmt.Sprintf("%s, window %d", file, p.Window)); err != nil {
							return nil, err
						}
						byWindow[p.Window] = p.CV
					}
					return byWindow, nil
				})
				if err != nil {
					return "", err
				}
				res := v.(map[int]*cvSummary)[w]
				if res == nil {
					return "", fmt.Errorf("study.json has no window of %d", w)
				}
				return cvFigure(res, col, false)
			}})
		}
	}
	return rs
}

// matrixResult is what the figures read of tools/matrix's matrix.json.
type matrixResult struct {
	Cells []struct {
		View     string `json:"view"`
		Kind     string `json:"kind"`
		Accuracy spread `json:"accuracy"`
		MacroF1  spread `json:"macro_f1"`
	} `json:"cells"`
}

func matrixRunners(r *reruns) []runner {
	var rs []runner
	for _, view := range []string{"napt", "vpn"} {
		for _, kind := range []string{"ind", "noise"} {
			for _, col := range []string{"packet", "macro_f1"} {
				rs = append(rs, runner{key: fmt.Sprintf("matrix.%s.%s.%s", view, kind, col), command: "go tool task matrix", measure: func(ctx context.Context) (string, error) {
					v, err := r.once("matrix", func() (any, error) {
						dir := filepath.Join(r.work, "matrix")
						if _, err := r.command(ctx, nil, "go", "run", "./tools/matrix", "--out", dir); err != nil {
							return nil, err
						}
						var m matrixResult
						return &m, readJSON(filepath.Join(dir, "matrix.json"), &m)
					})
					if err != nil {
						return "", err
					}
					return matrixFigure(v.(*matrixResult), view, kind, col)
				}})
			}
		}
	}
	return rs
}

func matrixFigure(m *matrixResult, view, kind, col string) (string, error) {
	for _, c := range m.Cells {
		if c.View != view || c.Kind != kind {
			continue
		}
		if col == "macro_f1" {
			return fmt.Sprintf("%.3f", c.MacroF1.Mean), nil
		}
		return fmt.Sprintf("%.1f ± %.1f %%", 100*c.Accuracy.Mean, 100*c.Accuracy.Std), nil
	}
	return "", fmt.Errorf("matrix.json has no %s/%s cell", view, kind)
}

// spRunners are the sequence-profile table's rows, from sp eval's JSON.
func spRunners(r *reruns) []runner {
	eval := func(ctx context.Context, name string, args ...string) (*scene.Report, error) {
		v, err := r.once("sp "+name, func() (any, error) {
			out := filepath.Join(r.work, name+".json")
			if _, err := r.homemole(ctx, append(append([]string{"sp", "eval"}, args...), "--json", out)...); err != nil {
				return nil, err
			}
			var rep scene.Report
			return &rep, readJSON(out, &rep)
		})
		if err != nil {
			return nil, err
		}
		return v.(*scene.Report), nil
	}
	generated := func(format func(*scene.Report) (string, error)) func(ctx context.Context) (string, error) {
		return func(ctx context.Context) (string, error) {
			rep, err := eval(ctx, "gen", "--generated")
			if err != nil {
				return "", err
			}
			return format(rep)
		}
	}
	const gen = "go run ./services/homemole sp eval --generated --json gen.json"
	return []runner{
		{key: "sp.generated.f", command: gen, measure: generated(spDetection)},
		{key: "sp.generated.count_error", command: gen, measure: generated(spCountError)},
		{key: "sp.generated.response", command: gen, measure: generated(spResponse)},
		{key: "sp.sentinel.detection", command: "go run ./services/homemole sp eval --dir " + sentinelDir + " --json dev.json",
			measure: func(ctx context.Context) (string, error) {
				if err := needSentinel(); err != nil {
					return "", err
				}
				rep, err := eval(ctx, "dev", "--dir", sentinelDir)
				if err != nil {
					return "", err
				}
				return spSentinel(rep)
			}},
	}
}

// readJSON decodes a command's JSON output, naming the file on failure.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the command's output: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func perDevice(rep *scene.Report) ([]scene.DeviceResult, error) {
	if len(rep.PerDevice) == 0 {
		return nil, errors.New("the sp eval report judged no device type")
	}
	return rep.PerDevice, nil
}

// spDetection: "F-score 1.000 for every type, no false positive", or the
// range of F-scores and the false positives there were.
func spDetection(rep *scene.Report) (string, error) {
	ds, err := perDevice(rep)
	if err != nil {
		return "", err
	}
	lo, hi, fp := math.Inf(1), math.Inf(-1), 0
	for _, d := range ds {
		lo, hi, fp = math.Min(lo, d.F), math.Max(hi, d.F), fp+d.FP
	}
	s := fmt.Sprintf("F-score %.3f to %.3f", lo, hi)
	if fmt.Sprintf("%.3f", lo) == fmt.Sprintf("%.3f", hi) {
		s = fmt.Sprintf("F-score %.3f for every type", lo)
	}
	switch fp {
	case 0:
		return s + ", no false positive", nil
	case 1:
		return s + ", 1 false positive", nil
	}
	return fmt.Sprintf("%s, %d false positives", s, fp), nil
}

// spCountError: the mean count error over types, their range, and the
// worst mean error at any one true count.
func spCountError(rep *scene.Report) (string, error) {
	ds, err := perDevice(rep)
	if err != nil {
		return "", err
	}
	var errs []float64
	for _, d := range ds {
		if e := float64(d.CountError); !math.IsNaN(e) {
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 || len(rep.CountByN) == 0 {
		return "", errors.New("the sp eval report has no count errors (run with --generated)")
	}
	mean := 0.0
	for _, e := range errs {
		mean += e
	}
	mean /= float64(len(errs))
	worst := 0.0
	for _, p := range rep.CountByN {
		worst = math.Max(worst, p.MeanError)
	}
	return fmt.Sprintf("%.1f %% mean (%.1f-%.1f %% per type, at most %.1f %% at any n)",
		100*mean, 100*slices.Min(errs), 100*slices.Max(errs), 100*worst), nil
}

// spResponse: the fastest and slowest type's median response, and the
// longest any detection took, in whole minutes.
func spResponse(rep *scene.Report) (string, error) {
	ds, err := perDevice(rep)
	if err != nil {
		return "", err
	}
	fast, slow := -1, -1
	longest := 0.0
	for i, d := range ds {
		s := float64(d.ResponseSeconds)
		if math.IsNaN(s) || math.IsInf(s, 0) {
			continue
		}
		if fast < 0 || s < float64(ds[fast].ResponseSeconds) {
			fast = i
		}
		if slow < 0 || s > float64(ds[slow].ResponseSeconds) {
			slow = i
		}
		if m := float64(d.ResponseMax); !math.IsNaN(m) && !math.IsInf(m, 0) {
			longest = math.Max(longest, m)
		}
	}
	if fast < 0 {
		return "", errors.New("the sp eval report has no response times (run with --generated)")
	}
	return fmt.Sprintf("%.0f s (%s) to %.0f s (%s); all under %.0f min", float64(ds[fast].ResponseSeconds), ds[fast].Device,
		float64(ds[slow].ResponseSeconds), ds[slow].Device, math.Floor(longest/60)+1), nil
}

// spSentinel: how many types were found with F >= 0.99, and the mean
// precision and recall over types.
func spSentinel(rep *scene.Report) (string, error) {
	ds, err := perDevice(rep)
	if err != nil {
		return "", err
	}
	good := 0
	var p, rc float64
	for _, d := range ds {
		if d.F >= 0.99 {
			good++
		}
		p += d.Precision
		rc += d.Recall
	}
	n := float64(len(ds))
	return fmt.Sprintf("%d of %d types F >= 0.99; mean precision %.3f, recall %.3f", good, len(ds), p/n, rc/n), nil
}

// benchRunners are rows (a) and (b) of go tool task bench: HomeMole's side
// of the comparison with tshark, read from tools/benchref's table.
func benchRunners(r *reruns) []runner {
	row := func(key, prefix string) runner {
		return runner{key: key, command: "go tool task bench", measure: func(ctx context.Context) (string, error) {
			v, err := r.once("bench", func() (any, error) { return r.command(ctx, nil, "go", "run", "./tools/benchref") })
			if err != nil {
				return "", err
			}
			rate, err := tableValue(v.(string), prefix)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%.2f M packets/s", rate/1e6), nil
		}}
	}
	return []runner{
		row("bench.records", "(a) records: read + decode (merged, 1 core)"),
		row("bench.features_csv", "(b) homemole features CSV to /dev/null (1 core)"),
	}
}

// clusterRunner is the cluster's throughput from tools/cluster's table.
func clusterRunner(r *reruns) runner {
	return runner{key: "cluster.throughput", command: "go tool task cluster-test", measure: func(ctx context.Context) (string, error) {
		root, err := os.Getwd()
		if err != nil {
			return "", err
		}
		env := []string{"HOMEMOLE_CLUSTER_BIN=" + filepath.Join(root, ".build", "bin")}
		if _, err := r.command(ctx, env, "go", "run", "./tools/cluster", "--install"); err != nil {
			return "", err
		}
		out, err := r.command(ctx, env, "go", "run", "./tools/cluster", "--homes", "24", "--sessions", "2", "--duration", "30m", "--replicas", "2")
		if err != nil {
			return "", err
		}
		rate, err := tableValue(out, "throughput (packets/s)")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%.2f M packets/s", rate/1e6), nil
	}}
}

// tableValue is the first number after prefix on the line of a printed
// table that starts with it.
func tableValue(out, prefix string) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		for _, f := range strings.Fields(line[len(prefix):]) {
			if v, err := strconv.ParseFloat(f, 64); err == nil {
				return v, nil
			}
		}
	}
	return 0, fmt.Errorf("no row %q with a number in the output:\n%s", prefix, tail(out))
}
