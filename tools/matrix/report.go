package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
)

// PrintTable writes the matrix beside the paper's numbers.
func PrintTable(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\nHomeMole matrix: %s, %s cross-validation (%d folds) over %d sessions of %.0f min, windows of %d, VPN %s\n",
		modelName(r), r.CVMode, r.Folds, r.Sessions, r.SessionMinutes, r.Window, r.Cipher)
	fmt.Fprintf(w, "%-5s %-16s %16s %9s %13s %8s  %s\n", "view", "kind", "accuracy (IoT)", "macro F1", "all packets", "paper", "paper source")
	for _, c := range r.Cells {
		fmt.Fprintf(w, "%-5s %-16s %9.1f ± %4.1f %9.3f %6.1f ± %4.1f %7.1f  %s\n", c.View, kindName(c.Kind),
			100*c.Accuracy.Mean, 100*c.Accuracy.Std, c.MacroF1.Mean, 100*c.AccuracyAll.Mean, 100*c.AccuracyAll.Std, c.Paper, c.PaperSource)
	}
	fmt.Fprintf(w, "(accuracy in %%, per packet over the ten IoT devices' held-out packets, mean ± std over folds; %.0f s in all)\n", r.Seconds)
}

// MarkdownTable is the README's table.
func MarkdownTable(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| gateway | traffic | %s per-packet accuracy (held-out sessions) | macro F1 | paper, %s | where in the paper |\n", modelName(r), strings.ToUpper(r.Model))
	b.WriteString("| --- | --- | ---: | ---: | ---: | --- |\n")
	for _, c := range r.Cells {
		fmt.Fprintf(&b, "| %s | %s | %.1f ± %.1f %% | %.3f | %.1f %% | %s |\n", strings.ToUpper(c.View), kindName(c.Kind),
			100*c.Accuracy.Mean, 100*c.Accuracy.Std, c.MacroF1.Mean, c.Paper, c.PaperSource)
	}
	return b.String()
}

func modelName(r *Result) string {
	name := strings.ToUpper(r.Model)
	if r.Epochs > 0 {
		name += fmt.Sprintf(" (%d epochs)", r.Epochs)
	}
	return name
}

func kindName(kind string) string {
	if kind == "noise" {
		return "noisy (noise)"
	}
	return "pure IoT (ind)"
}

// JSON is matrix.json.
func (r *Result) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// HTML is matrix.html: the table, a bar chart of ours beside the paper's,
// per-device accuracy beside Table 4, and links to each cell's
// cross-validation report (confusion matrix, per-fold figures).
func HTML(r *Result) ([]byte, error) {
	type devRow struct {
		Device string
		Cells  []string // "ours / paper" per cell
	}
	var devs []devRow
	for _, d := range r.Devices {
		row := devRow{Device: d}
		for _, c := range r.Cells {
			paper := "–"
			if v, ok := c.PaperPerDevice[d]; ok {
				paper = fmt.Sprintf("%.1f", v)
			}
			row.Cells = append(row.Cells, fmt.Sprintf("%.1f / %s", 100*c.PerDevice[d], paper))
		}
		devs = append(devs, row)
	}
	var b bytes.Buffer
	err := matrixTmpl.Execute(&b, map[string]any{
		"R": r, "Model": modelName(r), "Bars": template.HTML(barsSVG(r)), "Devices": devs,
		"Kind": kindName, "Pct": func(x float64) string { return fmt.Sprintf("%.1f", 100*x) },
	})
	if err != nil {
		return nil, fmt.Errorf("render matrix.html: %w", err)
	}
	return b.Bytes(), nil
}

