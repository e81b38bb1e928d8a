package schemas

import (
	"errors"
	"strings"
	"testing"
)

func genuineBatch() *Batch {
	return &Batch{Kind: KindPackets, Campaign: "c", Home: "home-1", Tap: "lan", Source: "c/home-1/lan/session-01.pcap", Session: "lan-session-01"}
}

func TestCheckSubject(t *testing.T) {
	subj := PacketSubject("c", "home-1", "lan")
	if err := genuineBatch().CheckSubject(subj); err != nil {
		t.Fatalf("genuine batch refused: %v", err)
	}
	lbl := genuineBatch()
	lbl.Kind, lbl.Tap, lbl.View, lbl.Source = KindLabeled, "", "napt", "c/home-1/wan/session-01.pcap"
	if err := lbl.CheckSubject(LabeledSubject("c", "home-1", "napt")); err != nil {
		t.Fatalf("genuine labeled batch of the WAN tap refused: %v", err)
	}
	for name, mutate := range map[string]func(b *Batch){
		"other home":           func(b *Batch) { b.Home = "home-2" },
		"other campaign":       func(b *Batch) { b.Campaign = "d" },
		"other tap":            func(b *Batch) { b.Tap = "wan" },
		"labeled kind":         func(b *Batch) { b.Kind = KindLabeled },
		"session climbs":       func(b *Batch) { b.Session = "../../../../victim/v1/lan/home-2/lan-session-01" },
		"session with slash":   func(b *Batch) { b.Session = "lan/x" },
		"session empty":        func(b *Batch) { b.Session = "" },
		"session too long":     func(b *Batch) { b.Session = strings.Repeat("s", MaxSessionLen+1) },
		"source of home-2":     func(b *Batch) { b.Source = "c/home-2/lan/session-01.pcap" },
		"source of other tap":  func(b *Batch) { b.Source = "c/home-1/wan/session-01.pcap" },
		"source climbs":        func(b *Batch) { b.Source = "c/home-1/lan/../../x" },
		"source dot dot name":  func(b *Batch) { b.Source = "c/home-1/lan/.." },
		"source hidden":        func(b *Batch) { b.Source = "c/home-1/lan/.x" },
		"source short":         func(b *Batch) { b.Source = "session-01.pcap" },
		"source control char":  func(b *Batch) { b.Source = "c/home-1/lan/a\nb" },
		"source name too long": func(b *Batch) { b.Source = "c/home-1/lan/" + strings.Repeat("x", MaxSourceNameLen+1) },
	} {
		b := genuineBatch()
		mutate(b)
		if err := b.CheckSubject(subj); !errors.Is(err, ErrForged) {
			t.Errorf("%s: %v, want ErrForged", name, err)
		}
	}
	for _, s := range []string{"hm.pkt.c.home-1", "hm.xyz.c.home-1.lan", "hm.pkt.c.home-1.lan.x", "hm.pkt.c.*.lan", "hm.pkt.c..lan"} {
		if err := genuineBatch().CheckSubject(s); !errors.Is(err, ErrForged) {
			t.Errorf("subject %q: %v, want ErrForged", s, err)
		}
	}
}

func TestSourceName(t *testing.T) {
	for in, want := range map[string]string{
		"session-01.pcap":          "session-01.pcap",
		"eth0@20260101T000000Z":    "eth0@20260101T000000Z",
		"my capture (1).pcapng.gz": "my_capture__1_.pcapng.gz",
		"..":                       "_.",
		".hidden":                  "_hidden",
		"a..b":                     "a__b",
		"":                         "_",
		"café.pcap":                "caf__.pcap",
	} {
		got := SourceName(in)
		if got != want {
			t.Errorf("SourceName(%q) = %q, want %q", in, got, want)
		}
		if err := ValidateSourceName(got); err != nil {
			t.Errorf("SourceName(%q) = %q is not a valid source name: %v", in, got, err)
		}
	}
}

// FuzzCheckSubject: whatever a subject and the names of a batch hold, the
// check never panics, and what it accepts is safe to build keys from.
func FuzzCheckSubject(f *testing.F) {
	f.Add("hm.pkt.c.home-1.lan", "c", "home-1", "lan", "c/home-1/lan/s.pcap", "lan-s", false)
	f.Add("hm.lbl.c.home-1.napt", "c", "home-1", "napt", "c/home-1/wan/s.pcap", "wan-s", true)
	f.Add("hm.pkt.c.home-1.lan", "c", "home-2", "lan", "c/home-1/lan/../../x", "../x", false)
	f.Fuzz(func(t *testing.T, subject, campaign, home, tv, source, session string, labeled bool) {
		b := &Batch{Kind: KindPackets, Campaign: campaign, Home: home, Tap: tv, Source: source, Session: session}
		if labeled {
			b.Kind, b.Tap, b.View = KindLabeled, "", tv
		}
		if err := b.CheckSubject(subject); err != nil {
			return
		}
		for _, s := range []string{b.Campaign, b.Home, tv, b.Session} {
			if s == "" || strings.ContainsAny(s, "/.\\") {
				t.Fatalf("accepted name %q of batch on %q", s, subject)
			}
		}
		if strings.Contains(b.Source, "..") || strings.Count(b.Source, "/") != 3 {
			t.Fatalf("accepted source %q", b.Source)
		}
	})
}
