package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/homemole/homemole/services/internal/cli"
)

// TestBuildFromDirInfersHome: `dataset build --from-dir` infers each
// capture's home side, as every other command does, and prints it; the
// IoT Sentinel captures' gateway (00:b5:6d:06:08:ba) comes out for most of
// them. --gateway-mac and --lan-net override, and then nothing is inferred.
func TestBuildFromDirInfersHome(t *testing.T) {
	sentineldata.Need(t)
	if _, err := os.Stat(sentinelDir); err != nil {
		t.Skipf("real captures not beside the project: %v", err)
	}
	train, _, _ := splitDevices(t, "Aria", "HueBridge")
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	ctx := context.Background()

	var out bytes.Buffer
	if err := runDataset(ctx, quiet(), &out, []string{"build", "--home", filepath.Join(t.TempDir(), "hm"), "--from-dir", train,
		"--name", "inferred", "--window", "20"}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	re := regexp.MustCompile(`home side inferred for (\d+) of (\d+) captures: gateway MAC ([0-9a-f:]+|none)`)
	sentinelGW, total := 0, 0
	for _, m := range re.FindAllStringSubmatch(out.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
		if m[3] == "00:b5:6d:06:08:ba" {
			sentinelGW += n
		}
	}
	if total == 0 {
		t.Fatalf("no inferred home side printed:\n%s", out.String())
	}
	if sentinelGW*10 < total*8 {
		t.Errorf("the captures' gateway 00:b5:6d:06:08:ba inferred for %d of %d captures, want at least 80 %%", sentinelGW, total)
	}

	out.Reset()
	if err := runDataset(ctx, quiet(), &out, []string{"build", "--home", filepath.Join(t.TempDir(), "hm"), "--from-dir", train,
		"--name", "given", "--window", "20", "--gateway-mac", "00:b5:6d:06:08:ba", "--lan-net", "10.10.10.0/24"}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "inferred") || !strings.Contains(out.String(), "Dataset given/") {
		t.Errorf("with --gateway-mac and --lan-net nothing is inferred and the dataset is built:\n%s", out.String())
	}

	campaignFile := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(campaignFile, []byte("name: c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runBuild(ctx, quiet(), &bytes.Buffer{}, []string{"--campaign", campaignFile, "--dataset", "d", "--lan-net", "10.0.0.0/8"})
	if !errors.Is(err, cli.ErrUsage) {
		t.Errorf("--lan-net with a campaign file: %v, want a usage error", err)
	}
}
