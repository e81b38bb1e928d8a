package train

import (
	"fmt"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// CVTime trains on each home's earlier capture sessions and judges the
// later ones, ordered by their first packets' timestamps (the part records
// keep them; a dataset built before they did is ordered by IoT Sentinel's
// sequence numbers, Setup-X-N-STA by N, which are not the order in time:
// see campaign.SplitLater): one fold, as a model is trained once and then
// meets the captures of later days. With k folds the later 1/k is judged, so a model trains on
// as many sessions as in a grouped k-fold cross-validation, and the two
// differ only in which sessions are held out.
const CVTime = "time"

// timeFolds is the one fold of CVTime: per home (in an IoT Sentinel
// dataset, per device), the later 1/k of its sessions is held out.
func timeFolds(m *dataset.Manifest, k int) ([]fold, error) {
	if k < 2 {
		return nil, fmt.Errorf("time split of %s/%s: %d folds, want 2 or more (the later 1/k of each home's sessions is judged)", m.Dataset, m.Version, k)
	}
	late, err := LateGroups(m, k)
	if err != nil {
		return nil, err
	}
	return []fold{{
		train:      func(w *schemas.Window) bool { return !late[w.Group] },
		test:       func(w *schemas.Window) bool { return late[w.Group] },
		testGroups: len(late),
	}}, nil
}

// LateGroups is the held-out side of CVTime: the later 1/k of each
// home's capture sessions, by group.
func LateGroups(m *dataset.Manifest, k int) (map[string]bool, error) {
	byHome := map[string][]string{}
	for _, g := range m.Groups {
		home, session, ok := strings.Cut(g, "/")
		if !ok {
			return nil, fmt.Errorf("time split of %s/%s: group %q is not home/session", m.Dataset, m.Version, g)
		}
		byHome[home] = append(byHome[home], session)
	}
	// A group's sessions (its LAN and WAN views) began together: the
	// earliest first packet of its parts dates it.
	began := map[string]int64{}
	for _, p := range m.Parts {
		if p.FirstTs == 0 {
			continue
		}
		g := window.GroupOf(p.Home, p.Session)
		if t, ok := began[g]; !ok || p.FirstTs < t {
			began[g] = p.FirstTs
		}
	}
	late := map[string]bool{}
	numbered := 0
	for home, sessions := range byHome {
		at := func(session string) (int64, bool) {
			t, ok := began[home+"/"+session]
			return t, ok
		}
		_, l := campaign.SplitLater(sessions, k, at)
		for _, s := range l {
			late[home+"/"+s] = true
		}
		for _, s := range sessions {
			if campaign.CaptureSequence(s) >= 0 {
				numbered++
			}
		}
	}
	if numbered == 0 && len(began) == 0 {
		return nil, fmt.Errorf("time split of %s/%s: no part records its first packet's time (a dataset built before they did: build it again) and no session name carries a sequence number (Setup-X-N-STA): the captures' order in time is unknown; use --mode grouped", m.Dataset, m.Version)
	}
	if len(late) == 0 {
		return nil, fmt.Errorf("time split of %s/%s: every home has a single session, nothing is later than another", m.Dataset, m.Version)
	}
	return late, nil
}
