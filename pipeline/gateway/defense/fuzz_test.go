package defense

import (
	"testing"
)

// FuzzParseSpec: any text is refused or parsed into parameters in their
// ranges, and a parsed spec parses again from its String to the same spec.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"pad:mtu+cbr:20", "pad:128", "stp:3.5+mimic:Aria", "vpn-pad", "none", "cbr:1e5", "pad:0", "+"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseSpec(text)
		if err != nil {
			return
		}
		if s.Pad < 0 || s.Pad > MTU || s.CBR < 0 || s.CBR > maxRate || s.STP < 0 || s.STP > maxRate {
			t.Fatalf("%q parsed to parameters out of range: %+v", text, s)
		}
		again, err := ParseSpec(s.String())
		if err != nil {
			t.Fatalf("%q parsed, its String %q does not: %v", text, s.String(), err)
		}
		if again != s && !(again.IsZero() && s.IsZero()) {
			t.Fatalf("%q: %+v, again from %q: %+v", text, s, s.String(), again)
		}
	})
}
