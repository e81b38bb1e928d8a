package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/services/internal/cli"
)

// runDLQ lists, replays and discards the dead-letter stream: the messages consumers
// could never process (an unknown home or tap, a forged or undecodable
// batch), kept with why instead of dropped.
func runDLQ(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return runSubcommand(ctx, log, out, args, sharedSubcommands(runDLQOn, "ls", "replay", "discard"),
		"dlq needs a subcommand: ls | replay | discard [--subject PATTERN] [--seq N]")
}

// runDLQOn is dlq ls, replay and discard: the same dead letters chosen by
// the same flags, listed, put back or removed.
func runDLQOn(ctx context.Context, log *slog.Logger, out io.Writer, sub string, args []string) error {
	fs, ep := newStoreFlags("dlq "+sub, "[--subject PATTERN] [--seq N] [--json]",
		"ls lists the dead letters: the messages consumers moved to the DLQ stream because\n"+
			"they can never succeed as they are, each with its original subject, the consumer\n"+
			"that gave up and why. replay puts them back on their original subjects, once the\n"+
			"cause is fixed (the home added to the labeler's campaign, the labeler restarted),\n"+
			"and removes them from the DLQ; replaying twice stores a message once. discard removes\n"+
			"them for good (a forged batch, once looked at); it needs --subject or --seq.")
	subject := fs.String("subject", "", "only dead letters whose original subject matches this pattern (hm.pkt.c.home-2.>)")
	seq := fs.Uint64("seq", 0, "only the dead letter of this DLQ sequence number")
	asJSON := fs.Bool("json", false, "ls: one JSON object per dead letter")
	if err := parse(fs, args); err != nil {
		return err
	}
	env, err := endpoints.Open(ctx, *ep, "homemole-dlq", log)
	if err != nil {
		return err
	}
	defer env.Close()
	letters, err := env.Bus.DeadLetters(ctx, *subject)
	if err != nil {
		return err
	}
	if *seq != 0 {
		var one []bus.DeadLetter
		for _, dl := range letters {
			if dl.Seq == *seq {
				one = append(one, dl)
			}
		}
		if len(one) == 0 {
			return fmt.Errorf("no dead letter %d (homemole dlq ls lists them)", *seq)
		}
		letters = one
	}
	if sub == "discard" {
		if *subject == "" && *seq == 0 {
			return cli.Usagef("dlq discard needs --subject PATTERN or --seq N: it removes dead letters for good")
		}
		n, err := env.Bus.Discard(ctx, letters)
		fmt.Fprintf(out, "discarded %d of %d dead letters\n", n, len(letters))
		return err
	}
	if sub == "replay" {
		n, err := env.Bus.Replay(ctx, letters)
		fmt.Fprintf(out, "replayed %d of %d dead letters\n", n, len(letters))
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, dl := range letters {
			if err := enc.Encode(dl); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tFAILED AT\tSUBJECT\tCONSUMER\tBYTES\tREASON")
	for _, dl := range letters {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", dl.Seq, dl.FailedAt.Format("2006-01-02 15:04:05"), dl.Subject, dl.Consumer, dl.Bytes, dl.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d dead letters\n", len(letters))
	return nil
}
