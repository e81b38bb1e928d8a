package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestGatewayAndPairCommands runs homemole gateway and homemole pair on a
// generated session, in both modes, and checks the reported accuracy.
func TestGatewayAndPairCommands(t *testing.T) {
	dir := t.TempDir()
	h, err := homegen.Generate(homegen.Config{Seed: 2, Sessions: 1, SessionDuration: 2 * time.Minute}, dir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for _, c := range [][]string{{"--mode", "napt"}, {"--mode", "vpn", "--cipher", "aes-256-cbc"}} {
		wan, truth, pairs := filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "truth.csv"), filepath.Join(dir, "pairs.csv")
		var out bytes.Buffer
		args := append([]string{"--in", h.Files[0], "--out", wan, "--truth", truth, "--seed", "9",
			"--lan-net", h.LANNet, "--gateway-mac", h.GatewayMAC}, c...)
		if err := runGateway(context.Background(), log, &out, args); err != nil {
			t.Fatalf("gateway %v: %v", c, err)
		}
		if !strings.Contains(out.String(), "crossed to the WAN") {
			t.Fatalf("gateway output %q", out.String())
		}
		out.Reset()
		args = append([]string{"--lan", h.Files[0], "--wan", wan, "--out", pairs, "--truth", truth,
			"--lan-net", h.LANNet, "--gateway-mac", h.GatewayMAC}, c[:2]...)
		if err := runPair(context.Background(), log, &out, args); err != nil {
			t.Fatalf("pair %v: %v", c, err)
		}
		t.Logf("%s", out.String())
		if !strings.Contains(out.String(), "(100.000 %)") {
			t.Errorf("pair %v: %s", c, out.String())
		}
		b, err := os.ReadFile(pairs)
		if err != nil || !strings.HasPrefix(string(b), "wan_index,lan_index\n0,") {
			t.Fatalf("pairs file: %v %.40q", err, b)
		}
	}
	if err := runPair(context.Background(), log, &bytes.Buffer{}, []string{"--lan", "x"}); !errors.Is(err, cli.ErrUsage) {
		t.Errorf("pair without --wan: %v, want a usage error", err)
	}
	if err := runGateway(context.Background(), log, &bytes.Buffer{}, []string{"--in", h.Files[0], "--out", h.Files[0], "--truth", filepath.Join(dir, "t.csv")}); !errors.Is(err, cli.ErrUsage) {
		t.Errorf("gateway writing over its input: %v, want a usage error", err)
	}
}
