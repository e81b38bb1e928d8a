package capture

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/internal/netnstest"
	"github.com/homemole/homemole/schemas"
)

// cookedLab is netnstest's bridged gateway, captured with tcpdump and live.
type cookedLab struct{ *netnstest.BridgedGateway }

func newCookedLab(t *testing.T) cookedLab {
	t.Helper()
	if os.Getenv("HOMEMOLE_LAB_LATER") != "" {
		// Five tcpdumps and two live captures on a 2-core machine that is
		// training models in parallel would drop packets.
		t.Skip("HOMEMOLE_LAB_LATER is set: go tool task test runs the cooked-capture gateway after this run, alone (go tool task live-test)")
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("the cooked-capture gateway needs tcpdump: apt-get install tcpdump (go tool task test installs it)")
	}
	return cookedLab{netnstest.NewBridgedGateway(t)}
}

// tcpdump starts tcpdump in the gateway; the returned function stops it
// and says whether the kernel dropped any packet.
func (l cookedLab) tcpdump(t *testing.T, path string, args ...string) func() error {
	t.Helper()
	base := []string{"tcpdump", "-w", path, "-s", "0", "-B", "65536", "-n", "-U", "--immediate-mode", "-Z", "root"}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "nflog") }) {
		// netfilter's log stamps in microseconds and refuses finer.
		base = append(base, "--time-stamp-precision=nano")
	}
	return l.capturing(t, append(base, args...), "listening on", func(out string) bool {
		return strings.Contains(out, "dropped by kernel") && !strings.Contains(out, "\n0 packets dropped by kernel")
	})
}

// capturing starts a capturing program (args) in the gateway and waits
// until its stderr says ready; the returned function stops it (SIGINT, so
// that it writes its file out) and says whether dropped, given the
// program's stderr, finds that it lost packets.
func (l cookedLab) capturing(t *testing.T, args []string, ready string, dropped func(stderr string) bool) func() error {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.GW}, args...)...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), ready) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("%v did not start: %s", args, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() error {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		if out := stderr.String(); dropped(out) {
			return fmt.Errorf("%v dropped packets: %s", args, out)
		}
		return nil
	}
}

// runTraffic runs the home's traffic (Traffic) while the captures that
// start starts run, and stops them, last started first. On a loaded machine
// tcpdump may fall behind and the kernel drop frames from one capture and
// not another: then the whole run is repeated, up to three times; attempt
// counts them from 1.
func (l cookedLab) runTraffic(t *testing.T, start func(attempt int) []func() error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		stops := start(attempt)
		time.Sleep(300 * time.Millisecond)
		l.Traffic(t)
		time.Sleep(300 * time.Millisecond)
		var dropped error
		for i := len(stops) - 1; i >= 0; i-- {
			dropped = cmp.Or(stops[i](), dropped)
		}
		if dropped == nil {
			return
		}
		if attempt == 3 {
			t.Fatalf("three runs: %v", dropped)
		}
		t.Logf("run %d: %v; running again", attempt, dropped)
	}
}

// lockedBuffer is tcpdump's stderr, written by exec's copier while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// liveStats are the views' counts of the live captures, by noRing.
var liveStats [2]CookedStats

// collectLab reads src into *into on a goroutine until it ends, each frame
// passed by check (which says what is wrong with one, or ""); the returned
// channel gives its end (nil for io.EOF).
func collectLab(src Source, into *[]labFrame, check func(Frame) string) <-chan error {
	*into = nil
	done := make(chan error, 1)
	go func() {
		for {
			f, err := src.Next()
			if errors.Is(err, io.EOF) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			if msg := check(f); msg != "" {
				done <- fmt.Errorf("live frame %d: %s", f.Offset, msg)
				return
			}
			*into = append(*into, labFrame{data: string(f.Data), ts: f.CI.Timestamp})
		}
	}()
	return done
}

// wholeEthernet says what is wrong with a frame that should be a whole
// Ethernet frame, or "".
func wholeEthernet(f Frame) string {
	if f.LinkType != features.LinkTypeEthernet || f.CI.CaptureLength != len(f.Data) || f.CI.Length != len(f.Data) {
		return fmt.Sprintf("link type %d, %d of %d bytes, %d in the slice", f.LinkType, f.CI.CaptureLength, f.CI.Length, len(f.Data))
	}
	return ""
}

