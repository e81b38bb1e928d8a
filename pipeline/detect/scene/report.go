package scene

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"strings"
)

// Report is an evaluation of a sequence-profile model, for report.json
// and report.html, in the layout of pipeline/evaluate's reports.
type Report struct {
	Title string `json:"title"`
	// Split says which data trained and which judged, in words.
	Split        string         `json:"split"`
	Window       string         `json:"window"`
	Windows      int            `json:"windows"`
	TrainSeconds float64        `json:"train_seconds"`
	PerDevice    []DeviceResult `json:"per_device"`
	// CountByN is the mean relative count error per true count, over all
	// device types (empty when counts were not evaluated).
	CountByN []CountPoint `json:"count_by_n,omitempty"`
	Notes    []string     `json:"notes,omitempty"`
}

// DeviceResult is one device type's figures.
type DeviceResult struct {
	Device    string  `json:"device"`
	TP        int     `json:"tp"`
	FP        int     `json:"fp"`
	FN        int     `json:"fn"`
	TN        int     `json:"tn"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F         float64 `json:"f_score"`
	// CountError is the mean |estimate - n| / n over windows with n >= 1
	// devices of the type (a missed window counts as estimate 0); NaN
	// (null) when not evaluated.
	CountError Ratio `json:"count_error"`
	// ResponseSeconds is the median time from a device's first packet to
	// the first window that detects it; NaN when not evaluated, +Inf
	// (null) never found within the horizon.
	ResponseSeconds Ratio `json:"response_seconds"`
	ResponseMax     Ratio `json:"response_max_seconds"`
	// FalseAlarms counts windows before the device appeared that named it.
	FalseAlarms int `json:"false_alarms"`
}

// CountPoint is the count error at one true count.
type CountPoint struct {
	N            int     `json:"n"`
	MeanEstimate float64 `json:"mean_estimate"`
	MeanError    float64 `json:"mean_error"`
	Windows      int     `json:"windows"`
}

// Ratio is a figure that is NaN or infinite when there was nothing to
// judge; JSON has neither, so both are written as null.
type Ratio float64

// MarshalJSON writes NaN and infinities as null.
func (x Ratio) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(x))
}

// UnmarshalJSON reads null back as NaN (nothing to judge, or never
// found), so a report read from its JSON keeps the difference from 0.
func (x *Ratio) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*x = Ratio(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*x = Ratio(f)
	return nil
}

// FromScore fills precision, recall and F.
func FromScore(s Score) DeviceResult {
	return DeviceResult{Device: s.Device, TP: s.TP, FP: s.FP, FN: s.FN, TN: s.TN, Precision: s.Precision(), Recall: s.Recall(), F: s.F(),
		CountError: Ratio(math.NaN()), ResponseSeconds: Ratio(math.NaN()), ResponseMax: Ratio(math.NaN())}
}

// JSON renders report.json.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	return b, nil
}

// Text is the table the terminal ends with.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s; %d windows of %s\n", r.Title, r.Split, r.Windows, r.Window)
	fmt.Fprintf(&b, "%-22s %5s %5s %5s %9s %7s %7s %9s %9s\n", "device type", "TP", "FP", "FN", "precision", "recall", "F", "count err", "response")
	for _, d := range r.PerDevice {
		fmt.Fprintf(&b, "%-22s %5d %5d %5d %9.3f %7.3f %7.3f %9s %9s\n", d.Device, d.TP, d.FP, d.FN, d.Precision, d.Recall, d.F,
			pctOrDash(float64(d.CountError)), secsOrDash(float64(d.ResponseSeconds)))
	}
	return b.String()
}

func pctOrDash(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", 100*x)
}

func secsOrDash(x float64) string {
	switch {
	case math.IsNaN(x):
		return "-"
	case math.IsInf(x, 1):
		return "never"
	}
	return fmt.Sprintf("%.0f s", x)
}

// HTML renders a self-contained report.html: no scripts, no external files.
func (r *Report) HTML() ([]byte, error) {
	var b bytes.Buffer
	if err := reportTmpl.Execute(&b, map[string]any{
		"R":     r,
		"Bars":  template.HTML(prBarsSVG(r.PerDevice)),
		"Count": template.HTML(countSVG(r.CountByN)),
	}); err != nil {
		return nil, fmt.Errorf("render report.html: %w", err)
	}
	return b.Bytes(), nil
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{"pct": pctOrDash, "secs": secsOrDash,
	"f": func(x Ratio) float64 { return float64(x) }}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.R.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
svg text{font-size:11px}
</style></head><body>
<h1>{{.R.Title}}</h1>
<p>{{.R.Split}}. {{.R.Windows}} windows of {{.R.Window}}{{if .R.TrainSeconds}}; training took {{printf "%.0f" .R.TrainSeconds}} s{{end}}.</p>
<h2>Detection per device type and window</h2>
<p>A window counts for a type when the type's detector fires on it (precision) and when the type's traffic is in it (recall). Blue: precision, orange: recall.</p>
{{.Bars}}
<table><tr><th>device type</th><th>TP</th><th>FP</th><th>FN</th><th>TN</th><th>precision</th><th>recall</th><th>F-score</th><th>count error</th><th>response (median)</th><th>response (max)</th></tr>
{{range .R.PerDevice}}<tr><td>{{.Device}}</td><td>{{.TP}}</td><td>{{.FP}}</td><td>{{.FN}}</td><td>{{.TN}}</td><td>{{printf "%.3f" .Precision}}</td><td>{{printf "%.3f" .Recall}}</td><td>{{printf "%.3f" .F}}</td><td>{{pct (f .CountError)}}</td><td>{{secs (f .ResponseSeconds)}}</td><td>{{secs (f .ResponseMax)}}</td></tr>
{{end}}</table>
{{if .R.CountByN}}<h2>Count error by number of devices</h2>
<p>Mean |estimate - n| / n over device types, n devices of one type superposed behind one address.</p>
{{.Count}}{{end}}
{{range .R.Notes}}<p>{{.}}</p>{{end}}
</body></html>
`))

