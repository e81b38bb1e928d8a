package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/services/homemole/internal/cmdkit"
	"github.com/homemole/homemole/services/internal/cli"
)

// sentinelDir holds the IoT Sentinel captures, beside the project.
const sentinelDir = "../../../../shared/data/iot-sentinel-dev"

// tsharkFields are what the comparison reads from tshark, in column order.
// -E occurrence=f makes every field its first occurrence, the outer header's,
// where a packet holds a header twice (ICMP errors quote the IP header and
// the start of the transport header of the packet they answer).
var tsharkFields = []string{
	"frame.time_epoch", "frame.time_delta", "frame.len", "frame.protocols",
	"ip.ttl", "ip.len", "ip.hdr_len", "ip.proto", "ip.frag_offset",
	"ipv6.hlim", "ipv6.plen", "ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.hopopts.len_oct", "ipv6.dstopts.nxt", "ipv6.dstopts.len_oct",
	"ipv6.routing.nxt", "ipv6.routing.len_oct", "ipv6.fraghdr.nxt", "ipv6.fraghdr.offset",
	"tcp.dstport", "tcp.flags", "tcp.window_size_value", "tcp.hdr_len", "tcp.len",
	"udp.dstport", "udp.length",
}

// TestFeaturesAgreeWithTshark runs `homemole features` and tshark over every
// packet of every IoT Sentinel capture and compares them field by field.
// The captures are merged into one file first (mergecap -a keeps their
// order) because one tshark per file would spend a minute starting up.
func TestFeaturesAgreeWithTshark(t *testing.T) {
	sentineldata.Need(t)
	files, _ := filepath.Glob(filepath.Join(sentinelDir, "*", "*.pcap"))
	if len(files) == 0 {
		t.Skipf("no IoT Sentinel captures under %s", sentinelDir)
	}
	sort.Strings(files)
	needTshark(t)
	mergecap := "/usr/bin/mergecap"
	merged := filepath.Join(t.TempDir(), "merged.pcap")
	if out, err := exec.Command(mergecap, append([]string{"-a", "-w", merged}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("mergecap -a over %d captures: %v\n%s", len(files), err, out)
	}

	c := compareWithTshark(t, merged, 0, "f")
	t.Logf("%d packets of %d captures; %d ICMP errors quote an inner header, whose fields tshark shows and which are not the packet's own",
		c.packets, len(files), c.quoted)
	c.log(t)
}

// tsharkComparison is how `homemole features` and tshark agreed on one capture.
type tsharkComparison struct {
	packets, quoted int
	agree, present  map[string]int
	// protocols is tshark's frame.protocols of every frame.
	protocols []string
}

// comparedFields are the CSV columns compared with tshark, by the names
// readOurCSV and expectFromTshark give them.
var comparedFields = []string{"timestamp", "interval", "frame length", "TTL", "IP total length", "transport", "destination port",
	"TCP flags", "TCP window", "TCP options length", "payload length"}

// compareWithTshark runs `homemole features` and tshark over one capture
// and compares them field by field, failing the test on every disagreement
// (the first five of each field are shown). bridged is how many bytes
// longer than its bridged Ethernet frame each frame is (802.11 captures;
// tshark's frame.len is the captured frame's); occurrence is tshark's: f
// for the outermost header's fields, l for the innermost, of a frame
// carried in another.
func compareWithTshark(t *testing.T, path string, bridged int, occurrence string) tsharkComparison {
	t.Helper()
	// tshark is single-threaded and takes seconds; ours runs beside it.
	args := []string{"-n", "-r", path, "-T", "fields", "-E", "occurrence=" + occurrence, "-E", "separator=/t"}
	for _, f := range tsharkFields {
		args = append(args, "-e", f)
	}
	var tsharkOut, tsharkErr bytes.Buffer
	cmd := exec.Command("/usr/bin/tshark", args...)
	cmd.Stdout, cmd.Stderr = &tsharkOut, &tsharkErr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tshark: %v", err)
	}
	var ours, stderr bytes.Buffer
	ourErr := cmdkit.Features(context.Background(), &ours, &stderr, []string{"--in", path})
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", path, err, tsharkErr.String())
	}
	if ourErr != nil {
		t.Fatalf("homemole features --in %s: %v", path, ourErr)
	}
	// The line saying which home side was inferred is expected, and for a
	// cooked capture the one of its view, for an NFLOG log the one of how
	// it was read (without a warning: none has a ';').
	if rest := inferredLine.ReplaceAllString(stderr.String(), ""); rest != "" {
		t.Errorf("homemole features reported on stderr: %s", rest)
	}

	ourRows := readOurCSV(t, ours.Bytes())
	theirRows := readTshark(t, tsharkOut.Bytes())
	if len(ourRows) != len(theirRows) {
		t.Fatalf("homemole features wrote %d rows, tshark %d: rows can only be matched in order when every packet has one", len(ourRows), len(theirRows))
	}
	c := tsharkComparison{packets: len(ourRows), agree: map[string]int{}, present: map[string]int{}}
	shown := map[string]int{}
	for i := range ourRows {
		o, want := ourRows[i], expectFromTshark(t, i, theirRows[i])
		if n, err := strconv.Atoi(want.values["frame length"]); err == nil && bridged != 0 {
			want.values["frame length"] = strconv.Itoa(n - bridged)
		}
		c.protocols = append(c.protocols, want.protocols)
		if want.quotesInner {
			c.quoted++
		}
		for _, f := range comparedFields {
			got, exp := o[f], want.values[f]
			if exp != "" {
				c.present[f]++
			}
			if got == exp {
				c.agree[f]++
				continue
			}
			if shown[f]++; shown[f] <= 5 {
				t.Errorf("%s frame %d (%s), %s: homemole %q, tshark %q", filepath.Base(path), i+1, want.protocols, f, got, exp)
			}
		}
	}
	return c
}

