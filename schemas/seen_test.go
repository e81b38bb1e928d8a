package schemas

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSeenRoundTripAndVersion(t *testing.T) {
	if got := SeenSubject("spring", "home-1"); got != "hm.seen.spring.home-1" {
		t.Errorf("SeenSubject = %q", got)
	}
	in := Seen{Version: SeenVersion, Campaign: "spring", Home: "home-1",
		SeenWindow: SeenWindow{StartNs: 1, EndNs: 2, Detections: []SeenDetection{{Device: "camera", Count: 3, Score: 0.97}}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"start_ns":1,"end_ns":2,"detections":[{"device":"camera","count":3,"score":0.97}]`) {
		t.Errorf("wire form %s", b)
	}
	out, err := DecodeSeen(b)
	if err != nil || out.Detections[0] != in.Detections[0] || out.Home != "home-1" {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	if _, err := DecodeSeen([]byte(`{"version":2}`)); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("version 2: %v, want a refusal that says to upgrade", err)
	}
	if _, err := DecodeSeen([]byte(`{`)); err == nil {
		t.Error("truncated JSON decoded")
	}
}
