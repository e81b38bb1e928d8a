// Package modelflag is the one set of flags that chooses and schedules a
// model, shared by every command that trains (homemole train, cv,
// experiment, study, demo) and by the trainer worker, so that a flag means
// the same wherever it is given.
package modelflag

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
)

// Register adds --model (checked as it is parsed), --trees and the
// training schedule's flags; the returned spec holds their values once fs
// is parsed. Its seed is the caller's to set.
func Register(fs *flag.FlagSet) *train.Spec {
	s := &train.Spec{Name: "blstm", Learn: learn.DefaultConfig()}
	fs.Func("model", fmt.Sprintf("%s (default %s)", strings.Join(train.Models, ", "), s.Name), func(v string) error {
		if err := (train.Spec{Name: v}).Check(); err != nil {
			return err
		}
		s.Name = v
		return nil
	})
	// Each number is checked as it is parsed: a value out of range is a
	// usage error naming the flag, never clamped or taken for the default.
	s.Trees = 100
	fs.Var(atLeast(&s.Trees, 1), "trees", "`N` trees in the Random Forest (rf; paper: 100; at least 1); the model file grows with them, about 0.5 MB a tree on the IoT Sentinel captures")
	cfg := &s.Learn
	fs.Var(atLeast(&cfg.Epochs, 1), "epochs", "`N` training epochs (paper: 15; at least 1)")
	fs.Var(atLeast(&cfg.BatchSize, 1), "batch", "`N` windows per training batch (at least 1)")
	fs.Var(share(&cfg.LR, "a finite number above 0", func(v float64) bool { return v > 0 }), "lr", "Adam learning `rate` (paper: 0.001; above 0)")
	fs.Var(atLeast(&cfg.LenEmbedDim, 0), "len-embed", "`size` of the exact-frame-length embedding added to the paper's inputs; 0 = the paper's inputs")
	fs.BoolVar(&cfg.HeaderFeatures, "header-features", cfg.HeaderFeatures, "add TTL, TCP window, options and payload length, TCP flags and transport to the paper's inputs")
	fs.Var(atLeast(&cfg.PortSessions, 0), "port-sessions", "a destination port gets its own embedding only when it appears in at least this many training capture `sessions` (0 or 1: every port seen twice); keeps ephemeral ports and one session's server port from naming that session")
	fs.Var(share(&cfg.LabelSmoothing, "a share from 0 up to, not including, 1", func(v float64) bool { return v >= 0 && v < 1 }), "label-smoothing", "`share` of each packet's training target spread over the other devices (0: none; below 1)")
	fs.BoolVar(&cfg.Balance, "balance", cfg.Balance, "weigh each device in the loss by its inverse share of the training packets")
	fs.Func("context", fmt.Sprintf("what each packet's output sees beside its own LSTM state: %s (the paper) or %s (which kinds of packet its device's stream in the capture session holds) (default %s)", learn.ContextNone, learn.ContextStream, cfg.Context), oneOf(&cfg.Context, learn.ContextNone, learn.ContextStream))
	fs.Var(atLeast(&cfg.Hidden, 1), "hidden", "LSTM hidden `size` per direction (paper: 64; at least 1)")
	fs.Var(share(&cfg.Dropout, "a share from 0 up to, not including, 1", func(v float64) bool { return v >= 0 && v < 1 }), "dropout", "dropout `share` on the LSTM outputs (paper: 0.5; below 1)")
	fs.Var(atLeast(&cfg.Threads, 0), "threads", "libtorch intra-op `threads`, process-wide (0: libtorch's default, one per core; commands that train several models at once divide the cores among them)")
	fs.Func("thread-mode", fmt.Sprintf("how --threads above 1 are used on the CPU: %s (libtorch splits each operation) or %s (each thread steps a batch of --batch-size windows on its own copy of the model, gradients summed into one step of threads x batch-size windows; README \"Both cores\") (default %s)", learn.ParallelIntraOp, learn.ParallelData, learn.ParallelIntraOp), oneOf(&cfg.Parallel, learn.ParallelIntraOp, learn.ParallelData))
	fs.Func("max-memory", "bound what a trainer adds to its memory once libtorch is loaded, all in (e.g. 256MiB; at least about 100MiB): it streams its training windows from the store through a shuffle buffer sized to fit beside the held-out windows, the Go heap's slack and libtorch's working memory, instead of reading them all (lstm and blstm; default: read all)", func(v string) error {
		n, err := campaign.ParseBytes(v)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("%q: want a positive size such as 256MiB", v)
		}
		s.MaxMemory = n
		return nil
	})
	Device(fs, &cfg.Device)
	return s
}