// liveSides captures on every interface of the gateway with OpenLiveSides,
// as the capture agent does for a home whose LAN and WAN taps are both
// interface any, into lan and wan.
func (l cookedLab) liveSides(t *testing.T, lan, wan *[]labFrame, st *[2]CookedStats) func() error {
	t.Helper()
	var sides [2]Source
	netnstest.Do(t, l.GW, "OpenLiveSides", func() (err error) {
		sides[0], sides[1], err = OpenLiveSides(LiveOptions{PollTimeout: 10 * time.Millisecond, BufferBytes: 16 << 20})
		return err
	})
	done := []<-chan error{collectLab(sides[0], lan, wholeEthernet), collectLab(sides[1], wan, wholeEthernet)}
	return func() error {
		time.Sleep(100 * time.Millisecond)
		ks, _ := sides[0].(interface{ Stats() (LiveStats, error) }).Stats()
		for i, src := range sides {
			src.Close()
			if err := <-done[i]; err != nil {
				t.Fatalf("live capture of both sides: %v", err)
			}
			st[i], _ = CookedStatsOf(src)
		}
		if ks.Dropped > 0 {
			return fmt.Errorf("the live capture of both sides dropped %d packets", ks.Dropped)
		}
		return nil
	}
}

// live captures on every interface of the gateway with OpenLive, as the
// capture agent does with --interface any, into *into; the returned
// function stops it and says whether the kernel dropped any packet.
func (l cookedLab) live(t *testing.T, noRing bool, into *[]labFrame) func() error {
	t.Helper()
	var src Source
	netnstest.Do(t, l.GW, "OpenLive(any)", func() (err error) {
		src, err = OpenLive(AnyInterface, LiveOptions{PollTimeout: 10 * time.Millisecond, BufferBytes: 16 << 20, noRing: noRing})
		return err
	})
	done := collectLab(src, into, wholeEthernet)
	return func() error {
		// Let the last packets reach the ring before it closes.
		time.Sleep(100 * time.Millisecond)
		ks, _ := src.(interface{ Stats() (LiveStats, error) }).Stats()
		src.Close()
		if err := <-done; err != nil {
			t.Fatalf("live capture on any: %v", err)
		}
		liveStats[btoi(noRing)], _ = CookedStatsOf(src)
		if ks.Dropped > 0 {
			return fmt.Errorf("the live capture on any dropped %d packets", ks.Dropped)
		}
		return nil
	}
}

type labFrame struct {
	data string
	ts   time.Time
	from int
}

func readLabFrames(t *testing.T, path string, from int) ([]labFrame, Source) {
	t.Helper()
	return readLabSide(t, path, from, SideLAN)
}

func readLabSide(t *testing.T, path string, from int, side Side) ([]labFrame, Source) {
	t.Helper()
	src, err := OpenFileSide(path, side)
	if err != nil {
		t.Fatal(err)
	}
	var out []labFrame
	for i, f := range readAll(t, src) {
		if f.link != features.LinkTypeEthernet || f.ci.CaptureLength != len(f.data) || f.ci.Length != len(f.data) {
			t.Fatalf("%s: frame %d has link type %d, %d bytes captured of %d, %d in the slice", path, i, f.link, f.ci.CaptureLength, f.ci.Length, len(f.data))
		}
		out = append(out, labFrame{data: string(f.data), ts: f.ci.Timestamp, from: from})
	}
	return out, src
}

