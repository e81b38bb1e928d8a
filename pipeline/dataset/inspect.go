package dataset

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/homemole/homemole/pipeline/store"
)

// Inspection is what `homemole dataset inspect` shows: windows per device
// and view, and how mixed the windows' labels are.
type Inspection struct {
	Windows int
	// PerDeviceView counts windows by majority device, then view.
	PerDeviceView map[string]map[string]int
	// DevicesPerWindow counts windows by how many devices their packets
	// belong to (0: only unlabeled packets).
	DevicesPerWindow map[int]int
	// Padded counts windows shorter than the window size.
	Padded int
}

// Inspect reads every window of the dataset.
func Inspect(ctx context.Context, st store.Store, m *Manifest) (*Inspection, error) {
	ws, err := Windows(ctx, st, m, nil)
	if err != nil {
		return nil, err
	}
	in := &Inspection{Windows: len(ws), PerDeviceView: map[string]map[string]int{}, DevicesPerWindow: map[int]int{}}
	for _, w := range ws {
		counts := map[int16]int{}
		for i := 0; i < w.Len; i++ {
			if w.Label[i] >= 0 {
				counts[w.Label[i]]++
			}
		}
		in.DevicesPerWindow[len(counts)]++
		if w.Len < len(w.Label) {
			in.Padded++
		}
		best, bestN := int16(-1), 0
		for l, n := range counts {
			if n > bestN || n == bestN && l < best {
				best, bestN = l, n
			}
		}
		name := "(unlabeled)"
		if best >= 0 && int(best) < len(m.Labels) {
			name = m.Labels[best]
		}
		if in.PerDeviceView[name] == nil {
			in.PerDeviceView[name] = map[string]int{}
		}
		in.PerDeviceView[name][w.View]++
	}
	return in, nil
}

// Print writes the inspection as readable tables.
func (in *Inspection) Print(w io.Writer, m *Manifest) error {
	fmt.Fprintf(w, "dataset %s/%s: %d windows of %d packets (%s), %d sessions, %d packets\n\n",
		m.Dataset, m.Version, in.Windows, m.WindowSize, m.Kind, len(m.Groups), m.Packets)
	views := map[string]bool{}
	for _, vs := range in.PerDeviceView {
		for v := range vs {
			views[v] = true
		}
	}
	vnames := sortedKeys(views)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "device\t")
	for _, v := range vnames {
		fmt.Fprintf(tw, "%s\t", v)
	}
	fmt.Fprintln(tw)
	for _, d := range sortedKeys(in.PerDeviceView) {
		fmt.Fprintf(tw, "%s\t", d)
		for _, v := range vnames {
			fmt.Fprintf(tw, "%d\t", in.PerDeviceView[d][v])
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nlabel mix: ")
	ks := make([]int, 0, len(in.DevicesPerWindow))
	for k := range in.DevicesPerWindow {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	for _, k := range ks {
		fmt.Fprintf(w, "%d window(s) with %d device(s); ", in.DevicesPerWindow[k], k)
	}
	fmt.Fprintf(w, "%d padded (shorter than %d packets)\n", in.Padded, m.WindowSize)
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
