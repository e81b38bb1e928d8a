package schemas

import (
	"errors"
	"fmt"
	"strings"
)

// JetStream streams and their subjects, as DESIGN.md fixes them.
const (
	StreamPackets = "PACKETS" // hm.pkt.<campaign>.<home>.<tap>
	StreamLabeled = "LABELED" // hm.lbl.<campaign>.<home>.<view>
	// StreamDeadLetter keeps the messages consumers could never process,
	// with why, on hm.dlq.<the original subject without "hm.">.
	StreamDeadLetter = "DLQ"
)

// DeadLetterSubject is where a message that arrived on subject is kept when
// no consumer can ever process it.
func DeadLetterSubject(subject string) string {
	return "hm.dlq." + strings.TrimPrefix(subject, "hm.")
}

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
	if i := strings.IndexFunc(s, notTokenRune); i >= 0 {
		return fmt.Errorf("%s %q: character %q is not allowed (use letters, digits, '-' or '_')", what, s, s[i])
	}
	return nil
}

// Limits of the names a batch carries besides its subject tokens. A
// session name becomes one segment of object keys (S3 allows 1,024 bytes
// for a whole key); a source's last part is a capture file's base name or a
// live tap's interface and start time.
const (
	MaxSessionLen    = 200
	MaxSourceNameLen = 255
)

// ValidateSession checks a capture session name: letters, digits, '-' and
// '_' only (campaign.SessionName makes them so), at most MaxSessionLen. It
// becomes a folder of the dataset's object keys, so '/', '.' and anything
// else that could climb out of that folder are refused.
func ValidateSession(s string) error {
	if s == "" {
		return fmt.Errorf("session name is empty")
	}
	if len(s) > MaxSessionLen {
		return fmt.Errorf("session name %.40q... is %d characters long; at most %d are allowed", s, len(s), MaxSessionLen)
	}
	if i := strings.IndexFunc(s, notTokenRune); i >= 0 {
		return fmt.Errorf("session name %q: character %q is not allowed (letters, digits, '-' and '_' only)", s, s[i])
	}
	return nil
}

// ValidateSource checks a batch's source, "<campaign>/<home>/<tap>/<name>"
// (what the capture agent writes): three tokens, then a name of letters,
// digits and '-', '_', '.', '@', '+', at most MaxSourceNameLen long,
// neither starting with '.' nor holding "..". It returns the three tokens.
func ValidateSource(s string) (campaign, home, tap string, err error) {
	parts := strings.Split(s, "/")
	if len(parts) != 4 {
		return "", "", "", fmt.Errorf("source %q: want <campaign>/<home>/<tap>/<name>", s)
	}
	for i, what := range []string{"source campaign", "source home", "source tap"} {
		if err := ValidateToken(what, parts[i]); err != nil {
			return "", "", "", fmt.Errorf("source %q: %w", s, err)
		}
	}
	if err := ValidateSourceName(parts[3]); err != nil {
		return "", "", "", fmt.Errorf("source %q: %w", s, err)
	}
	return parts[0], parts[1], parts[2], nil
}

// ValidateSourceName checks the last part of a source (see ValidateSource).
func ValidateSourceName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("source name is empty")
	case len(s) > MaxSourceNameLen:
		return fmt.Errorf("source name %.40q... is %d characters long; at most %d are allowed", s, len(s), MaxSourceNameLen)
	case s[0] == '.' || strings.Contains(s, ".."):
		return fmt.Errorf("source name %q may neither start with '.' nor hold \"..\"", s)
	}
	if i := strings.IndexFunc(s, notSourceRune); i >= 0 {
		return fmt.Errorf("source name %q: character %q is not allowed (letters, digits, '-', '_', '.', '@', '+' only)", s, s[i])
	}
	return nil
}

// SourceName maps a capture file's base name (or a live tap's name) into
// the source-name alphabet, replacing every other character by '_' and
// cutting it to MaxSourceNameLen.
func SourceName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 0x80 || notSourceRune(rune(c)) {
			b[i] = '_'
		}
	}
	for len(b) > 0 && b[0] == '.' {
		b[0] = '_'
	}
	out := strings.ReplaceAll(string(b[:min(len(b), MaxSourceNameLen)]), "..", "__")
	if out == "" {
		return "_"
	}
	return out
}

func notTokenRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
}

func notSourceRune(r rune) bool {
	return notTokenRune(r) && r != '.' && r != '@' && r != '+'
}

// ParseSubject splits a batch subject, hm.pkt.<campaign>.<home>.<tap> or
// hm.lbl.<campaign>.<home>.<view>, into the batch kind it carries and its
// three tokens.
func ParseSubject(subject string) (kind byte, campaign, home, tapOrView string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || parts[0] != "hm" {
		return 0, "", "", "", fmt.Errorf("subject %q is not a batch subject (hm.pkt.<campaign>.<home>.<tap> or hm.lbl.<campaign>.<home>.<view>)", subject)
	}
	switch parts[1] {
	case "pkt":
		kind = KindPackets
	case "lbl":
		kind = KindLabeled
	default:
		return 0, "", "", "", fmt.Errorf("subject %q is not a batch subject (hm.pkt.* or hm.lbl.*)", subject)
	}
	for i, what := range []string{"subject campaign", "subject home", "subject tap or view"} {
		if err := ValidateToken(what, parts[2+i]); err != nil {
			return 0, "", "", "", fmt.Errorf("subject %q: %w", subject, err)
		}
	}
	return kind, parts[2], parts[3], parts[4], nil
}

// ErrForged marks a batch whose names disagree with the subject it arrived
// on, or that carries a session or source no agent writes. A home's agent
// may publish only on its own subjects (the server enforces that), so the
// subject is the one name of a batch a consumer can trust.
var ErrForged = errors.New("batch does not match its subject")

// CheckSubject binds the batch to the subject it arrived on: kind,
// campaign, home and tap (packet batches) or view (labeled batches) must be
// the subject's; the session and source must be valid names, and the
// source's campaign and home must be the subject's too (a packet batch's
// source tap as well; a labeled batch keeps its input's source, whose tap
// may be lan or wan). The error wraps ErrForged.
func (b *Batch) CheckSubject(subject string) error {
	kind, campaign, home, tv, err := ParseSubject(subject)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrForged, err)
	}
	field := b.Tap
	if kind == KindLabeled {
		field = b.View
	}
	switch {
	case b.Kind != kind:
		return fmt.Errorf("%w: batch of kind %q on %s", ErrForged, b.Kind, subject)
	case b.Campaign != campaign:
		return fmt.Errorf("%w: batch of campaign %q on %s", ErrForged, b.Campaign, subject)
	case b.Home != home:
		return fmt.Errorf("%w: batch of home %q on %s", ErrForged, b.Home, subject)
	case field != tv:
		return fmt.Errorf("%w: batch of tap or view %q on %s", ErrForged, field, subject)
	}
	if err := ValidateSession(b.Session); err != nil {
		return fmt.Errorf("%w: batch on %s: %w", ErrForged, subject, err)
	}
	sc, sh, st, err := ValidateSource(b.Source)
	if err != nil {
		return fmt.Errorf("%w: batch on %s: %w", ErrForged, subject, err)
	}
	if sc != campaign || sh != home || kind == KindPackets && st != tv {
		return fmt.Errorf("%w: batch on %s names source %q of another campaign, home or tap", ErrForged, subject, b.Source)
	}
	return nil
}
