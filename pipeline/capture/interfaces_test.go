package capture_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
)

// TestCaptureOfAGatewaysInterfaces reads a gateway captured on its LAN and
// WAN interfaces into one pcapng file (dumpcap -i br-lan -i eth1, or
// Wireshark with both ticked), whose frames say neither which interface is
// which side nor which way they went: real IoT Sentinel captures as the
// LAN, their WAN through the emulated NAPT, and the gateway's loopback.
// Read as the LAN side it must be the LAN capture, frame for frame, in
// order; as the WAN side the WAN capture; and what the two sides were
// judged by must be the packets forwarded, the same with the interfaces
// numbered either way round.
func TestCaptureOfAGatewaysInterfaces(t *testing.T) {
	sentineldata.Need(t)
	dir := t.TempDir()
	var lan, wan []capture.Frame
	// The captures with the most traffic through the gateway.
	for _, c := range []string{"D-LinkHomeHub/Setup-C-4-STA", "D-LinkSwitch/Setup-C-4-STA", "D-LinkHomeHub/Setup-C-2-STA"} {
		lanPath := filepath.Join("..", "..", "..", "shared", "data", "iot-sentinel-dev", c+".pcap")
		name := filepath.Base(filepath.Dir(lanPath)) + filepath.Base(c)
		wanPath, truth := filepath.Join(dir, name+"-wan.pcap"), filepath.Join(dir, name+"-truth.csv")
		if _, err := gateway.EmulateFile(context.Background(), lanPath, wanPath, truth, features.PrivateHome(), gateway.Config{Mode: gateway.NAPT}); err != nil {
			t.Fatal(err)
		}
		lan = append(lan, capturetest.Frames(t, lanPath)...)
		wan = append(wan, capturetest.Frames(t, wanPath)...)
	}
	// The gateway's own DNS forwarder on loopback, as Linux's lo shows
	// it: Ethernet frames of zero MACs.
	var lo []capture.Frame
	for _, f := range lan[:50] {
		d := bytes.Clone(f.Data)
		clear(d[:12])
		f.Data = d
		lo = append(lo, f)
	}
	if len(wan) < 500 {
		t.Fatalf("the emulated WAN has %d frames: too few forwarded to judge by", len(wan))
	}

	for _, order := range [][]string{{"br-lan", "eth1", "lo"}, {"eth1", "lo", "br-lan"}} {
		t.Run(order[0]+"-first", func(t *testing.T) {
			at := map[string]int{}
			for i, n := range order {
				at[n] = i
			}
			var frames []capturetest.OnInterface
			for _, side := range []struct {
				name   string
				frames []capture.Frame
			}{{"br-lan", lan}, {"eth1", wan}, {"lo", lo}} {
				for _, f := range side.frames {
					frames = append(frames, capturetest.OnInterface{Frame: f, Iface: at[side.name]})
				}
			}
			file := capturetest.Interfaces(t, capturetest.Ethernet(order...), frames, 250*time.Millisecond)
			// Each side's frames in the order the file has them.
			var inFile [3][]capture.Frame
			for _, fr := range frames {
				inFile[fr.Iface] = append(inFile[fr.Iface], fr.Frame)
			}
			for _, want := range []struct {
				side   capture.Side
				frames []capture.Frame
			}{{capture.SideLAN, inFile[at["br-lan"]]}, {capture.SideWAN, inFile[at["eth1"]]}} {
				got, st := readSide(t, file, "gateway.pcapng", want.side)
				if !st.Pcapng {
					t.Fatalf("%v side: not read as a capture of several interfaces", want.side)
				}
				for _, i := range st.Interfaces {
					t.Logf("  %s (%s): %s, %d frames, votes %d LAN %d other", i.Name, i.Hardware, i.Side, i.Frames, i.LANVotes, i.OtherVotes)
					wantSide := map[string]string{"interface br-lan": "LAN", "interface eth1": "other", "interface lo": "loopback"}[i.Name]
					if i.Side != wantSide {
						t.Errorf("%s judged %s, want %s", i.Name, i.Side, wantSide)
					}
				}
				if len(got) != len(want.frames) {
					t.Fatalf("%v side: %d frames, want %d", want.side, len(got), len(want.frames))
				}
				for i := range got {
					if !bytes.Equal(got[i].Data, want.frames[i].Data) || !got[i].CI.Timestamp.Equal(want.frames[i].CI.Timestamp) || got[i].LinkType != features.LinkTypeEthernet {
						t.Fatalf("%v side: frame %d is not the %v capture's", want.side, i, want.side)
					}
				}
				if st.LeftOut() != uint64(len(frames)-len(want.frames)) && want.side == capture.SideLAN {
					t.Errorf("left out %d frames, want %d", st.LeftOut(), len(frames)-len(want.frames))
				}
			}
		})
	}

	// A PPPoE gateway captured on its LAN bridge and its PPP device
	// (dumpcap -i br-lan -i pppoe-wan), which libpcap captures cooked
	// (SLL, hardware type PPP, no address): the LAN side is the LAN
	// capture; the PPP device is no Ethernet interface, and no WAN side.
	t.Run("pppoe-wan", func(t *testing.T) {
		var frames []capturetest.OnInterface
		for _, f := range lan {
			frames = append(frames, capturetest.OnInterface{Frame: f, Iface: 0})
		}
		ppp := 0
		for _, f := range wan {
			if binary.BigEndian.Uint16(f.Data[12:14]) != 0x0800 {
				continue
			}
			sll := make([]byte, 16, 16+len(f.Data)-14)
			binary.BigEndian.PutUint16(sll[2:], 512) // ARPHRD_PPP
			copy(sll[14:], f.Data[12:14])
			f.Data = append(sll, f.Data[14:]...)
			f.CI.CaptureLength, f.CI.Length = len(f.Data), len(f.Data)
			frames = append(frames, capturetest.OnInterface{Frame: f, Iface: 1})
			ppp++
		}
		file := capturetest.Interfaces(t, []capturetest.Iface{{Name: "br-lan", Link: layers.LinkTypeEthernet}, {Name: "pppoe-wan", Link: layers.LinkTypeLinuxSLL}}, frames, 250*time.Millisecond)
		var want []capture.Frame
		for _, fr := range frames {
			if fr.Iface == 0 {
				want = append(want, fr.Frame)
			}
		}
		got, st := readSide(t, file, "pppoe.pcapng", capture.SideLAN)
		if len(got) != len(want) || st.OtherSide != uint64(ppp) {
			t.Fatalf("%d frames, %d left out: want the LAN capture's %d, and the PPP device's %d left out", len(got), st.OtherSide, len(want), ppp)
		}
		for i := range got {
			if !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("frame %d is not the LAN capture's", i)
			}
		}
		for _, i := range st.Interfaces {
			if i.Name == "interface pppoe-wan" && (i.Hardware != "PPP" || i.OtherVotes == 0) {
				t.Errorf("the PPP device: %+v", i)
			}
		}
	})

	// Two interfaces that forward nothing to each other (two hosts'
	// captures merged) are no gateway's: every frame is read, once.
	t.Run("no-gateway", func(t *testing.T) {
		var frames []capturetest.OnInterface
		for _, f := range lan {
			frames = append(frames, capturetest.OnInterface{Frame: f, Iface: 1 - btoi(f.CI.Timestamp.Nanosecond()%2 == 0)})
		}
		file := capturetest.Interfaces(t, capturetest.Ethernet("eth0", "wlan0"), frames, time.Millisecond)
		got, st := readSide(t, file, "hosts.pcapng", capture.SideLAN)
		if len(got) != len(lan) || st.Whole != uint64(len(lan)) || !strings.Contains(st.Summary(), "no packet was forwarded") {
			t.Errorf("%d frames read, %d read whole: want all %d, and the summary to say why", len(got), st.Whole, len(lan))
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readSide reads a capture held in memory as its side, to its end, and
// says what its view did.
func readSide(t *testing.T, file []byte, name string, side capture.Side) ([]capture.Frame, capture.CookedStats) {
	t.Helper()
	src, err := capture.NewSideReader(bytes.NewReader(file), name, side)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := capturetest.All(t, name, src)
	st, _ := capture.CookedStatsOf(src)
	t.Logf("%v side: %s", side, st.Summary())
	return got, st
}
