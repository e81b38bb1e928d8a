package gateway

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// TruthHeader is the first line of a ground-truth file.
const TruthHeader = "wan_index,lan_index"

// WriteTruth writes one "wan_index,lan_index" row per WAN packet under
// TruthHeader; lan_index is empty when the packet has no LAN packet. Pairs
// found by pairing and the emulator's ground truth share the format.
func WriteTruth(w io.Writer, pairs []int64) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(TruthHeader + "\n")
	var line []byte
	for i, l := range pairs {
		line = strconv.AppendInt(line[:0], int64(i), 10)
		line = append(line, ',')
		if l >= 0 {
			line = strconv.AppendInt(line, l, 10)
		}
		line = append(line, '\n')
		bw.Write(line)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write pairs: %w", err)
	}
	return nil
}

// maxTruthSkip is how far a pairs file's wan_index may run ahead of twice
// its rows: the pairs it holds grow with the file, not with an index.
const maxTruthSkip = 1 << 16

// ReadTruth reads a ground-truth or pairs file ("wan_index,lan_index" rows,
// lan_index possibly empty) into one LAN index per WAN index (-1: none):
// the one reader of the format, named in its errors by name.
func ReadTruth(r io.Reader, name string) ([]int64, error) {
	sc := bufio.NewScanner(r)
	var pairs []int64
	var rows int64
	for line := 0; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || (line == 0 && s == TruthHeader) {
			continue
		}
		ws, ls, ok := strings.Cut(s, ",")
		if !ok {
			return nil, fmt.Errorf("%s line %d: %q is not wan_index,lan_index", name, line+1, s)
		}
		wi, err := strconv.ParseInt(ws, 10, 64)
		if err != nil || wi < 0 || wi > 1<<32 {
			return nil, fmt.Errorf("%s line %d: wan_index %q is not a packet index", name, line+1, ws)
		}
		li := int64(-1)
		if ls != "" {
			if li, err = strconv.ParseInt(ls, 10, 64); err != nil || li < 0 {
				return nil, fmt.Errorf("%s line %d: lan_index %q is not a packet index", name, line+1, ls)
			}
		}
		// Rows come one per WAN packet in order: an index far past the
		// rows read is a damaged file, not a reason to allocate for it.
		rows++
		if wi > 2*rows+maxTruthSkip {
			return nil, fmt.Errorf("%s line %d: wan_index %d is far past the %d rows read so far; the file is damaged", name, line+1, wi, rows)
		}
		for int64(len(pairs)) <= wi {
			pairs = append(pairs, -1)
		}
		pairs[wi] = li
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return pairs, nil
}