// barsSVG draws each cell's accuracy (with its spread over folds) beside
// the paper's figure.
func barsSVG(r *Result) string {
	const left, barW, gap, h, top = 50, 34, 40, 240, 20
	w := left + len(r.Cells)*(2*barW+gap) + 20
	y := func(pct float64) float64 { return top + h - pct/100*h }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, w, top+h+50)
	for _, v := range []float64{0, 25, 50, 75, 100} {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.0f %%</text>`,
			left, w-10, y(v), y(v), left-4, y(v)+4, v)
	}
	for i, c := range r.Cells {
		x := left + 10 + i*(2*barW+gap)
		ours := 100 * c.Accuracy.Mean
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="#4a78c2"><title>ours %.1f ± %.1f %%</title></rect>`,
			x, y(ours), barW, top+h-y(ours), ours, 100*c.Accuracy.Std)
		lo, hi := max(0, ours-100*c.Accuracy.Std), min(100, ours+100*c.Accuracy.Std)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#000"/>`, x+barW/2, x+barW/2, y(lo), y(hi))
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="#bbb"><title>paper %.1f %%</title></rect>`,
			x+barW, y(c.Paper), barW, top+h-y(c.Paper), c.Paper)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s %s</text>`, x+barW, top+h+16, strings.ToUpper(c.View), c.Kind)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%.1f / %.1f</text>`, x+barW, top+h+32, ours, c.Paper)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="2" width="10" height="10" fill="#4a78c2"/><text x="%d" y="11">ours (held-out sessions)</text>`, left, left+14)
	fmt.Fprintf(&b, `<rect x="%d" y="2" width="10" height="10" fill="#bbb"/><text x="%d" y="11">paper</text>`, left+190, left+204)
	b.WriteString(`</svg>`)
	return b.String()
}

var matrixTmpl = template.Must(template.New("matrix").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>HomeMole NAPT/VPN matrix</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}svg text{font-size:11px}
</style></head><body>
<h1>HomeMole: the paper's NAPT/VPN, pure/noisy matrix on a generated home</h1>
<p>{{.Model}}, {{.R.CVMode}} {{.R.Folds}}-fold cross-validation (every window of a capture session on one side), windows of {{.R.Window}} packets,
{{.R.Sessions}} generated sessions of {{printf "%.0f" .R.SessionMinutes}} minutes (seed {{.R.Seed}}; each cell's build read {{.R.PacketsRead}} LAN and WAN packets) of the paper's ten IoT devices
with {{range $i, $d := .R.Background}}{{if $i}} and {{end}}{{$d}}{{end}} as non-IoT background; NAPT keeps LAN source ports: {{.R.KeepPorts}}; VPN cipher {{.R.Cipher}}; frame-length embedding {{.R.LenEmbed}} (0 is the paper's model); class-balanced loss {{.R.Balance}}.
Accuracy is per packet over the ten IoT devices' held-out packets; in noisy datasets the non-IoT packets carry one "non-iot" label the model must also predict.
The paper's figures are from random 5-fold splits of windows of its own lab's captures.</p>
{{.Bars}}
<table><tr><th>gateway</th><th>traffic</th><th>accuracy (IoT packets)</th><th>macro F1</th><th>accuracy (all labeled packets)</th><th>windows</th><th>sessions</th><th>paper</th><th>paper source</th><th>report</th></tr>
{{range .R.Cells}}<tr><td>{{.View}}</td><td>{{call $.Kind .Kind}}</td><td>{{call $.Pct .Accuracy.Mean}} ± {{call $.Pct .Accuracy.Std}} %</td><td>{{printf "%.3f" .MacroF1.Mean}} ± {{printf "%.3f" .MacroF1.Std}}</td>
<td>{{call $.Pct .AccuracyAll.Mean}} %</td><td>{{.Windows}}</td><td>{{.Sessions}}</td><td>{{printf "%.1f" .Paper}} %</td><td>{{.PaperSource}}</td><td><a href="{{.Report}}">cross-validation report</a></td></tr>
{{end}}</table>
<h2>Category accuracy per device (%): ours / paper</h2>
<p>The paper gives per-device figures for the pure-IoT cells (Table 4) and for the plugs in the noisy VPN cell (Section 4.3.2).</p>
<table><tr><th>device</th>{{range .R.Cells}}<th>{{.View}} {{.Kind}}</th>{{end}}</tr>
{{range .Devices}}<tr><td>{{.Device}}</td>{{range .Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
<p>Seconds in all: {{printf "%.0f" .R.Seconds}}.</p>
</body></html>
`))