func prBarsSVG(ds []DeviceResult) string {
	if len(ds) == 0 {
		return "<p>no data</p>"
	}
	const rowH, left, width = 24, 170, 500
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, left+width+70, len(ds)*rowH+10)
	for i, d := range ds {
		y := i * rowH
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, y+15, template.HTMLEscapeString(d.Device))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="9" fill="#4a78c2"><title>precision %.3f</title></rect>`, left, y+3, width*d.Precision, d.Precision)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="9" fill="#e08a2c"><title>recall %.3f</title></rect>`, left, y+12, width*d.Recall, d.Recall)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f / %.2f</text>`, left+width*max(d.Precision, d.Recall)+4, y+15, d.Precision, d.Recall)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func countSVG(ps []CountPoint) string {
	if len(ps) == 0 {
		return ""
	}
	const w, h, pad = 520, 240, 40
	maxN, maxErr := 1, 0.05
	for _, p := range ps {
		maxN = max(maxN, p.N)
		maxErr = max(maxErr, p.MeanError)
	}
	x := func(n int) float64 { return pad + float64(n)/float64(maxN)*float64(w-2*pad) }
	y := func(e float64) float64 { return float64(h-pad) - e/maxErr*float64(h-2*pad) }
	var pts strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&pts, "%.1f,%.1f ", x(p.N), y(p.MeanError))
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">
<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>
<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c24a4a" stroke-dasharray="4"/><text x="%d" y="%.1f" fill="#c24a4a">5 %% (target)</text>
<polyline fill="none" stroke="#4a78c2" stroke-width="2" points="%s"/>
<text x="%d" y="14">mean count error (max %.1f %%)</text><text x="%d" y="%d">n = 0</text><text x="%d" y="%d" text-anchor="end">n = %d</text></svg>`,
		w, h, pad, h-pad, w-pad, h-pad, pad, pad, pad, h-pad,
		pad, y(0.05), w-pad, y(0.05), w-pad-70, y(0.05)-4,
		pts.String(), pad, 100*maxErr, pad, h-pad+16, w-pad, h-pad+16, maxN)
}
