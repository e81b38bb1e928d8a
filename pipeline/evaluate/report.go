package evaluate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"sort"
	"strings"
)

// Report is everything a run found, for report.json and report.html.
type Report struct {
	Run     string `json:"run"`
	Dataset string `json:"dataset"`
	Model   string `json:"model"`
	Device  string `json:"device"` // cpu or cuda
	// Split says how held-out data was chosen, in words.
	Split         string         `json:"split"`
	TrainWindows  int            `json:"train_windows"`
	TestWindows   int            `json:"test_windows"`
	TrainGroups   []string       `json:"train_groups"`
	TestGroups    []string       `json:"test_groups"`
	Accuracy      Ratio          `json:"accuracy"`
	MacroF1       Ratio          `json:"macro_f1"`
	MajorityShare float64        `json:"majority_class_share"` // what always guessing the commonest device scores
	PerDevice     []ClassMetrics `json:"per_device"`
	Confusion     *Confusion     `json:"confusion"`
	Sessions      []SessionVote  `json:"session_votes"`
	Epochs        []Epoch        `json:"epochs"`
	TrainSeconds  float64        `json:"train_seconds"`
	Notes         []string       `json:"notes,omitempty"`
}

// Epoch is one line of the training curve.
type Epoch struct {
	Epoch         int     `json:"epoch"`
	Loss          float64 `json:"loss"`
	TrainAccuracy float64 `json:"train_accuracy"`
	WindowsPerSec float64 `json:"windows_per_sec"`
}

// Fill derives the summary figures from the confusion matrix.
func (r *Report) Fill() {
	r.Accuracy = Ratio(r.Confusion.Accuracy())
	r.MacroF1 = Ratio(r.Confusion.MacroF1())
	r.PerDevice = r.Confusion.PerClass()
	best, total := 0, 0
	for _, m := range r.PerDevice {
		best = max(best, m.Packets)
		total += m.Packets
	}
	if total > 0 {
		r.MajorityShare = float64(best) / float64(total)
	}
}

// JSON renders report.json.
func (r *Report) JSON() ([]byte, error) {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	return data, nil
}

// Ratio is a share in [0, 1] that is NaN when nothing was there to judge;
// JSON has no NaN, so it is written as null.
type Ratio float64

// MarshalJSON writes NaN as null.
func (x Ratio) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(x)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(x))
}

// Summary is the readable text the terminal ends with.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Model %s on %s (%s), %s\n", r.Model, r.Dataset, r.Device, r.Split)
	fmt.Fprintf(&b, "  trained on %d windows, judged on %d held-out windows (%d packets)\n", r.TrainWindows, r.TestWindows, r.Confusion.Total())
	fmt.Fprintf(&b, "  overall accuracy %s   macro F1 %s   (always guessing the commonest device: %s)\n",
		pct(float64(r.Accuracy)), pct(float64(r.MacroF1)), pct(r.MajorityShare))
	fmt.Fprintf(&b, "  %-22s %9s %9s %9s\n", "device", "packets", "accuracy", "F1")
	for _, m := range r.PerDevice {
		fmt.Fprintf(&b, "  %-22s %9d %9s %9s\n", m.Device, m.Packets, pct(m.Accuracy), pct(m.F1))
	}
	return b.String()
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f %%", 100*x)
}

