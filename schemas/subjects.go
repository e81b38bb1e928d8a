package schemas

import (
	"fmt"
	"strings"
)

// JetStream streams and their subjects, as DESIGN.md fixes them.
const (
	StreamPackets = "PACKETS" // hm.pkt.<campaign>.<home>.<tap>
	StreamLabeled = "LABELED" // hm.lbl.<campaign>.<home>.<view>
)

// PacketSubject is where a capture agent publishes one tap's batches.
func PacketSubject(campaign, home, tap string) string {
	return "hm.pkt." + campaign + "." + home + "." + tap
}

// LabeledSubject is where a labeler publishes one view's labeled batches.
func LabeledSubject(campaign, home, view string) string {
	return "hm.lbl." + campaign + "." + home + "." + view
}

// ValidateToken checks a campaign, home, tap or view name: it becomes a
// subject token and part of object names, so it may hold only letters,
// digits, '-' and '_'.
func ValidateToken(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty: give it a name of letters, digits, '-' or '_'", what)
	}
	if len(s) > 64 {
		return fmt.Errorf("%s %q is longer than 64 characters", what, s)
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}); i >= 0 {
		return fmt.Errorf("%s %q: character %q is not allowed (use letters, digits, '-' or '_')", what, s, s[i])
	}
	return nil
}
