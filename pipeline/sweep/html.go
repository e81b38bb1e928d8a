package sweep

import (
	"bytes"
	"fmt"
	"html/template"

	"github.com/homemole/homemole/pipeline/evaluate"
)

// Best is the configuration with the highest mean per-packet accuracy of
// each view (in order of first appearance; "" for a dataset: sweep).
func (r *Result) Best() []Summary {
	var out []Summary
	at := map[string]int{}
	for _, c := range r.Configurations {
		k, ok := at[c.Config.View]
		switch {
		case !ok:
			at[c.Config.View] = len(out)
			out = append(out, c)
		case c.Mean.Accuracy > out[k].Mean.Accuracy:
			out[k] = c
		}
	}
	return out
}

var page = template.Must(template.New("sweep").Funcs(template.FuncMap{
	"pct": func(x float64) string { return fmt.Sprintf("%.1f", 100*x) },
	"f3":  func(x float64) string { return fmt.Sprintf("%.3f", x) },
	"f0":  func(x float64) string { return fmt.Sprintf("%.0f", x) },
	"inc": func(i int) int { return i + 1 },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>HomeMole sweep</title>
<style>body{font-family:sans-serif;max-width:80em;margin:2em auto}td,th{padding:.2em .6em;text-align:right}
td.l,th.l{text-align:left}th{cursor:pointer;background:#eee}tr:nth-child(even){background:#f7f7f7}</style></head><body>
<h1>Sweep: {{len .R.Configurations}} configurations</h1>
<p>Each configuration is cross-validated; figures are the mean ± standard deviation over its folds. Accuracy is per
packet over held-out packets; session accuracy is the share of held-out capture sessions whose majority label is
their device (device types: identical hardware counted as one). Click a column to sort.</p>
<h2>Best configuration per view</h2>
<table id="best"><tr><th class="l">view</th><th class="l">configuration</th><th>accuracy %</th><th>macro F1</th><th>session %</th></tr>
{{range .Best}}<tr><td class="l">{{if .Config.View}}{{.Config.View}}{{else}}(dataset){{end}}</td><td class="l">{{.Label}}</td>
<td>{{pct .Mean.Accuracy}}</td><td>{{f3 .Mean.MacroF1}}</td><td>{{pct .Mean.SessionAccuracy}}</td></tr>{{end}}
</table>
<h2>Mean per-packet accuracy and session accuracy per configuration</h2>
{{.Chart}}
<h2>All configurations</h2>
<table id="configs"><thead><tr><th>#</th><th class="l">model</th><th class="l">view</th><th>window</th><th class="l">kind</th>
<th class="l">model flags</th><th>seed</th><th class="l">cv</th><th>accuracy %</th><th>± </th><th>macro F1</th><th>±</th>
<th>session %</th><th>types %</th><th>train s</th><th class="l">hash</th></tr></thead><tbody>
{{range $i, $c := .R.Configurations}}<tr class="config" data-hash="{{.Hash}}"><td>{{inc $i}}</td><td class="l">{{.Config.Model}}</td>
<td class="l">{{.Config.View}}</td><td>{{.Config.Window}}</td><td class="l">{{.Config.Kind}}</td>
<td class="l">{{range $k, $v := .Config.ModelFlags}}{{$k}}={{$v}} {{end}}</td><td>{{.Config.Seed}}</td>
<td class="l">{{.Config.CVMode}} ×{{len .Folds}}</td><td>{{pct .Mean.Accuracy}}</td><td>{{pct .Spread.Accuracy}}</td>
<td>{{f3 .Mean.MacroF1}}</td><td>{{f3 .Spread.MacroF1}}</td><td>{{pct .Mean.SessionAccuracy}}</td>
<td>{{pct .Mean.SessionAccuracyTypes}}</td><td>{{f0 .Mean.TrainSeconds}}</td><td class="l">{{.Hash}}</td></tr>
{{end}}</tbody></table>
<script>
// Sorting by a column: numbers as numbers, the rest as text; a second
// click reverses.
(function () {
  var table = document.getElementById("configs");
  var heads = table.tHead.rows[0].cells;
  function sortBy(col, down) {
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return down ? -c : c;
    });
    rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
    table.setAttribute("data-sorted", col + (down ? " down" : " up"));
  }
  for (var i = 0; i < heads.length; i++) {
    (function (col) {
      heads[col].addEventListener("click", function () {
        sortBy(col, table.getAttribute("data-sorted") !== col + " down");
      });
    })(i);
  }
  sortBy(8, true); // best accuracy first
})();
</script>
</body></html>`))

// HTML renders sweep.html.
func (r *Result) HTML() ([]byte, error) {
	var xs []string
	acc := evaluate.Series{Name: "per-packet accuracy", Color: "#4a78c2"}
	sess := evaluate.Series{Name: "session accuracy", Color: "#c24a4a"}
	for i, c := range r.Configurations {
		xs = append(xs, fmt.Sprint(i+1))
		acc.Values = append(acc.Values, c.Mean.Accuracy)
		sess.Values = append(sess.Values, c.Mean.SessionAccuracy)
	}
	var b bytes.Buffer
	err := page.Execute(&b, map[string]any{
		"R": r, "Best": r.Best(),
		"Chart": template.HTML(evaluate.LineChart("configuration (# in the table)", xs, []evaluate.Series{acc, sess})),
	})
	return b.Bytes(), err
}