// HTML renders a self-contained report.html: no scripts, no external files.
func (r *Report) HTML() ([]byte, error) {
	var b bytes.Buffer
	if err := reportTmpl.Execute(&b, map[string]any{
		"R":         r,
		"Heatmap":   template.HTML(heatmapSVG(r.Confusion)),
		"Bars":      template.HTML(barsSVG(r.PerDevice)),
		"Curve":     template.HTML(curveSVG(r.Epochs)),
		"Accuracy":  pct(float64(r.Accuracy)),
		"MacroF1":   pct(float64(r.MacroF1)),
		"Majority":  pct(r.MajorityShare),
		"TestTotal": r.Confusion.Total(),
	}); err != nil {
		return nil, fmt.Errorf("render report.html: %w", err)
	}
	return b.Bytes(), nil
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{"pct": pct}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>HomeMole report {{.R.Run}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.big{font-size:1.6em;font-weight:600}
.cards{display:flex;gap:2em}.card{background:#f4f6f8;padding:1em 1.5em;border-radius:8px}
svg text{font-size:11px}
</style></head><body>
<h1>HomeMole: {{.R.Model}} on {{.R.Dataset}}</h1>
<p>Run <code>{{.R.Run}}</code> on {{.R.Device}}. {{.R.Split}}. Trained on {{.R.TrainWindows}} windows in {{printf "%.0f" .R.TrainSeconds}} s; judged on {{.R.TestWindows}} held-out windows ({{.TestTotal}} labeled packets).</p>
<div class="cards">
<div class="card">overall accuracy<div class="big">{{.Accuracy}}</div></div>
<div class="card">macro F1<div class="big">{{.MacroF1}}</div></div>
<div class="card">commonest-device baseline<div class="big">{{.Majority}}</div></div>
</div>
<h2>Accuracy per device</h2>
<p>Category accuracy as the paper defines it: the share of a device's held-out packets labeled as that device.</p>
{{.Bars}}
<table><tr><th>device</th><th>packets</th><th>accuracy</th><th>precision</th><th>F1</th></tr>
{{range .R.PerDevice}}<tr><td>{{.Device}}</td><td>{{.Packets}}</td><td>{{pct .Accuracy}}</td><td>{{pct .Precision}}</td><td>{{pct .F1}}</td></tr>
{{end}}</table>
<h2>Confusion matrix</h2>
<p>Rows: true device; columns: predicted device; each row normalised to the device's packets.</p>
{{.Heatmap}}
<h2>Training curve</h2>
{{.Curve}}
{{if .R.Sessions}}<h2>Sessions</h2>
<p>Each named by its rule: the majority of its packets' labels, or (LSTM, BLSTM) their summed log-probabilities, with what the majority said beside.</p>
<table><tr><th>stream</th><th>packets</th><th>true device</th><th>named as</th><th>rule</th><th>majority</th></tr>
{{range .R.Sessions}}<tr><td>{{.Group}}</td><td>{{.Packets}}</td><td>{{.Truth}}</td><td>{{.Predicted}}</td><td>{{.Rule}}</td><td>{{.Majority}}</td></tr>
{{end}}</table>{{end}}
{{range .R.Notes}}<p>{{.}}</p>{{end}}
</body></html>
`))

func heatmapSVG(c *Confusion) string {
	if c == nil || len(c.Labels) == 0 {
		return "<p>no data</p>"
	}
	// Only devices that occur as truth or prediction, so the matrix stays readable.
	var keep []int
	for i := range c.Labels {
		used := false
		for j := range c.Labels {
			used = used || c.Counts[i][j] > 0 || c.Counts[j][i] > 0
		}
		if used {
			keep = append(keep, i)
		}
	}
	const cell, left, top = 28, 170, 170
	n := len(keep)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, left+n*cell+10, top+n*cell+10)
	for a, i := range keep {
		row := 0
		for _, j := range keep {
			row += c.Counts[i][j]
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, top+a*cell+cell/2+4, template.HTMLEscapeString(c.Labels[i]))
		fmt.Fprintf(&b, `<text transform="translate(%d,%d) rotate(-60)">%s</text>`, left+a*cell+cell/2, top-6, template.HTMLEscapeString(c.Labels[i]))
		for bcol, j := range keep {
			v := 0.0
			if row > 0 {
				v = float64(c.Counts[i][j]) / float64(row)
			}
			shade := int(255 - 200*v)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="rgb(%d,%d,255)" stroke="#fff"><title>%s as %s: %d packets (%.1f %%)</title></rect>`,
				left+bcol*cell, top+a*cell, cell, cell, shade, shade,
				template.HTMLEscapeString(c.Labels[i]), template.HTMLEscapeString(c.Labels[j]), c.Counts[i][j], 100*v)
			if v >= 0.01 {
				col := "#000"
				if v > 0.6 {
					col = "#fff"
				}
				fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="%s">%.0f</text>`, left+bcol*cell+cell/2, top+a*cell+cell/2+4, col, 100*v)
			}
		}
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func barsSVG(pc []ClassMetrics) string {
	if len(pc) == 0 {
		return "<p>no data</p>"
	}
	s := append([]ClassMetrics(nil), pc...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Accuracy > s[j].Accuracy })
	const rowH, left, width = 20, 170, 500
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, left+width+70, len(s)*rowH+10)
	for i, m := range s {
		y := i * rowH
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, y+14, template.HTMLEscapeString(m.Device))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="#4a78c2"/>`, left, y+3, width*m.Accuracy, rowH-6)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`, left+width*m.Accuracy+4, y+14, pct(m.Accuracy))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func curveSVG(es []Epoch) string {
	if len(es) == 0 {
		return "<p>no training curve recorded</p>"
	}
	const w, h, pad = 520, 220, 40
	maxLoss := 0.0
	for _, e := range es {
		maxLoss = max(maxLoss, e.Loss)
	}
	if maxLoss == 0 {
		maxLoss = 1
	}
	x := func(i int) float64 {
		if len(es) == 1 {
			return pad
		}
		return pad + float64(i)*float64(w-2*pad)/float64(len(es)-1)
	}
	var loss, acc strings.Builder
	for i, e := range es {
		fmt.Fprintf(&loss, "%.1f,%.1f ", x(i), float64(h-pad)-e.Loss/maxLoss*float64(h-2*pad))
		fmt.Fprintf(&acc, "%.1f,%.1f ", x(i), float64(h-pad)-e.TrainAccuracy*float64(h-2*pad))
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">
<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>
<polyline fill="none" stroke="#c24a4a" stroke-width="2" points="%s"/><polyline fill="none" stroke="#4a78c2" stroke-width="2" points="%s"/>
<text x="%d" y="14" fill="#c24a4a">loss (max %.3f)</text><text x="%d" y="28" fill="#4a78c2">training accuracy (0..100 %%)</text>
<text x="%d" y="%d">epoch 1</text><text x="%d" y="%d" text-anchor="end">epoch %d</text></svg>`,
		w, h, pad, h-pad, w-pad, h-pad, pad, pad, pad, h-pad, loss.String(), acc.String(), pad, maxLoss, pad, pad, h-pad+16, w-pad, h-pad+16, len(es))
}
