package schemas

import (
	"encoding/json"
	"fmt"
)

// SeenSubject is where the online detector publishes what it found in one
// home: hm.seen.<campaign>.<home>. The stream SEEN (pipeline/bus) keeps
// them, one message per window under an id of its home and start.
func SeenSubject(campaign, home string) string {
	return "hm.seen." + campaign + "." + home
}

// SeenVersion is the version of a Seen message; a consumer refuses others.
const SeenVersion = 1

// Seen is one time window's detections in one home, as JSON. The same
// window layout is what `homemole detect --json` writes, one per window.
type Seen struct {
	Version  int    `json:"version"`
	Campaign string `json:"campaign,omitempty"`
	Home     string `json:"home,omitempty"`
	SeenWindow
}

// SeenWindow is a time window [StartNs, EndNs) and the device types
// detected in it.
type SeenWindow struct {
	StartNs    int64           `json:"start_ns"`
	EndNs      int64           `json:"end_ns"`
	Detections []SeenDetection `json:"detections"`
	// Packets is how many packets the window held, matched by a sequence
	// profile or not; Confidence the share of them the model's sequence
	// profiles explain (matches times SP length over packets). Unknown says the window held traffic that
	// no known type explains, by the model's calibrated rule: a device the
	// model was never trained on. Models without a rule never set it.
	Packets    uint64  `json:"packets,omitempty"`
	Confidence float64 `json:"confidence,omitempty"`
	Unknown    bool    `json:"unknown,omitempty"`
	// Method is "hosts" where the LAN host counter judged the window
	// (pipeline/homecount): each detection's count is hosts, Hosts the
	// hosts active in it, the home's infrastructure but, and Unknown says
	// one of them is a unit of no type the model knows (a phone, a new
	// device, or one whose telling packets have not come yet); empty for
	// the sequence-profile detector.
	Method string `json:"method,omitempty"`
	Hosts  int    `json:"hosts,omitempty"`
}

// SeenDetection is one device type with its estimated number behind the
// address and the detector's probability that it is there.
type SeenDetection struct {
	Device string  `json:"device"`
	Count  int     `json:"count"`
	Score  float64 `json:"score"`
}

// DecodeSeen reads a Seen message and refuses versions it does not know.
func DecodeSeen(b []byte) (Seen, error) {
	var s Seen
	if err := json.Unmarshal(b, &s); err != nil {
		return Seen{}, fmt.Errorf("seen message: %w", err)
	}
	if s.Version != SeenVersion {
		return Seen{}, fmt.Errorf("seen message version %d, this build reads version %d: upgrade the consumer", s.Version, SeenVersion)
	}
	return s, nil
}
