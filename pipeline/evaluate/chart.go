package evaluate

import (
	"fmt"
	"html"
	"strings"
)

// Series is one line of a LineChart: a share (0..1) per x value.
type Series struct {
	Name   string
	Color  string
	Values []float64
}

// LineChart draws shares (0..100 %) over labeled x positions as an inline
// SVG, e.g. accuracy over window sizes (the paper's Figure 8).
func LineChart(xLabel string, xs []string, series []Series) string {
	if len(xs) == 0 {
		return "<p>no points</p>"
	}
	const w, h, pad = 520, 240, 44
	x := func(i int) float64 {
		if len(xs) == 1 {
			return w / 2
		}
		return pad + float64(i)*float64(w-2*pad)/float64(len(xs)-1)
	}
	y := func(v float64) float64 { return float64(h-pad) - v*float64(h-2*pad) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, w, h)
	for _, g := range []float64{0, 0.25, 0.5, 0.75, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" font-size="11">%.0f %%</text>`,
			pad, y(g), w-pad, y(g), pad-4, y(g)+4, 100*g)
	}
	for i, l := range xs {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>`, x(i), h-pad+16, html.EscapeString(l))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>`, w/2, h-6, html.EscapeString(xLabel))
	for k, s := range series {
		var pts strings.Builder
		for i, v := range s.Values {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(i), y(v))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %.1f %%</title></circle>`, x(i), y(v), s.Color, html.EscapeString(s.Name), 100*v)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.Color, pts.String())
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s" font-size="12">%s</text>`, pad+4, 14+14*k, s.Color, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>")
	return b.String()
}
