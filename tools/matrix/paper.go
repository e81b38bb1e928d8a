package main

import (
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// The HomeMole paper's results (seeds/004 and its extract seeds/002),
// overall per-packet accuracy in per cent, 5-fold cross-validation on
// random splits of windows of 100 packets:
//   - pure IoT (Dataset-Ind): Table 4, column "average", and per device;
//   - noisy (Dataset-Noise): Section 4.3 text for Figures 9 (NAPT) and 10
//     (VPN); per-device figures are only in the figures' bars, which the
//     text does not give, except the VPN BLSTM plugs (Section 4.3.2).
var paperOverall = map[string]map[string]map[string]float64{
	"napt": {
		schemas.KindInd:   {"rf": 92.2, "lstm": 97.3, "blstm": 99.2},
		schemas.KindNoise: {"rf": 84.5, "lstm": 87.1, "blstm": 92.1},
	},
	"vpn": {
		schemas.KindInd:   {"rf": 83.2, "lstm": 92.4, "blstm": 97.7},
		schemas.KindNoise: {"rf": 67.6, "lstm": 74.1, "blstm": 81.0},
	},
}

// paperTable4 is Table 4 per device, in homegen.PaperIoT's order (the
// table's column order): echo dot, google home, tmall assistant, xiaomi
// hub, 360 cam, tplink plug, orvibo plug, mitu story, xiaobai camera,
// broadlink plug.
var paperTable4 = map[string]map[string][10]float64{
	"napt": {
		"rf":    {89.0, 85.9, 86.9, 89.6, 99.0, 99.9, 99.9, 93.3, 98.5, 99.3},
		"lstm":  {98.5, 91.6, 93.9, 98.6, 99.9, 99.9, 99.9, 98.7, 99.9, 99.9},
		"blstm": {97.0, 99.2, 99.8, 99.9, 99.9, 99.9, 99.9, 99.3, 99.9, 99.9},
	},
	"vpn": {
		"rf":    {76.1, 81.2, 74.7, 94.0, 83.2, 89.1, 93.1, 87.5, 90.5, 99.0},
		"lstm":  {89.7, 89.7, 75.4, 96.1, 95.9, 92.2, 95.5, 96.8, 94.7, 95.7},
		"blstm": {96.6, 96.8, 94.7, 99.4, 98.5, 98.0, 99.5, 98.9, 99.7, 96.7},
	},
}

// paperNoisyVPNPlugs is Section 4.3.2's BLSTM accuracy on the smart plugs
// in the noisy VPN setting.
var paperNoisyVPNPlugs = map[string]float64{"orvibo-plug": 12.6, "tplink-plug": 20.4, "broadlink-plug": 15.9}

// paperFigure is the paper's overall accuracy for a cell and model, where
// it is printed, and its per-device figures when it gives them.
func paperFigure(view, kind, model string) (float64, string, map[string]float64) {
	overall := paperOverall[view][kind][model]
	per := map[string]float64{}
	var src string
	switch {
	case kind == schemas.KindInd:
		src = "Table 4 (pure IoT, Dataset-Ind)"
		row := paperTable4[view][model]
		for i, d := range homegen.PaperIoT {
			per[d] = row[i]
		}
	case view == "napt":
		src = "Sec. 4.3, Fig. 9 (noisy, Dataset-Noise)"
	default:
		src = "Sec. 4.3, Fig. 10 (noisy, Dataset-Noise)"
		if model == "blstm" {
			for d, v := range paperNoisyVPNPlugs {
				per[d] = v
			}
		}
	}
	if len(per) == 0 {
		per = nil
	}
	return overall, src, per
}
