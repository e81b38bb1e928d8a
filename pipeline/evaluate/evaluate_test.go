package evaluate

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestConfusionFigures(t *testing.T) {
	c := NewConfusion([]string{"plug", "cam", "hub"})
	// plug: 8 right, 2 as cam; cam: 5 right; hub: never in the data.
	for i := 0; i < 8; i++ {
		_ = c.Add(0, 0)
	}
	_ = c.Add(0, 1)
	_ = c.Add(0, 1)
	for i := 0; i < 5; i++ {
		_ = c.Add(1, 1)
	}
	_ = c.Add(-1, 2) // unlabeled: not judged
	if c.Total() != 15 {
		t.Fatalf("total %d", c.Total())
	}
	if got := c.Accuracy(); math.Abs(got-13.0/15) > 1e-12 {
		t.Errorf("accuracy %v", got)
	}
	pc := c.PerClass()
	if len(pc) != 2 {
		t.Fatalf("devices absent from the data must not be reported: %+v", pc)
	}
	if pc[0].Accuracy != 0.8 || pc[0].Precision != 1 || math.Abs(pc[1].Precision-5.0/7) > 1e-12 {
		t.Errorf("per class %+v", pc)
	}
	wantF1 := (2*0.8/(1.8) + 2*(5.0/7)/(1+5.0/7)) / 2
	if math.Abs(c.MacroF1()-wantF1) > 1e-12 {
		t.Errorf("macro F1 %v, want %v", c.MacroF1(), wantF1)
	}
	if err := c.Add(0, 7); err == nil {
		t.Error("out-of-range prediction accepted")
	}
}

func TestVoter(t *testing.T) {
	v := NewVoter([]string{"plug", "cam"})
	v.Add("s1/plug", 0, 0)
	v.Add("s1/plug", 0, 1)
	v.Add("s1/plug", 0, 0)
	v.Add("s2/cam", 1, 0)
	votes := v.Votes()
	if len(votes) != 2 || votes[0].Predicted != "plug" || votes[0].Packets != 3 || votes[1].Predicted != "plug" || votes[1].Truth != "cam" {
		t.Fatalf("%+v", votes)
	}
	if math.Abs(votes[0].Share-2.0/3) > 1e-12 || votes[0].Votes["plug"] != 2 || votes[0].Votes["cam"] != 1 || len(votes[1].Votes) != 1 {
		t.Fatalf("shares and votes: %+v", votes)
	}
	if d, ty := SessionAccuracy(votes); d != 0.5 || ty != 0.5 {
		t.Fatalf("session accuracy %.2f (types %.2f), want 0.5", d, ty)
	}
	// A tie names the lower class, for sessions and hosts alike.
	if Commonest([]int{0, 2, 2, 1}) != 1 || Commonest([]int{0, 0}) != 0 {
		t.Fatal("a tie must go to the lower class")
	}
	// A packet of no device has no say.
	v.Add("s3/gw", -1, 0)
	if len(v.Votes()) != 2 {
		t.Fatal("a packet labeled -1 opened a session")
	}
}

// TestFamilyVote: a capture taken for its sibling is right as a family,
// and its confidence counts every packet naming a member.
func TestFamilyVote(t *testing.T) {
	v := SessionVote{Truth: "HS100", Predicted: "HS110", Packets: 10, Votes: map[string]int{"HS110": 6, "HS100": 3, "Aria": 1}}
	fam, conf := v.Family(map[string]string{"HS100": "HS", "HS110": "HS"})
	if fam != "HS" || math.Abs(conf-0.9) > 1e-12 {
		t.Fatalf("family %s at %.2f, want HS at 0.9", fam, conf)
	}
	if fam, conf := v.Family(nil); fam != "HS110" || math.Abs(conf-0.6) > 1e-12 {
		t.Fatalf("outside any family: %s at %.2f, want HS110 at 0.6", fam, conf)
	}
}

