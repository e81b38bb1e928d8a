package window

import (
	"strings"

	"github.com/homemole/homemole/pipeline/store"
)

// Part records what one session contributed; the manifest is assembled from parts.
type Part struct {
	Home    string `json:"home"`
	View    string `json:"view"`
	Session string `json:"session"`
	Source  string `json:"source"`
	Packets int    `json:"packets"`
	// Unlabeled packets belong to no inventory device (the router, guests,
	// multicast from unknown hosts); Background packets belong to devices
	// this kind of dataset leaves out (non-IoT devices in ind windows).
	Unlabeled  int                `json:"unlabeled_packets"`
	Background int                `json:"background_packets"`
	Windows    int                `json:"windows"`
	PerDevice  map[string]int     `json:"windows_per_device"`
	Objects    []store.ObjectInfo `json:"objects"`
	Offsets    [2]uint64          `json:"offsets"` // lineage: first and last packet offset of the source
	// FirstTs is the capture timestamp of the session's first packet, ns
	// since the epoch (0: none, or a part written before it was kept):
	// what orders a home's sessions in time (cv --mode time).
	FirstTs int64 `json:"first_ts_ns,omitempty"`
	// CapScores holds, per device, the smallest CapScores of the session's
	// windows, ascending, at most Spec.Cap of them: the dataset's Cap
	// windows of smallest score are among the union of the sessions' Cap
	// smallest, so the manifest can pick them exactly without rereading a
	// window. Empty when the spec has no cap.
	CapScores map[string][]uint64 `json:"cap_scores,omitempty"`
	// CutShort marks a session closed by the idle timeout before its final
	// batch came: its producer died, and the part holds what came.
	CutShort bool `json:"cut_short,omitempty"`
}

// PartSuffix names the per-session part records.
const PartSuffix = "_part.json"

// GroupOf is the unit cross-validation keeps on one side of a split: a
// home's capture session, whatever tap saw it. "lan-session-01" and
// "wan-session-01" are the same traffic seen twice, so they share a group.
func GroupOf(home, session string) string {
	if i := strings.IndexByte(session, '-'); i >= 0 {
		session = session[i+1:]
	}
	return home + "/" + session
}