// TestCookedCaptureIsTheLANView captures a gateway with `tcpdump -i any`
// (SLL2, and SLL with -y LINUX_SLL) while its bridge's ports are captured
// on their own, and requires the cooked capture's view to be exactly the
// frames the ports saw, byte for byte, each once: every WAN, loopback and
// bridge copy left out, every destination MAC put back. Read as the WAN
// side, the same captures are the frames the WAN interface saw; and a live
// capture of both sides at once (OpenLiveSides) gives both.
func TestCookedCaptureIsTheLANView(t *testing.T) {
	l := newCookedLab(t)
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n+".pcap") }
	// The devices' IPv6 start-up (MLD reports) is over before any capture
	// starts, and nothing is sent while only some of them run.
	time.Sleep(2 * time.Second)
	var live [2][]labFrame
	var both [2][]labFrame // OpenLiveSides' LAN and WAN sides
	var bothStats [2]CookedStats
	l.runTraffic(t, func(int) []func() error {
		var stops []func() error
		for _, c := range [][]string{
			{"p1", "-i", l.P1},
			{"p2", "-i", l.P2},
			{"wan", "-i", l.WAN},
			{"any2", "-i", "any"},
			{"any1", "-i", "any", "-y", "LINUX_SLL"},
		} {
			stops = append(stops, l.tcpdump(t, path(c[0]), c[1:]...))
		}
		// And the agent's own live capture on every interface, by both
		// of its mechanisms.
		for _, noRing := range []bool{false, true} {
			stops = append(stops, l.live(t, noRing, &live[btoi(noRing)]))
		}
		return append(stops, l.liveSides(t, &both[0], &both[1], &bothStats))
	})

	// The LAN's frames, each once.
	want := map[string]int{}
	var lanFrames int
	portFrames(t, path("p1"), path("p2"), func(f labFrame) {
		want[f.data]++
		lanFrames++
	})
	if lanFrames < 300 {
		t.Fatalf("the ports saw %d frames: the traffic did not run", lanFrames)
	}

	// The WAN interface's frames, each once.
	wan, _ := readLabFrames(t, path("wan"), 0)
	wantWAN := map[string]int{}
	for _, f := range wan {
		wantWAN[f.data]++
	}
	for _, name := range []string{"any2", "any1", "live-both"} {
		t.Run("wan-"+name, func(t *testing.T) {
			got, st := both[1], bothStats[1]
			if name != "live-both" {
				var src Source
				got, src = readLabSide(t, path(name), 0, SideWAN)
				st, _ = CookedStatsOf(src)
			}
			t.Log(st.Summary())
			sameMultiset(t, "WAN", got, wantWAN, len(wan))
			if st.WAN != uint64(len(wan)) || st.NoDestination != 0 {
				t.Errorf("%d WAN frames, %d without a destination MAC: want %d, 0", st.WAN, st.NoDestination, len(wan))
			}
		})
	}

	for _, name := range []string{"any2", "any1", "live-ring", "live-recvmsg", "live-both"} {
		t.Run(name, func(t *testing.T) {
			var got []labFrame
			var st CookedStats
			switch name {
			case "live-ring", "live-recvmsg":
				got, st = live[btoi(name == "live-recvmsg")], liveStats[btoi(name == "live-recvmsg")]
			case "live-both":
				got, st = both[0], bothStats[0]
			default:
				var src Source
				got, src = readLabFrames(t, path(name), 0)
				var ok bool
				if st, ok = CookedStatsOf(src); !ok {
					t.Fatalf("%s was not read as a cooked capture", name)
				}
			}
			t.Log(st.Summary())
			for _, i := range st.Interfaces {
				t.Logf("  %s (%s): %s, %d frames, votes %d LAN %d other", i.Name, i.Hardware, i.Side, i.Frames, i.LANVotes, i.OtherVotes)
			}
			sameMultiset(t, "LAN", got, want, lanFrames)
			if st.OtherSide+st.WAN == 0 || st.Duplicates == 0 {
				t.Errorf("left out %d copies beyond the LAN and %d bridge copies: the capture should have both", st.OtherSide, st.Duplicates)
			}
			if st.NoDestination != 0 {
				t.Errorf("%d frames without a destination MAC", st.NoDestination)
			}
			if strings.HasPrefix(name, "live") {
				return
			}
			// Read through the decoder as every command reads it.
			src, err := OpenFile(path(name))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			rst, err := Read(context.Background(), src, features.PrivateHome(), func(*schemas.Packet) error { return nil })
			if err != nil || rst.Decoded() != uint64(lanFrames) || rst.OtherViews != st.LeftOut() {
				t.Errorf("Read: %+v, %v: want %d packets decoded and %d left out", rst, err, lanFrames, st.LeftOut())
			}
		})
	}
}

// portFrames gives each frame of the LAN once, from the captures of the
// bridge's two ports, in time order: a frame that crossed the bridge (or
// that the gateway flooded to both ports) is on both, the same bytes within
// microseconds, and given once.
func portFrames(t *testing.T, p1Path, p2Path string, each func(labFrame)) {
	t.Helper()
	p1, _ := readLabFrames(t, p1Path, 1)
	p2, _ := readLabFrames(t, p2Path, 2)
	ports := append(p1, p2...)
	slices.SortStableFunc(ports, func(a, b labFrame) int { return a.ts.Compare(b.ts) })
	var lastOn [3]map[string]time.Time
	lastOn[1], lastOn[2] = map[string]time.Time{}, map[string]time.Time{}
	for _, f := range ports {
		other := 3 - f.from
		if ts, ok := lastOn[other][f.data]; ok && f.ts.Sub(ts) < cookedDupWindow {
			delete(lastOn[other], f.data)
			continue
		}
		lastOn[f.from][f.data] = f.ts
		each(f)
	}
}