func (c tsharkComparison) log(t *testing.T) {
	t.Logf("%-20s %8s %8s %9s", "field", "packets", "agree", "agreement")
	for _, f := range comparedFields {
		t.Logf("%-20s %8d %8d %8.3f%%  (%d packets have it)", f, c.packets, c.agree[f], 100*float64(c.agree[f])/float64(c.packets), c.present[f])
	}
}

// inferredLine is the line features prints of the home side it inferred
// and, for a cooked capture, of what its LAN view kept.
var inferredLine = regexp.MustCompile(`(?m)^features: (home side of .* inferred|.*: capture on every interface \(tcpdump -i any, -i pktap\)|.*: NFLOG log: [^;]*$).*\n`)

// needTshark skips a test on a machine without tshark and mergecap.
func needTshark(t *testing.T) {
	for _, tool := range []string{"/usr/bin/tshark", "/usr/bin/mergecap"} {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("%s is not installed (Debian package tshark; `go tool task test` installs it): %v", tool, err)
		}
	}
}

// readOurCSV splits the command's CSV into rows keyed by the comparison's
// field names, with values in tshark's notation where they differ.
func readOurCSV(t *testing.T, b []byte) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) == 0 || lines[0] != "ts_ns,dport,proto_bits,direction,frame_len,interval_s,ttl,ip_len,transport,tcp_flags,tcp_window,tcp_options_len,payload_len" {
		t.Fatalf("CSV header is %q", lines[0])
	}
	rows := make([]map[string]string, 0, len(lines)-1)
	for i, line := range lines[1:] {
		c := strings.Split(line, ",")
		if len(c) != 13 {
			t.Fatalf("CSV row %d has %d fields: %q", i+1, len(c), line)
		}
		rows = append(rows, map[string]string{
			"timestamp": c[0], "destination port": c[1], "frame length": c[4], "interval": secondsToNs(t, c[5]),
			"TTL": c[6], "IP total length": c[7], "transport": c[8],
			"TCP flags": c[9], "TCP window": c[10], "TCP options length": c[11], "payload length": c[12],
		})
	}
	return rows
}

func readTshark(t *testing.T, b []byte) []map[string]string {
	t.Helper()
	var rows []map[string]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) != len(tsharkFields) {
			t.Fatalf("tshark line %d has %d fields, want %d: %q", len(rows)+1, len(c), len(tsharkFields), sc.Text())
		}
		row := make(map[string]string, len(c))
		for j, f := range tsharkFields {
			row[f] = c[j]
		}
		rows = append(rows, row)
	}
	return rows
}

type expectation struct {
	values      map[string]string
	protocols   string
	quotesInner bool
}

