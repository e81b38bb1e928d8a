package cmdkit

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/services/internal/cli"
)

// Features is the features command: it decodes a capture and writes
// one CSV row per packet. stderr gets the skipped-packet report.
func Features(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := NewFlags("features", "--in FILE [--lan-net CIDR]... [--lan-mac MAC] [--out FILE.csv|-]",
		"Decodes every packet of a capture (pcap or pcapng, gzip, zstd or lz4 too) as the capture\n"+
			"agent does and writes one CSV row per packet under a header row:\n"+
			"  "+features.CSVHeader+"\n"+
			"A field is empty where its header does not exist in the packet: dport without TCP or\n"+
			"UDP, ttl/ip_len/transport/payload_len without IP, tcp_* without TCP. proto_bits is the\n"+
			"7-character IP TCP UDP TLS HTTP DNS other string; direction is 1 outbound, 0 inbound,\n"+
			"-1 local; tcp_flags is the nine flag bits as a decimal number (FIN = 1); interval_s is\n"+
			"the gap to the previous decoded packet in seconds.\n\n"+
			"Direction: multicast and broadcast are local; a frame to the gateway's LAN MAC\n"+
			"(--lan-mac) is outbound, from it inbound; otherwise the LAN prefixes decide. Without\n"+
			"either flag both are inferred from the capture and reported on stderr: the gateway is\n"+
			"the Ethernet peer of the traffic to public addresses, the prefixes are the private\n"+
			"ranges, ULA and link-local plus the global IPv6 prefixes the home's hosts source; a\n"+
			"capture without Ethernet (a tun device) has every packet crossing. With --lan-mac\n"+
			"alone the prefixes are the private ranges:\n"+
			"  "+strings.Join(campaign.DefaultLANNets, " ")+"\n\n"+
			"Packets the decoder cannot read are skipped and counted on stderr. On a truncated or\n"+
			"corrupt capture, the rows of the packets before the fault are written, then the\n"+
			"command fails.")
	fs.SetOutput(stderr)
	in := fs.String("in", "", "capture file to read (pcap or pcapng, optionally compressed with gzip, zstd or lz4)")
	outPath := fs.String("out", "-", "CSV file to write; - is stdout")
	homeOf := HomeFlags(fs, "lan-mac")
	if err := ParseRequired(fs, args, "features needs --in FILE", in); err != nil {
		return err
	}
	if *outPath != "-" && filepath.Clean(*outPath) == filepath.Clean(*in) {
		// Checked before the capture is opened: creating the output would
		// empty the capture before it is read.
		return cli.Usagef("features: --out %s is the capture itself", *outPath)
	}
	home, err := homeOf.Of(ctx, "features", *in, stderr)
	if err != nil {
		return err
	}

	// The capture is opened before the output is created, so that a wrong
	// --in does not leave an empty CSV file behind.
	src, err := capture.OpenFile(*in)
	if err != nil {
		return err
	}
	defer src.Close()
	w, closeOut := stdout, func() error { return nil }
	if *outPath != "-" {
		f, err := CreateOutput("features", "out", *outPath, *in)
		if err != nil {
			return err
		}
		// Renamed over --out only once every row is written: a capture
		// that fails part-way leaves no truncated CSV.
		defer f.Abort()
		w, closeOut = f, f.Commit
	}
	st, err := capture.WriteCSV(ctx, src, home, w)
	if st.DecodeErrors > 0 {
		fmt.Fprintf(stderr, "features: %s: skipped %d of %d packets the decoder cannot read; the first: %v\n",
			*in, st.DecodeErrors, st.Packets, st.FirstDecodeError)
	}
	if st.NotPackets > 0 {
		fmt.Fprintf(stderr, "features: %s: left out %d frames of the link's own (%s)\n", *in, st.NotPackets, features.NotPacketKinds)
	}
	if cs, ok := capture.CookedStatsOf(src); ok {
		fmt.Fprintf(stderr, "features: %s: %s\n", *in, cs.Summary())
	}
	if ns, ok := capture.NFLOGStatsOf(src); ok {
		fmt.Fprintf(stderr, "features: %s: %s\n", *in, ns.Summary())
	}
	if err != nil {
		return fmt.Errorf("write features CSV of %s: %w", *in, err)
	}
	if err := closeOut(); err != nil {
		return fmt.Errorf("write features CSV %s: %w", *outPath, err)
	}
	return src.Close()
}
