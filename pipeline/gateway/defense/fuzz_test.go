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

// FuzzApplyFrame puts one fuzzed frame among the handmade packets and
// defends them with every defence that reads frames (padding resizes them,
// shaping and cover traffic parse their direction and flow): any frame is
// kept, never a panic, and the real packets stay in order.
func FuzzApplyFrame(f *testing.F) {
	for _, p := range handmade(f) {
		f.Add(p.Frame)
	}
	f.Add([]byte{})
	spec, err := ParseSpec("pad:128+cbr:10+stp:600")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := handmade(t)
		in[len(data)%len(in)].Frame = data
		in[len(data)%len(in)].Wire = len(data)
		out, _, err := Apply(in, spec, Options{Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		keepsReal(t, in, out)
	})
}