// expectFromTshark turns tshark's fields of frame i into what the decoder's
// record must hold, reading tshark's dissection as the decoder defines the
// record: the outermost IP header and the transport header that follows it.
func expectFromTshark(t *testing.T, i int, r map[string]string) expectation {
	e := expectation{values: map[string]string{}, protocols: r["frame.protocols"]}
	v := e.values
	v["timestamp"] = secondsToNs(t, r["frame.time_epoch"])
	// The decoder's gap is never negative: where the merged file steps back
	// in time from one capture to the next, it is 0 and tshark's delta negative.
	if d := r["frame.time_delta"]; strings.HasPrefix(d, "-") {
		v["interval"] = "0"
	} else {
		v["interval"] = secondsToNs(t, d)
	}
	v["frame length"] = r["frame.len"]

	// The outer IP version is the first IP layer tshark names; of a
	// mirror's packet, the first of the frame it carries, which is the
	// record's (tshark's fields are then the last occurrences).
	var transport string
	ipPayload, later := 0, false
	protocols := r["frame.protocols"]
	for _, mirror := range []string{":tzsp:", ":vxlan:", ":erspan:", ":gre:"} {
		if _, carried, ok := strings.Cut(protocols, mirror); ok {
			protocols = carried
			break
		}
	}
	for _, p := range strings.Split(protocols, ":") {
		if p == "ip" {
			v["TTL"], v["IP total length"] = r["ip.ttl"], r["ip.len"]
			transport = r["ip.proto"]
			ipPayload = atoi(t, r["ip.len"]) - atoi(t, r["ip.hdr_len"])
			later = r["ip.frag_offset"] != "0"
			break
		}
		if p == "ipv6" {
			v["TTL"] = r["ipv6.hlim"]
			v["IP total length"] = strconv.Itoa(atoi(t, r["ipv6.plen"]) + 40)
			ipPayload = atoi(t, r["ipv6.plen"])
			// tshark names the next header of each extension header
			// separately; the transport is at the end of that chain.
			transport = r["ipv6.nxt"]
			for range 8 {
				ext, ok := ipv6Ext[transport]
				if !ok || r[ext.next] == "" {
					break
				}
				transport = r[ext.next]
				if ext.length == "" {
					ipPayload -= 8
					later = r["ipv6.fraghdr.offset"] != "0"
				} else {
					ipPayload -= atoi(t, r[ext.length])
				}
			}
			break
		}
	}
	v["transport"] = transport

	// tshark shows TCP or UDP fields for headers that are not this packet's
	// own: in the quoted packet of an ICMP error (the outer transport is
	// ICMP), and on the last fragment of a datagram it reassembled. Only a
	// TCP or UDP header right after the outer IP header, in a packet that
	// is not a later fragment, is the packet's.
	switch {
	case transport == "6" && !later:
		v["destination port"] = r["tcp.dstport"]
		flags, err := strconv.ParseUint(r["tcp.flags"], 0, 16)
		if err != nil {
			t.Fatalf("frame %d: tshark tcp.flags %q: %v", i+1, r["tcp.flags"], err)
		}
		// tshark's field also spans the three reserved bits above NS;
		// the record keeps the nine flags (none of these captures sets one).
		v["TCP flags"] = strconv.FormatUint(flags&0x1ff, 10)
		v["TCP window"] = r["tcp.window_size_value"]
		v["TCP options length"] = strconv.Itoa(atoi(t, r["tcp.hdr_len"]) - 20)
		v["payload length"] = r["tcp.len"]
	case transport == "17" && !later:
		v["destination port"] = r["udp.dstport"]
		v["payload length"] = strconv.Itoa(atoi(t, r["udp.length"]) - 8)
	case transport != "":
		e.quotesInner = r["tcp.dstport"] != "" || r["udp.dstport"] != ""
		v["payload length"] = strconv.Itoa(ipPayload)
	}
	return e
}

// ipv6Ext names tshark's fields for the IPv6 extension headers the decoder
// walks: the next header and the length in bytes (fixed 8 for fragments).
var ipv6Ext = map[string]struct{ next, length string }{
	"0":  {"ipv6.hopopts.nxt", "ipv6.hopopts.len_oct"},
	"60": {"ipv6.dstopts.nxt", "ipv6.dstopts.len_oct"},
	"43": {"ipv6.routing.nxt", "ipv6.routing.len_oct"},
	"44": {"ipv6.fraghdr.nxt", ""},
}

// secondsToNs turns a decimal number of seconds into integer nanoseconds
// without going through a float, so both sides compare exactly.
func secondsToNs(t *testing.T, s string) string {
	sec, frac, _ := strings.Cut(s, ".")
	if len(frac) > 9 {
		t.Fatalf("time %q is finer than a nanosecond", s)
	}
	ns, err := strconv.ParseInt(sec+frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return fmt.Sprint(ns)
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("tshark number %q: %v", s, err)
	}
	return n
}

