package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

func hostsOutput(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runHosts(context.Background(), quiet(), &out, args)
	return out.String(), err
}

// TestHostsCommands learns the host model and counts a home's LAN capture
// with it, as the detector's --hosts mode does live. The home is assembled
// from captures the model learned from: this checks the command, not
// accuracy (home hosts measures that on held-out homes).
func TestHostsCommands(t *testing.T) {
	data := sentineldata.Need(t)
	dir := t.TempDir()
	model := filepath.Join(dir, "hosts.json")
	s, err := hostsOutput(t, "learn", "--from-dir", data, "--out", model)
	if err != nil || !strings.Contains(s, "EdimaxCam1, EdimaxCam2") || !strings.Contains(s, "SmarterCoffee/iKettle2 ") || strings.Contains(s, "never counted") {
		t.Fatalf("hosts learn: %v\n%s", err, s)
	}
	lan, wan := filepath.Join(dir, "lan.pcap"), filepath.Join(dir, "wan.pcap")
	homeOutput(t, "assemble", "--from-dir", data, "--devices", "4", "--units", "EdimaxCam1=2,WeMoSwitch=1,Aria=1", "--duration", "3m", "--out", lan, "--truth", filepath.Join(dir, "lan.csv"))
	s, err = hostsOutput(t, "count", "--model", model, "--in", lan)
	t.Log(s)
	if err != nil || !strings.Contains(s, "EdimaxCam 2;") || !strings.Contains(s, "WeMoSwitch 1;") || !strings.Contains(s, "Aria 1;") {
		t.Fatalf("hosts count: %v, want EdimaxCam 2, WeMoSwitch 1 and Aria 1 at most:\n%s", err, s)
	}
	s, err = hostsOutput(t, "count", "--model", model, "--in", lan, "--json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for _, l := range lines {
		w, err := schemas.DecodeSeen([]byte(l))
		if err != nil || w.Method != "hosts" || w.EndNs <= w.StartNs {
			t.Fatalf("hosts count --json line %q: %v, want a Seen window of method hosts", l, err)
		}
	}
	homeOutput(t, "assemble", "--from-dir", data, "--devices", "2", "--duration", "1m", "--view", "napt", "--out", wan, "--truth", filepath.Join(dir, "wan.csv"))
	if _, err := hostsOutput(t, "count", "--model", model, "--in", wan); err == nil || !strings.Contains(err.Error(), "LAN tap") {
		t.Errorf("hosts count of a WAN capture: %v, want an error naming the LAN tap", err)
	}
	// A WAN model counts the view beyond the NAPT by IP ID sequences.
	wanModel := filepath.Join(dir, "hosts-wan.json")
	s, err = hostsOutput(t, "learn", "--from-dir", data, "--out", wanModel, "--wan")
	if err != nil || !strings.Contains(s, "for a WAN tap beyond a NAPT") || !strings.Contains(s, "Lightify  (counted: one sequence a unit)") {
		t.Fatalf("hosts learn --wan: %v\n%s", err, s)
	}
	napt := filepath.Join(dir, "napt.pcap")
	homeOutput(t, "assemble", "--from-dir", data, "--devices", "4", "--units", "Lightify=3", "--duration", "2m", "--view", "napt", "--id-offsets", "--out", napt, "--truth", filepath.Join(dir, "napt.csv"))
	if s, err = hostsOutput(t, "count", "--model", wanModel, "--in", napt); err != nil || !strings.Contains(s, "Lightify 3;") {
		t.Errorf("hosts count with the WAN model beyond the NAPT: %v, want Lightify 3 at most:\n%s", err, s)
	}
	if s, err = hostsOutput(t, "count", "--model", wanModel, "--in", napt, "--json"); err != nil || !strings.Contains(s, `"method":"ip-id"`) || strings.Contains(s, `"method":"hosts"`) {
		t.Errorf("hosts count --json with the WAN model: %v, want windows of method ip-id:\n%.300s", err, s)
	}
	// An IPv6-only capture has no IP ID to link.
	v6 := filepath.Join(dir, "v6.pcap")
	homeOutput(t, "assemble", "--from-dir", data, "--devices", "2", "--duration", "1m", "--ipv6", "--out", v6, "--truth", filepath.Join(dir, "v6.csv"))
	if _, err := hostsOutput(t, "count", "--model", wanModel, "--in", v6); err == nil || !strings.Contains(err.Error(), "IP ID") {
		t.Errorf("hosts count of an IPv6-only capture with the WAN model: %v, want an error saying it needs IPv4 IP IDs", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version":9}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := hostsOutput(t, "count", "--model", bad, "--in", lan); err == nil || !strings.Contains(err.Error(), "hosts learn") {
		t.Errorf("hosts count with a bad model: %v, want an error saying how to learn one", err)
	}
	for _, c := range []usageCase{
		{[]string{"learn"}, "--from-dir"},
		{[]string{"count", "--model", model}, "--in"},
		{[]string{"count", "--model", model, "--in", lan, "--every", "0s"}, "whole number"},
		// A window of a million hours every 10 s is 360 million windows
		// a packet is in: refused, naming the flag, not walked for hours.
		{[]string{"count", "--model", model, "--in", lan, "--window", "1000000h"}, "--window 1000000h0m0s"},
		{[]string{"count", "--model", model, "--in", lan, "--gateway-mac", "nope"}, "--gateway-mac"},
	} {
		if _, err := hostsOutput(t, c.args...); !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("hosts %v = %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
}