// TestVoterLogProb: three look-alike packets lean to the sibling at 0.55,
// one telling packet is sure of the device. The majority names the
// sibling; summed log-probabilities name the device (log 0.45 * 3 + log
// 0.98 = -2.42 against log 0.55 * 3 + log 0.02 = -5.71). A session whose
// packets lack a row keeps the majority.
func TestVoterLogProb(t *testing.T) {
	labels := []string{"plug-a", "plug-b", "cam"}
	row := func(ps ...float64) []float32 {
		out := make([]float32, len(ps))
		for i, p := range ps {
			out[i] = float32(math.Log(p))
		}
		return out
	}
	v := NewVoter(labels)
	for range 3 {
		v.AddScored("s1/plug-a", 0, 1, row(0.45, 0.55, 1e-6))
	}
	v.AddScored("s1/plug-a", 0, 0, row(0.98, 0.02, 1e-6))
	for range 3 {
		v.AddScored("s2/plug-a", 0, 1, row(0.45, 0.55, 1e-6))
	}
	v.AddScored("s2/plug-a", 0, 0, nil)
	// A model of two classes: the label only the test side has is never named.
	v.AddScored("s3/cam", 2, 0, row(0.6, 0.4))
	votes := v.Votes()
	// Share counts the packets labeled as the verdict, whichever rule gave it.
	if got := votes[0].Share; got != 0.25 {
		t.Errorf("s1's share %v, want 0.25 (1 of 4 packets labeled plug-a)", got)
	}
	// s1 is named right by its log-probabilities, wrong by its majority.
	if got, _ := SessionAccuracy(votes); math.Abs(got-1.0/3) > 1e-9 {
		t.Errorf("session accuracy %v, want 1/3", got)
	}
	if got, _ := MajorityAccuracy(votes); got != 0 {
		t.Errorf("session accuracy by majority %v, want 0", got)
	}
	for i := range votes {
		votes[i].Share, votes[i].Votes = 0, nil
	}
	want := []SessionVote{
		{Group: "s1/plug-a", Truth: "plug-a", Predicted: "plug-a", Packets: 4, Rule: VoteLogProb, Majority: "plug-b"},
		{Group: "s2/plug-a", Truth: "plug-a", Predicted: "plug-b", Packets: 4, Rule: VoteMajority},
		{Group: "s3/cam", Truth: "cam", Predicted: "plug-a", Packets: 1, Rule: VoteLogProb, Majority: "plug-a"},
	}
	if !reflect.DeepEqual(votes, want) {
		t.Fatalf("votes\n%+v\nwant\n%+v", votes, want)
	}
	// Equal sums: the class listed first, whatever the order packets came in.
	tie := NewVoter(labels)
	tie.AddScored("s", 1, 1, row(0.3, 0.7, 1e-6))
	tie.AddScored("s", 1, 0, row(0.7, 0.3, 1e-6))
	if got := tie.Votes()[0]; got.Predicted != "plug-a" {
		t.Errorf("tie named %s, want plug-a (listed first)", got.Predicted)
	}
}

func TestReportRenders(t *testing.T) {
	c := NewConfusion([]string{"plug", "cam<script>"})
	_ = c.Add(0, 0)
	_ = c.Add(1, 0)
	r := &Report{Run: "r1", Dataset: "d/v1", Model: "blstm", Confusion: c, Epochs: []Epoch{{1, 1.2, 0.4, 100}, {2, 0.6, 0.8, 110}},
		Sessions: []SessionVote{{Group: "s1/plug", Truth: "plug", Predicted: "plug", Packets: 2, Rule: VoteLogProb, Majority: "cam<script>"}}}
	r.Fill()
	html, err := r.HTML()
	if err != nil {
		t.Fatal(err)
	}
	s := string(html)
	for _, want := range []string{"<svg", "50.0 %", "cam&lt;script&gt;", "Confusion matrix", "polyline",
		"<td>s1/plug</td><td>2</td><td>plug</td><td>plug</td><td>log-probability</td><td>cam&lt;script&gt;</td>"} {
		if !strings.Contains(s, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	if strings.Contains(s, "cam<script>") {
		t.Error("device names must be escaped")
	}
	js, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil || back["accuracy"].(float64) != 0.5 {
		t.Fatalf("report.json: %v %v", err, back["accuracy"])
	}
	empty := &Report{Confusion: NewConfusion([]string{"a"})}
	empty.Fill()
	if js, err := empty.JSON(); err != nil || !strings.Contains(string(js), `"accuracy": null`) {
		t.Errorf("an empty evaluation must say null, not fail or claim 0: %s %v", js, err)
	}
}