// featuresCapture writes a pcap of n UDP packets one millisecond apart,
// with the frames in bad replaced by a 10-byte stub no decoder can read.
func featuresCapture(t *testing.T, n int, bad map[int]bool) (string, []byte) {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x10}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{192, 168, 1, 10}, DstIP: net.IP{52, 1, 2, 3}},
		&layers.UDP{SrcPort: 40000, DstPort: 123}, gopacket.Payload(make([]byte, 48)))
	if err != nil {
		t.Fatalf("build test frame: %v", err)
	}
	var frames []capFrame
	for i := range n {
		data := buf.Bytes()
		if bad[i] {
			data = data[:10]
		}
		frames = append(frames, capFrame{gopacket.CaptureInfo{Timestamp: time.Unix(1_700_000_000, 0).Add(time.Duration(i) * time.Millisecond)}, data})
	}
	path := filepath.Join(t.TempDir(), "in.pcap")
	return path, writeCapture(t, path, uint16(layers.LinkTypeEthernet), false, frames)
}

func TestFeaturesCommand(t *testing.T) {
	ctx := context.Background()
	const row = ",123,1010001,1,90,%s,64,76,17,,,,48"

	t.Run("rows to a file, undecodable packets counted on stderr", func(t *testing.T) {
		in, _ := featuresCapture(t, 5, map[int]bool{1: true, 3: true})
		outPath := filepath.Join(t.TempDir(), "f.csv")
		var stdout, stderr bytes.Buffer
		if err := cmdkit.Features(ctx, &stdout, &stderr, []string{"--in", in, "--out", outPath}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(outPath)
		if err != nil {
			t.Fatal(err)
		}
		want := "ts_ns,dport,proto_bits,direction,frame_len,interval_s,ttl,ip_len,transport,tcp_flags,tcp_window,tcp_options_len,payload_len\n" +
			"1700000000000000000" + fmt.Sprintf(row, "0") + "\n" +
			"1700000000002000000" + fmt.Sprintf(row, "0.002") + "\n" +
			"1700000000004000000" + fmt.Sprintf(row, "0.002") + "\n"
		if string(got) != want {
			t.Errorf("CSV:\n%s\nwant:\n%s", got, want)
		}
		if stdout.Len() != 0 {
			t.Errorf("with --out, stdout got %q", stdout.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, "skipped 2 of 5 packets") || !strings.Contains(msg, "Ethernet") || !strings.Contains(msg, in) {
			t.Errorf("stderr %q does not report the 2 skipped packets with the first error", msg)
		}
	})

	t.Run("truncated capture: rows before the cut, then the error", func(t *testing.T) {
		_, raw := featuresCapture(t, 4, nil)
		in := filepath.Join(t.TempDir(), "cut.pcap")
		if err := os.WriteFile(in, raw[:len(raw)-20], 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		err := cmdkit.Features(ctx, &stdout, &stderr, []string{"--in", in, "--lan-net", "192.168.1.0/24", "--lan-mac", "02:00:00:00:00:01"})
		if !errors.Is(err, capture.ErrTruncated) || !strings.Contains(err.Error(), in) || !strings.Contains(err.Error(), "truncated after packet 3") {
			t.Fatalf("error %v, want the capture's truncation", err)
		}
		if n := strings.Count(stdout.String(), "\n"); n != 4 {
			t.Errorf("%d lines before the error, want the header and 3 rows:\n%s", n, stdout.String())
		}
	})

	t.Run("direction follows --lan-net", func(t *testing.T) {
		in, _ := featuresCapture(t, 1, nil)
		var stdout, stderr bytes.Buffer
		// With 52.0.0.0/8 as the LAN too, the packet no longer leaves it.
		if err := cmdkit.Features(ctx, &stdout, &stderr, []string{"--in", in, "--lan-net", "192.168.1.0/24,52.0.0.0/8"}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stdout.String(), ",123,1010001,-1,") {
			t.Errorf("CSV %q: want direction -1 (local)", stdout.String())
		}
	})

	for name, c := range map[string]struct {
		args  []string
		usage bool
		want  string
	}{
		"no input":       {nil, true, "--in FILE"},
		"bad prefix":     {[]string{"--in", "x.pcap", "--lan-net", "192.168.1/24"}, true, "not a CIDR prefix"},
		"bad MAC":        {[]string{"--in", "x.pcap", "--lan-mac", "02:00:00"}, true, "hex bytes"},
		"stray argument": {[]string{"--in", "x.pcap", "y.pcap"}, true, "unexpected argument"},
		"out is in":      {[]string{"--in", "x.pcap", "--out", "./x.pcap"}, true, "the capture itself"},
		"missing file":   {[]string{"--in", filepath.Join(t.TempDir(), "none.pcap")}, false, "none.pcap"},
	} {
		var stdout, stderr bytes.Buffer
		err := cmdkit.Features(ctx, &stdout, &stderr, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, cli.ErrUsage) != c.usage {
			t.Errorf("%s: got %v, want an error with %q (usage error: %v)", name, err, c.want, c.usage)
		}
	}
}