// Device registers --device, whose default comes from HOMEMOLE_DEVICE.
func Device(fs *flag.FlagSet, p *string) {
	*p = learn.DeviceAuto
	if v := os.Getenv("HOMEMOLE_DEVICE"); v != "" {
		*p = v
	}
	fs.Func("device", fmt.Sprintf("where libtorch trains and runs the model: %s, %s (or %s:N), or %s, the first GPU when libtorch sees one (env HOMEMOLE_DEVICE; default %s)",
		learn.DeviceCPU, learn.DeviceCUDA, learn.DeviceCUDA, learn.DeviceAuto, *p), func(s string) error {
		if err := learn.CheckDevice(s); err != nil {
			return err
		}
		*p = s
		return nil
	})
}

// UseDevice resolves the device and logs where the command's libtorch
// work runs, before any of it starts: cuda on a machine where libtorch
// sees no GPU fails here, not after a dataset was read.
func UseDevice(log *slog.Logger, name string) error {
	d, err := learn.ResolveDevice(name)
	if err != nil {
		return cli.Usagef("--device: %v", err)
	}
	log.Info("torch device", d.LogArgs()...)
	return nil
}

// InMemory refuses --max-memory in a command whose trainers read their
// windows whole (cross-validation folds, studies, experiments): ignoring
// it would let a pod run past the memory it was sized for.
func InMemory(s *train.Spec, command string) error {
	if s.MaxMemory > 0 {
		return cli.Usagef("--max-memory: %s reads its training windows whole; stream them with homemole train or the trainer worker, or drop --max-memory", command)
	}
	return nil
}

// intFlag is an int flag that refuses values below min.
type intFlag struct {
	p   *int
	min int
}

// atLeast is the flag of *p, which refuses a value below min.
func atLeast(p *int, min int) *intFlag { return &intFlag{p, min} }

func (f *intFlag) String() string {
	if f == nil || f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (f *intFlag) Set(v string) error {
	n, err := strconv.ParseInt(v, 0, strconv.IntSize)
	if err != nil {
		return fmt.Errorf("%q: want a whole number", v)
	}
	if n < int64(f.min) {
		return fmt.Errorf("%d: want at least %d", n, f.min)
	}
	*f.p = int(n)
	return nil
}

// floatFlag is a float flag that refuses NaN, infinities and values ok
// does not take; want says which it takes.
type floatFlag struct {
	p    *float64
	want string
	ok   func(float64) bool
}

// share is the flag of *p, which takes the finite values ok takes.
func share(p *float64, want string, ok func(float64) bool) *floatFlag {
	return &floatFlag{p, want, ok}
}

func (f *floatFlag) String() string {
	if f == nil || f.p == nil {
		return "0"
	}
	return strconv.FormatFloat(*f.p, 'g', -1, 64)
}

func (f *floatFlag) Set(v string) error {
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || !f.ok(x) {
		return fmt.Errorf("%q: want %s", v, f.want)
	}
	*f.p = x
	return nil
}

// TestShare registers --test-share, the share of capture sessions held
// out, which must lie strictly between 0 and 1 (train.CheckTestShare).
func TestShare(fs *flag.FlagSet, p *float64) {
	*p = 0.2
	fs.Var(share(p, "a share above 0 and below 1, such as 0.2 (at least one session is held out and at least one trained on)", func(v float64) bool { return train.CheckTestShare(v) == nil }),
		"test-share", "`share` of capture sessions held out for evaluation, above 0 and below 1")
}

// oneOf is a flag's setter for a value that must be one of values; a
// value that is not leaves *dst as it was.
func oneOf(dst *string, values ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(values, v) {
			return fmt.Errorf("want %s", strings.Join(values, " or "))
		}
		*dst = v
		return nil
	}
}
