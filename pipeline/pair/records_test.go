package pair

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/schemas"
)

func readRecords(t *testing.T, path string, home features.HomeConfig) []schemas.Packet {
	t.Helper()
	return capturetest.Packets(t, path, home)
}

// readAgentRecords is readRecords as a capture agent of batch version 3
// reads a WAN tap: a TunnelTracker tells each TCP segment's records.
func readAgentRecords(t *testing.T, path string, home features.HomeConfig) []schemas.Packet {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dec, tr := features.NewDecoder(home), NewTunnelTracker()
	var out []schemas.Packet
	var p schemas.Packet
	for {
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p) != nil {
			continue
		}
		tr.Observe(fr.LinkType, fr.Data, &p)
		out = append(out, p)
	}
}

// TestRecordsAgreeWithTruth pairs the records a capture agent would publish
// (not the frames) and scores them against the emulator's ground truth.
func TestRecordsAgreeWithTruth(t *testing.T) {
	dir := t.TempDir()
	g, home := homegentest.Generate(t, homegen.Config{Seed: 7, Sessions: 1, SessionDuration: 5 * time.Minute}, dir)
	lan := readRecords(t, g.Files[0], home)
	for _, tc := range []struct {
		mode   gateway.Mode
		cipher gateway.Cipher
		want   float64
		tcp    bool
	}{{gateway.NAPT, "", 0.999, false}, {gateway.VPN, gateway.AES256GCM, 0.995, false}, {gateway.VPN, gateway.AES256CBC, 0.995, false},
		{gateway.VPN, gateway.WireGuard, 0.995, false}, {gateway.VPN, gateway.AES256GCM, 0.995, true}, {gateway.VPN, gateway.AES256CBC, 0.995, true}} {
		gcfg := gateway.DefaultConfig()
		gcfg.Mode, gcfg.Cipher, gcfg.Seed, gcfg.VPNTCP = tc.mode, tc.cipher, 3, tc.tcp
		wanPath := filepath.Join(dir, string(tc.mode)+string(tc.cipher)+map[bool]string{true: "-tcp"}[tc.tcp]+".pcap")
		wf, err := os.Create(wanPath)
		if err != nil {
			t.Fatal(err)
		}
		truthBuf := new(bytes.Buffer)
		src, err := capture.OpenFile(g.Files[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gateway.Emulate(context.Background(), src, home, gcfg, wf, truthBuf); err != nil {
			t.Fatal(err)
		}
		src.Close()
		wf.Close()
		truth, err := gateway.ReadTruth(truthBuf, "truth")
		if err != nil {
			t.Fatal(err)
		}
		wan := readRecords(t, wanPath, home)
		if tc.tcp {
			// Records carry no payload: without the tunnel records of
			// batch version 3, a TCP tunnel's records cannot be found,
			// which must be said rather than paired wrong.
			if _, err := Records(lan, wan, Config{Mode: tc.mode, Home: home}); !errors.Is(err, errNoTCPPayload) {
				t.Errorf("a TCP tunnel from version 2 records: %v, want %v", err, errNoTCPPayload)
			}
			wan = readAgentRecords(t, wanPath, home)
		}
		// Detection of the cipher is part of what is tested: leave it out.
		res, err := Records(lan, wan, Config{Mode: tc.mode, Home: home})
		if err != nil {
			t.Fatal(err)
		}
		byOffset := make([]int64, len(truth))
		for i := range byOffset {
			byOffset[i] = -1
		}
		for j, l := range res.Pairs {
			if l >= 0 {
				byOffset[wan[j].Offset] = int64(lan[l].Offset)
			}
		}
		correct, total := Score(byOffset, truth)
		acc := float64(correct) / float64(total)
		t.Logf("%s %s: %d WAN records, paired %.2f %%, agree with the truth %.3f %% (cipher %s)", tc.mode, tc.cipher, total, 100*res.Rate(), 100*acc, res.Cipher)
		if len(wan) != len(truth) {
			t.Errorf("%d WAN records, %d truth rows", len(wan), len(truth))
		}
		if acc < tc.want {
			t.Errorf("%s: accuracy %.4f below %.4f", tc.mode, acc, tc.want)
		}
		if tc.mode == gateway.VPN && res.Cipher != tc.cipher {
			t.Errorf("detected cipher %s, the gateway used %s", res.Cipher, tc.cipher)
		}
	}
}
