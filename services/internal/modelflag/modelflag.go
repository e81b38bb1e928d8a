// Package modelflag is the one set of flags that chooses and schedules a
// model, shared by every command that trains (homemole train, cv,
// experiment, study, demo) and by the trainer worker, so that a flag means
// the same wherever it is given.
package modelflag

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
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
	fs.IntVar(&s.Trees, "trees", 100, "trees in the Random Forest (rf; paper: 100); the model file grows with them, about 0.5 MB a tree on the IoT Sentinel captures")
	cfg := &s.Learn
	fs.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "training epochs (paper: 15)")
	fs.IntVar(&cfg.BatchSize, "batch", cfg.BatchSize, "windows per training batch")
	fs.Float64Var(&cfg.LR, "lr", cfg.LR, "Adam learning rate (paper: 0.001)")
	fs.IntVar(&cfg.LenEmbedDim, "len-embed", cfg.LenEmbedDim, "size of the exact-frame-length embedding added to the paper's inputs; 0 = the paper's inputs")
	fs.BoolVar(&cfg.HeaderFeatures, "header-features", cfg.HeaderFeatures, "add TTL, TCP window, options and payload length, TCP flags and transport to the paper's inputs")
	fs.IntVar(&cfg.PortSessions, "port-sessions", cfg.PortSessions, "a destination port gets its own embedding only when it appears in at least this many training capture sessions (0 or 1: every port seen twice); keeps ephemeral ports and one session's server port from naming that session")
	fs.Float64Var(&cfg.LabelSmoothing, "label-smoothing", cfg.LabelSmoothing, "share of each packet's training target spread over the other devices (0: none)")
	fs.BoolVar(&cfg.Balance, "balance", cfg.Balance, "weigh each device in the loss by its inverse share of the training packets")
	fs.Func("context", fmt.Sprintf("what each packet's output sees beside its own LSTM state: %s (the paper) or %s (which kinds of packet its device's stream in the capture session holds) (default %s)", learn.ContextNone, learn.ContextStream, cfg.Context), oneOf(&cfg.Context, learn.ContextNone, learn.ContextStream))
	fs.IntVar(&cfg.Hidden, "hidden", cfg.Hidden, "LSTM hidden size per direction (paper: 64)")
	fs.Float64Var(&cfg.Dropout, "dropout", cfg.Dropout, "dropout on the LSTM outputs (paper: 0.5)")
	fs.IntVar(&cfg.Threads, "threads", cfg.Threads, "libtorch intra-op threads, process-wide (0: libtorch's default, one per core; commands that train several models at once divide the cores among them)")
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
