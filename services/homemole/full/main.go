// Command homemole-full is the whole of HomeMole's command line: it runs
// the pipeline in one process on embedded servers (demo, build, train), or
// one worker of it against a NATS JetStream cluster and MinIO. The
// homemole front (services/homemole) hands it every command but features;
// built with -tags torch it is homemole-torch, and the trainer images'
// homemole.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/services/homemole/internal/cmdkit"
	"github.com/homemole/homemole/services/internal/cli"
)

type runFunc func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error

type command struct {
	summary string
	run     runFunc
	// torch marks a command that trains or runs a model: only a build with
	// -tags torch links libtorch and runs it; the default, CGO-free build
	// hands it to that build (torchCommand).
	torch bool
}

func commands() map[string]command {
	cmds := map[string]command{
		"demo":       {"generate a smart home, build a dataset, train a BLSTM and report, all embedded", nil, true},
		"build":      {"build a dataset version from a campaign file (capture -> label -> window -> manifest)", runBuild, false},
		"train":      {"train and evaluate a model on a dataset version; writes checkpoint and report", nil, true},
		"dataset":    {"build, list, inspect and verify datasets: dataset build | ls | inspect | verify | assemble", runDataset, false},
		"cv":         {"cross-validate a model on a dataset: k folds (grouped, random, leave-one-home-out), mean and spread", nil, true},
		"experiment": {"train on one folder of device captures, test on another; JSON summary per capture", nil, true},
		"predict":    {"label every packet of a capture with a stored model; which devices it saw", nil, true},
		"study":      {"window-size study (paper Fig. 8): a dataset per window size, each cross-validated; curve in HTML", nil, true},
		"serve":      {"run the embedded NATS and S3 servers only, for workers in other processes, and the campaign status page", runServe, false},
		"campaign":   {"watch a running campaign: campaign status shows live sessions, packets/s, lag, windows, pairing, devices seen, last error per home and tap", runCampaign, false},
		"features":   {"decode a capture and write one CSV row of features per packet, to check them", runFeatures, false},
		"gateway":    {"emulate a home gateway (napt or vpn): turn a LAN capture into the WAN capture plus ground truth", runGateway, false},
		"defend":     {"defend a LAN capture's emulated WAN view (pad, cbr, stp, mimic, vpn-pad, composed with +); prints the cost: overheads, KB/s, latency", runDefend, false},
		"label":      {"label a LAN capture from the inventory and its WAN capture (napt or vpn) by pairing; prints packets, labels per device, pairing rate", runLabel, false},
		"pair":       {"pair a WAN capture's packets with their LAN packets (napt or vpn); accuracy against a truth file", runPair, false},
		"sp":         {"sequence profiles + CNNs (Ma et al.): sp train | eval | show, from folders of device captures; sp interactions", nil, true},
		"dlq":        {"list the messages consumers could never process, and why (dlq ls); put them back once fixed (dlq replay) or drop them (dlq discard)", runDLQ, false},
		"home":       {"assemble a home from real per-device captures (home assemble): units moved onto one LAN, time-shifted, optionally behind the emulated gateway; count n real units (home count, torch; home steady by steady cloud connections; home hosts on the LAN, host by host) and identical pairs (home pairs); name each capture by its nearest (home nearest)", runHome, false},
		"hosts":      {"count device units on a LAN tap host by host: hosts learn --from-dir DIR --out hosts.json, then hosts count --model hosts.json --in lan.pcap (the detector's --hosts mode, on a file)", runHosts, false},
		"sweep":      {"a grid of experiments (models x views x windows x kinds x seeds x model flags), each cross-validated; resumable; sweep.json, sweep.html, or one Kubernetes Indexed Job", nil, true},
		"detect":     {"report the device types (and how many) in a capture, per time window, with an sp model", nil, true},
	}
	for name, c := range cmds {
		if c.torch {
			c.run = torchCommand(name)
			cmds[name] = c
		}
	}
	// The defence study needs no torch: it runs here in both builds.
	study := cmds["study"]
	study.run = withStudyDefenses(study.run)
	cmds["study"] = study
	return cmds
}

const overview = `homemole fingerprints IoT devices from the metadata of their traffic.

A campaign file names homes, each with a gateway, taps (capture files or
interfaces) and an inventory of MAC -> device. Capture agents publish packet
metadata to NATS JetStream, labelers label it from the inventory, windowers
cut traffic windows into Arrow objects on S3, and trainers learn the
HomeMole BLSTM from them.

Without --nats and --s3 every command starts embedded servers with their
state under --home (default ./.homemole).

Usage: homemole COMMAND [flags]   (homemole COMMAND --help for its flags)

Commands:
`

func main() {
	cmdkit.Main(func(ctx context.Context, log *slog.Logger) error {
		cmds := commands()
		if len(os.Args) < 2 || os.Args[1] == "help" || os.Args[1] == "-h" || os.Args[1] == "--help" {
			fmt.Fprint(os.Stderr, usage(cmds))
			if len(os.Args) < 2 {
				return cli.Usagef("no command given")
			}
			return nil
		}
		c, ok := cmds[os.Args[1]]
		if !ok {
			fmt.Fprint(os.Stderr, usage(cmds))
			return cli.Usagef("unknown command %q", os.Args[1])
		}
		return c.run(ctx, log, os.Stdout, os.Args[2:])
	})
}

func usage(cmds map[string]command) string {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(overview)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-9s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nEnvironment: HOMEMOLE_HOME, HOMEMOLE_NATS_URL, HOMEMOLE_S3_ENDPOINT, HOMEMOLE_S3_BUCKET,\nHOMEMOLE_S3_ACCESS_KEY, HOMEMOLE_S3_SECRET_KEY, HOMEMOLE_LOG (debug|info|warn|error), HOMEMOLE_LOG_FORMAT (json).\n")
	return b.String()
}

// The flag helpers are cmdkit's, which the front shares.
func newFlags(name, synopsis, about string) *flag.FlagSet {
	return cmdkit.NewFlags(name, synopsis, about)
}

func parse(fs *flag.FlagSet, args []string) error { return cmdkit.Parse(fs, args) }

func parseRequired(fs *flag.FlagSet, args []string, need string, required ...*string) error {
	return cmdkit.ParseRequired(fs, args, need, required...)
}

// newStoreFlags makes the flag set of a command that reaches NATS and S3:
// newFlags' with the endpoint flags (--home, --nats, --s3, ...), whose
// defaults come from the environment; the flags fill the returned config.
func newStoreFlags(name, synopsis, about string) (*flag.FlagSet, *endpoints.Config) {
	ep := endpoints.FromEnv()
	fs := newFlags(name, synopsis, about)
	ep.Register(fs)
	return fs, &ep
}

// runSubcommand runs the subcommand args[0] names with the rest of args;
// none, or one not in subs, is a usage error saying usage.
func runSubcommand(ctx context.Context, log *slog.Logger, out io.Writer, args []string, subs map[string]runFunc, usage string) error {
	if len(args) > 0 {
		if run, ok := subs[args[0]]; ok {
			return run(ctx, log, out, args[1:])
		}
	}
	return cli.Usagef("%s", usage)
}

// sharedSubcommands serves several subcommands with one run, which is told
// which of them ran: those that share their flags and store.
func sharedSubcommands(run func(ctx context.Context, log *slog.Logger, out io.Writer, sub string, args []string) error, names ...string) map[string]runFunc {
	subs := make(map[string]runFunc, len(names))
	for _, sub := range names {
		subs[sub] = func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
			return run(ctx, log, out, sub, args)
		}
	}
	return subs
}
