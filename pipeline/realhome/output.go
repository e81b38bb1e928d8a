package realhome

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// TruthHeader is the first line of a truth file: one row per packet of the
// home's capture, index and lan_index 0-based packet ordinals (equal on the
// LAN; on a gateway's WAN view lan_index is the LAN packet it came from,
// empty for the gateway's own packets, whose unit is empty too).
const TruthHeader = "index,lan_index,unit,device,mac"

// WritePcap writes the home's LAN capture: Ethernet, nanosecond stamps.
func (h *Home) WritePcap(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write the home capture: %w", err)
	}
	for _, p := range h.Packets {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, p.TsNs), CaptureLength: len(p.Data), Length: len(p.Data)}
		if err := pw.WritePacket(ci, p.Data); err != nil {
			return fmt.Errorf("write the home capture: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write the home capture: %w", err)
	}
	return nil
}

// WriteTruth writes the truth of the LAN capture (lan nil) or of a view
// whose packet i came from LAN packet lan[i] (-1: none).
func (h *Home) WriteTruth(w io.Writer, lan []int64) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, TruthHeader)
	row := func(i int, li int64) {
		if li < 0 || li >= int64(len(h.Packets)) {
			fmt.Fprintf(bw, "%d,,,,\n", i)
			return
		}
		u := h.Units[h.Packets[li].Unit]
		fmt.Fprintf(bw, "%d,%d,%s,%s,%s\n", i, li, u.Name, u.Device, u.MAC)
	}
	if lan == nil {
		for i := range h.Packets {
			row(i, int64(i))
		}
	} else {
		for i, li := range lan {
			row(i, li)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write the home truth: %w", err)
	}
	return nil
}

// View runs the home's LAN capture through the emulated gateway and writes
// what the WAN observer captures to wan; it returns, per WAN packet, the
// LAN packet it came from (-1 for the gateway's own).
func (h *Home) View(ctx context.Context, cfg gateway.Config, wan io.Writer) ([]int64, gateway.Stats, error) {
	var lanCap bytes.Buffer
	if err := h.WritePcap(&lanCap); err != nil {
		return nil, gateway.Stats{}, err
	}
	src, err := capture.NewReader(&lanCap, "assembled home")
	if err != nil {
		return nil, gateway.Stats{}, err
	}
	defer src.Close()
	var truth bytes.Buffer
	st, err := gateway.Emulate(ctx, src, h.HomeConfig(), cfg, wan, &truth)
	if err != nil {
		return nil, st, fmt.Errorf("emulate the home's %s view: %w", cfg.Mode, err)
	}
	lan, err := gateway.ReadTruth(&truth, "gateway truth")
	if err != nil {
		return nil, st, err
	}
	if lan == nil {
		lan = []int64{} // a view without packets is still a view, not the LAN
	}
	for len(lan) < st.WANPackets {
		lan = append(lan, -1)
	}
	return lan, st, nil
}

// TruthRow is one row of a truth file.
type TruthRow struct {
	Index, LANIndex int64 // LANIndex -1: the packet came from no LAN packet
	Unit, Device    string
	MAC             schemas.MAC
}

// ReadTruth reads a truth file that WriteTruth wrote; name is for errors.
func ReadTruth(r io.Reader, name string) ([]TruthRow, error) {
	sc := bufio.NewScanner(r)
	var out []TruthRow
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || line == 1 && s == TruthHeader {
			continue
		}
		f := strings.Split(s, ",")
		if len(f) != 5 {
			return nil, fmt.Errorf("%s line %d: %q has %d fields, want %s", name, line, s, len(f), TruthHeader)
		}
		i, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || i != int64(len(out)) {
			return nil, fmt.Errorf("%s line %d: index %q, want %d (one row per packet, in order): the file is damaged or not a home truth file", name, line, f[0], len(out))
		}
		row := TruthRow{Index: i, LANIndex: -1, Unit: f[2], Device: f[3]}
		if f[1] != "" {
			if row.LANIndex, err = strconv.ParseInt(f[1], 10, 64); err != nil || row.LANIndex < 0 {
				return nil, fmt.Errorf("%s line %d: lan_index %q is not a packet index", name, line, f[1])
			}
		}
		if (f[1] == "") != (f[2] == "") || (f[2] == "") != (f[4] == "") {
			return nil, fmt.Errorf("%s line %d: lan_index, unit and mac are given together or not at all", name, line)
		}
		if f[4] != "" {
			if row.MAC, err = schemas.ParseMAC(f[4]); err != nil {
				return nil, fmt.Errorf("%s line %d: %w", name, line, err)
			}
		}
		out = append(out, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}
