//go:build torch

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestHomeCountCommand measures heartbeat counting of Lightify units (its
// heartbeat learned from its early captures) in homes of its later ones,
// and its steady-connection count, which the combined count then is.
func TestHomeCountCommand(t *testing.T) {
	data := sentineldata.Need(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out bytes.Buffer
	err := runHome(context.Background(), log, &out, []string{"count", "--from-dir", data, "--device", "Lightify", "--units", "1-2", "--homes", "2"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	if !strings.Contains(s, "Lightify heartbeat: udp/80") || !strings.Contains(s, "Lightify steady connection: udp/80") || strings.Count(s, "\n") != 6 ||
		!strings.Contains(s, "mean count error over 4 homes: heartbeat") || !strings.Contains(s, "steady 0.0 % (4 exact) combined 0.0 % (4 exact)") {
		t.Fatalf("home count printed:\n%s", s)
	}
	t.Log(s)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"count", "--from-dir", data}, "--device"},
		{[]string{"count", "--from-dir", data, "--device", "Lightify", "--units", "3-1"}, "--units"},
		{[]string{"count", "--from-dir", data, "--device", "NoSuch"}, "no such device folder"},
	} {
		if err := runHome(context.Background(), log, io.Discard, c.args); !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("home %v = %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
}