// sameMultiset requires the view's frames to be want's (n of them), each
// as many times.
func sameMultiset(t *testing.T, side string, got []labFrame, want map[string]int, n int) {
	t.Helper()
	have := map[string]int{}
	for _, f := range got {
		have[f.data]++
	}
	missing, extra := 0, 0
	for d, n := range want {
		if have[d] < n {
			missing += n - have[d]
			if missing <= 5 {
				t.Errorf("a %s frame is missing from the view: % x", side, d[:min(len(d), 64)])
			}
		}
	}
	for d, n := range have {
		if want[d] < n {
			extra += n - want[d]
			if extra <= 5 {
				t.Errorf("the view has a frame the %s did not: % x", side, d[:min(len(d), 64)])
			}
		}
	}
	if missing > 0 || extra > 0 || len(got) != n {
		t.Errorf("%d frames in the view, the %s had %d: %d missing, %d extra", len(got), side, n, missing, extra)
	}
}

// dumpcap starts dumpcap in the gateway on the interfaces named, into
// one pcapng file; the returned function stops it and says whether it or
// the kernel dropped any packet.
func (l cookedLab) dumpcap(t *testing.T, path string, ifaces ...string) func() error {
	t.Helper()
	if _, err := exec.LookPath("dumpcap"); err != nil {
		t.Skip("the capture of several interfaces needs dumpcap: apt-get install tshark (go tool task test installs it)")
	}
	args := []string{"dumpcap", "-q", "-w", path, "-B", "64"}
	for _, i := range ifaces {
		args = append(args, "-i", i)
	}
	return l.capturing(t, args, "Capturing on", func(out string) bool {
		// "Packets received/dropped on interface 'x': 120/0 (...)"
		return slices.ContainsFunc(dumpcapDrops.FindAllStringSubmatch(out, -1), func(m []string) bool { return m[1] != "0" })
	})
}

var dumpcapDrops = regexp.MustCompile(`received/dropped on interface .*: \d+/(\d+) \(`)

// TestDumpcapOfGatewayInterfaces captures the gateway's LAN bridge, its
// WAN and its loopback into one pcapng file with dumpcap, as a router's
// owner does with Wireshark, while tcpdump captures the bridge and the WAN
// each on its own. Read as its LAN side the pcapng must be exactly the
// bridge's frames, each once; as its WAN side exactly the WAN's: the file
// names the interfaces but not their sides, which the packets the gateway
// forwards between them tell.
func TestDumpcapOfGatewayInterfaces(t *testing.T) {
	l := newCookedLab(t)
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n+".pcap") }
	time.Sleep(2 * time.Second)
	l.runTraffic(t, func(int) []func() error {
		return []func() error{
			l.tcpdump(t, path("bridge"), "-i", l.Bridge),
			l.tcpdump(t, path("wan"), "-i", l.WAN),
			l.dumpcap(t, path("ng"), l.Bridge, l.WAN, "lo"),
			l.tcpdump(t, path("p1"), "-i", l.P1),
			l.tcpdump(t, path("p2"), "-i", l.P2),
			l.dumpcap(t, path("ports"), l.P1, l.P2, l.Bridge, l.WAN),
		}
	})
	{
		want := map[string]int{}
		var n int
		portFrames(t, path("p1"), path("p2"), func(f labFrame) {
			want[f.data]++
			n++
		})
		got, src := readLabSide(t, path("ports"), 0, SideLAN)
		st, _ := CookedStatsOf(src)
		t.Log(st.Summary())
		for _, i := range st.Interfaces {
			t.Logf("  %s (%s): %s, %d frames, votes %d LAN %d other", i.Name, i.Hardware, i.Side, i.Frames, i.LANVotes, i.OtherVotes)
		}
		sameMultiset(t, "ports", got, want, n)
	}
	for _, side := range []struct {
		side Side
		cap  string
	}{{SideLAN, "bridge"}, {SideWAN, "wan"}} {
		own, _ := readLabFrames(t, path(side.cap), 0)
		want := map[string]int{}
		for _, f := range own {
			want[f.data]++
		}
		if len(own) < 100 {
			t.Fatalf("the %s saw %d frames: the traffic did not run", side.cap, len(own))
		}
		got, src := readLabSide(t, path("ng"), 0, side.side)
		st, ok := CookedStatsOf(src)
		if !ok || !st.Pcapng {
			t.Fatalf("%v side: not read as a capture of several interfaces", side.side)
		}
		t.Log(st.Summary())
		for _, i := range st.Interfaces {
			t.Logf("  %s (%s): %s, %d frames, votes %d LAN %d other", i.Name, i.Hardware, i.Side, i.Frames, i.LANVotes, i.OtherVotes)
		}
		sameMultiset(t, side.side.String(), got, want, len(own))
	}
}
