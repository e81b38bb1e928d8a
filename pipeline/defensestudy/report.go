package defensestudy

import (
	"bytes"
	"fmt"
	"html/template"
	"slices"
)

// Pareto marks the rows a defender would choose among for each attack
// and view: no other defence against that attack costs at most as many
// KB/s and leaves the attacker at most as accurate, one of the two
// strictly less.
func Pareto(rows []Row) []bool {
	front := make([]bool, len(rows))
	for i, r := range rows {
		front[i] = true
		for j, o := range rows {
			if i == j || o.Attack != r.Attack || o.View != r.View {
				continue
			}
			if o.KBps <= r.KBps && o.SessionAccuracy <= r.SessionAccuracy && (o.KBps < r.KBps || o.SessionAccuracy < r.SessionAccuracy) {
				front[i] = false
				break
			}
		}
	}
	return front
}

// plot is one attack's accuracy against overhead, in SVG coordinates.
type plot struct {
	Attack string
	Points []point
	Front  string // polyline through the Pareto front, cheapest first
	MaxKB  float64
}

type point struct {
	X, Y     float64
	Defense  string
	Accuracy float64
	KBps     float64
	Front    bool
}

const (
	plotW, plotH = 480.0, 240.0
	plotPad      = 40.0
)

// HTML is the study's report: every row, accuracy against overhead per
// attack with its Pareto front, and each device's session accuracy under
// each defence. It needs no script: what the page shows is in the markup.
func HTML(rows []Row) ([]byte, error) {
	front := Pareto(rows)
	var attacks, devices, views []string
	for _, r := range rows {
		if !slices.Contains(views, r.View) {
			views = append(views, r.View)
		}
	}
	// A plot per attack, and per view where the rows hold several.
	key := func(r Row) string {
		if len(views) > 1 {
			return r.Attack + " (" + r.View + ")"
		}
		return r.Attack
	}
	for _, r := range rows {
		if !slices.Contains(attacks, key(r)) {
			attacks = append(attacks, key(r))
		}
		for d := range r.PerDevice {
			if !slices.Contains(devices, d) {
				devices = append(devices, d)
			}
		}
	}
	slices.Sort(devices)
	var plots []plot
	for _, a := range attacks {
		p := plot{Attack: a, MaxKB: 1}
		for _, r := range rows {
			if key(r) == a {
				p.MaxKB = max(p.MaxKB, r.KBps)
			}
		}
		var fr []point
		for i, r := range rows {
			if key(r) != a {
				continue
			}
			pt := point{X: plotPad + r.KBps/p.MaxKB*(plotW-2*plotPad), Y: plotH - plotPad - r.SessionAccuracy*(plotH-2*plotPad),
				Defense: r.Defense, Accuracy: r.SessionAccuracy, KBps: r.KBps, Front: front[i]}
			p.Points = append(p.Points, pt)
			if pt.Front {
				fr = append(fr, pt)
			}
		}
		slices.SortFunc(fr, func(x, y point) int {
			if x.X < y.X {
				return -1
			}
			if x.X > y.X {
				return 1
			}
			return 0
		})
		for _, pt := range fr {
			p.Front += fmt.Sprintf("%.1f,%.1f ", pt.X, pt.Y)
		}
		plots = append(plots, p)
	}
	type deviceRow struct {
		Defense, Attack, View string
		Acc                   []string
	}
	var byDevice []deviceRow
	for _, r := range rows {
		dr := deviceRow{Defense: r.Defense, Attack: r.Attack, View: r.View}
		for _, d := range devices {
			if v, ok := r.PerDevice[d]; ok {
				dr.Acc = append(dr.Acc, fmt.Sprintf("%.1f %%", 100*v))
			} else {
				dr.Acc = append(dr.Acc, "-")
			}
		}
		byDevice = append(byDevice, dr)
	}
	var b bytes.Buffer
	err := reportPage.Execute(&b, map[string]any{"Rows": rows, "Front": front, "Plots": plots, "Devices": devices, "ByDevice": byDevice,
		"W": plotW, "H": plotH, "Pad": plotPad})
	if err != nil {
		return nil, fmt.Errorf("defence study report: %w", err)
	}
	return b.Bytes(), nil
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": func(v float64) string { return fmt.Sprintf("%.1f %%", 100*v) },
	"f3":  func(v float64) string { return fmt.Sprintf("%.3f", v) },
	"f1":  func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"opt": func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f", *v)
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>HomeMole defence study</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}tr.front td{font-weight:bold}svg{border:1px solid #ccc;margin:0 1em 1em 0}td{white-space:nowrap}</style></head>
<body>
<h1>Defences against the attacks</h1>
<p>Each attack is trained on defended training captures and tested on defended held-out captures (grouped folds).
Bold rows and filled points are the Pareto front per attack: no other defence costs fewer KB/s per home and leaves the attacker less accurate.</p>
<h2>Accuracy against overhead</h2>
{{range .Plots}}<svg class="plot" data-attack="{{.Attack}}" width="{{$.W}}" height="{{$.H}}" viewBox="0 0 {{$.W}} {{$.H}}">
<text x="8" y="16" font-size="11">{{.Attack}}: session accuracy (0-100 %) against KB/s per home (0-{{f1 .MaxKB}})</text>
<line x1="{{$.Pad}}" y1="{{$.Pad}}" x2="{{$.Pad}}" y2="200" stroke="black"/><line x1="{{$.Pad}}" y1="200" x2="440" y2="200" stroke="black"/>
<polyline class="front" points="{{.Front}}" fill="none" stroke="#c00"/>
{{range .Points}}<circle class="point" data-defense="{{.Defense}}" cx="{{f1 .X}}" cy="{{f1 .Y}}" r="4" fill="{{if .Front}}#c00{{else}}white{{end}}" stroke="#c00"><title>{{.Defense}}: {{pct .Accuracy}} at {{f3 .KBps}} KB/s</title></circle>
{{end}}</svg>
{{end}}
<h2>Every defence and attack</h2>
<table><tr><th>defence</th><th>attack</th><th>view</th><th>session</th><th>type</th><th>per packet</th><th>detection F1</th><th>activity F1</th><th>bytes +</th><th>packets +</th><th>KB/s per home</th><th>latency mean ms</th><th>latency p99 ms</th><th>sessions</th></tr>
{{range $i, $r := .Rows}}<tr class="row{{if index $.Front $i}} front{{end}}" data-defense="{{$r.Defense}}" data-attack="{{$r.Attack}}"><td>{{$r.Defense}}</td><td>{{$r.Attack}}</td><td>{{$r.View}}</td><td>{{pct $r.SessionAccuracy}}</td><td>{{pct $r.TypeAccuracy}}</td><td>{{pct $r.PerPacketAccuracy}}</td><td>{{f3 $r.DetectionF1}}</td><td>{{opt $r.ActivityF1}}</td><td>{{pct $r.ByteOverhead}}</td><td>{{pct $r.PacketOverhead}}</td><td>{{f3 $r.KBps}}</td><td>{{f1 $r.LatencyMsMean}}</td><td>{{f1 $r.LatencyMsP99}}</td><td>{{$r.Sessions}}</td></tr>
{{end}}</table>
<h2>Per-device session accuracy</h2>
<table><tr><th>defence</th><th>attack</th><th>view</th>{{range .Devices}}<th>{{.}}</th>{{end}}</tr>
{{range .ByDevice}}<tr class="device-row" data-defense="{{.Defense}}" data-attack="{{.Attack}}"><td>{{.Defense}}</td><td>{{.Attack}}</td><td>{{.View}}</td>{{range .Acc}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
</body></html>
`))
