// Package cmdkit is what both homemole binaries share: the flag helpers
// every command parses with, the home-side flags, the features command,
// and the hand-off from one build of the command line to another.
//
// The front (services/homemole) links this package and pipeline/features,
// capture and campaign only, so that `homemole features` starts in
// milliseconds; it hands every other command to the full CLI
// (services/homemole/full, homemole-full), which links NATS, S3, Arrow and
// the rest, and hands model commands to its torch build in turn.
package cmdkit

import (
	"errors"
	"flag"
	"fmt"

	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

// NewFlags makes a flag set whose --help explains the command.
func NewFlags(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: homemole %s %s\n\n%s\n\nFlags:\n", name, synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

// ParseRequired parses flags as Parse does, then refuses, with the usage
// error need, a command line that leaves any of the required flags empty.
func ParseRequired(fs *flag.FlagSet, args []string, need string, required ...*string) error {
	if err := Parse(fs, args); err != nil {
		return err
	}
	for _, r := range required {
		if *r == "" {
			return cli.Usagef("%s", need)
		}
	}
	return nil
}

// Parse parses flags and refuses stray arguments.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return cli.Usagef("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return cli.Usagef("%s: unexpected argument %q (flags come as --name value)", fs.Name(), fs.Arg(0))
	}
	// Names become object keys and folders (datasets/NAME/VERSION,
	// reports/RUN): checked here, where they enter, so that "--run ../.."
	// is refused before anything is opened or written.
	var bad error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "dataset", "name", "version", "run":
			if err := schemas.ValidateToken("--"+f.Name, f.Value.String()); err != nil && bad == nil {
				bad = cli.Usagef("%s: %v", fs.Name(), err)
			}
		}
	})
	return bad
}
